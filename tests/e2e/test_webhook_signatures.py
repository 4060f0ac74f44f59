"""Webhooks as a receiver gets them from the session fleet's callback worker, checked the way
receivers are told to check them: ``standardwebhooks`` against ``comfyq webhooks secret``."""

from __future__ import annotations

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from comfyq import RunStatus
from comfyq.devtools.local_receiver import WebhookReceiver
from comfyq.webhooks.signing import generate_secret
from tests.helpers import request
from tests.ops_helpers import run_comfyq


def test_a_delivered_webhook_verifies_with_the_deployment_secret_and_only_untampered(
        client, fleet_settings):
    printed = run_comfyq(dict(fleet_settings[0]), "webhooks", "secret")
    assert printed.returncode == 0, printed.stderr
    current_secret = printed.stdout.split()[0]
    with WebhookReceiver() as receiver:
        run_id = client.submit(request(webhook=receiver.url))
        assert client.wait(run_id, 60).status == RunStatus.SUCCESS
        assert receiver.wait_for(lambda delivered: len(delivered) == 1, 30)
        [delivery] = receiver.accepted()

    body = Webhook(current_secret).verify(delivery.body, delivery.headers)
    assert body["run_id"] == run_id and body["status"] == "success"

    tampered = delivery.body.replace(b'"success"', b'"failed"')
    assert tampered != delivery.body
    with pytest.raises(WebhookVerificationError):
        Webhook(current_secret).verify(tampered, delivery.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(delivery.body, delivery.headers)
