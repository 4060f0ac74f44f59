"""`comfyq webhooks list | redeliver | secret`, run as a user runs them: a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from comfyq.redis import keys
from comfyq.webhooks.outbox import deliver_due, record_event
from comfyq.webhooks.settings import WebhookSettings
from comfyq.webhooks.signing import generate_secret, signature_headers, verify_delivery
from tests.paths import REPO


def comfyq_webhooks(redis_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("COMFYQ_")}
    environment = {**inherited, "PYTHONPATH": str(REPO), "COMFYQ_REDIS_URL": redis_url, **env}
    return subprocess.run([sys.executable, "-m", "comfyq.cli.webhooks", "webhooks", *args],
                          env=environment, cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.fixture
def client(fresh_redis: redis.Redis) -> redis.Redis:
    """A database of the test's own (the one ``redis_url`` names): no other test's outbox."""
    return fresh_redis


def test_secret_prints_the_generated_deployment_secret_receivers_verify_with(
        client, redis_url) -> None:
    shown = comfyq_webhooks(redis_url, "secret")
    assert shown.returncode == 0, shown.stderr
    secret = shown.stdout.strip()
    assert secret.startswith("whsec_") and secret == client.get(keys.WEBHOOKS_SECRET)
    assert comfyq_webhooks(redis_url, "secret").stdout.strip() == secret  # stable

    body = b'{"run_id":"r","status":"success"}'
    from comfyq.webhooks.secret_store import signing_secrets
    headers = signature_headers(signing_secrets(client, WebhookSettings(webhook_secrets=[])),
                                "msg_x", body)
    assert verify_delivery(secret, headers, body)["status"] == "success"


def test_secret_prints_configured_secrets_current_first(client, redis_url) -> None:
    new, old = generate_secret(), generate_secret()
    shown = comfyq_webhooks(redis_url, "secret", COMFYQ_WEBHOOK_SECRETS=f"{new},{old}")
    assert shown.stdout.split() == [new, old]


def test_a_bad_secret_setting_is_one_clear_line_without_the_value(client, redis_url) -> None:
    shown = comfyq_webhooks(redis_url, "secret", COMFYQ_WEBHOOK_SECRETS="hunter2hunter2")
    assert shown.returncode == 2  # bad input, as every bad COMFYQ_ variable
    assert shown.stderr.count("\n") == 1
    assert "COMFYQ_WEBHOOK_SECRETS: webhook_secrets[0]: must start with 'whsec_'" in shown.stderr
    assert "hunter2" not in shown.stderr


def test_list_and_redeliver_a_dead_letter(client, redis_url) -> None:
    settings = WebhookSettings(webhook_secrets=[generate_secret()], webhook_schedule=[0],
                               webhook_allow_loopback=True)
    url = "http://127.0.0.1:9/hook?token=private"  # nothing listens: the attempt fails
    record_event(client, "wh-cli", url, {"run_id": "wh-cli", "status": "failed"},
                 final=True, status_changed=True, settings=settings)
    deliver_due(client, settings=settings)

    table = comfyq_webhooks(redis_url, "list")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:6] == ["CREATED", "EVENT", "RUN", "SEQ", "STATE", "TRIES"]
    assert "wh-cli" in row and " dead " in row and "Connection refused" in row

    listed = json.loads(comfyq_webhooks(redis_url, "list", "--json", "--state", "dead").stdout)
    assert [(item["run_id"], item["state"], item["attempts"]) for item in listed] == [
        ("wh-cli", "dead", 1)]
    assert listed[0]["url"] == "http://127.0.0.1:9/hook?..."  # the token is not shown
    assert comfyq_webhooks(redis_url, "list", "--state", "delivered").stdout.strip() == \
        "no webhook deliveries"

    again = comfyq_webhooks(redis_url, "redeliver", "wh-cli")
    assert (again.returncode, again.stdout.strip()) == (
        0, "re-queued 1 webhook delivery of run wh-cli")
    listed = json.loads(comfyq_webhooks(redis_url, "list", "--json").stdout)
    assert [item["state"] for item in listed] == ["retrying"]

    none = comfyq_webhooks(redis_url, "redeliver", "wh-cli")
    assert none.returncode == 1
    assert none.stderr.strip() == \
        "comfyq webhooks: error: run 'wh-cli' has no dead-lettered deliveries"


def test_an_unreachable_redis_is_one_clear_line(redis_url) -> None:
    shown = comfyq_webhooks("redis://:pw@127.0.0.1:9/0", "list")
    assert shown.returncode == 1
    assert shown.stderr.startswith("comfyq webhooks: error: Redis at redis://127.0.0.1:9/0 failed")
    assert shown.stderr.count("\n") == 1 and "pw" not in shown.stderr


@pytest.fixture
def redis_url(fresh_redis_url: str) -> str:
    """A database of their own: the session's worker fleet delivers webhooks from database 0,
    and its callback worker would otherwise take these tests' deliveries too."""
    return fresh_redis_url
