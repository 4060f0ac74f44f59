"""Sentinel URLs: parsed into sentinels, master and database, handed to kombu in its own form,
refused with a message that names the problem and never the password."""

from __future__ import annotations

import pytest

from comfyq.broker.celery_config import celery_config
from comfyq.errors import BrokerUnavailable
from comfyq.redis_urls import SentinelURL, parse_sentinel_url, redis_location
from comfyq.settings import Settings, SettingsError, environment_settings


def test_a_sentinel_url_names_sentinels_master_database_and_password() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:5/jobs/3")
    assert parsed == SentinelURL(sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379),
                                            ("::1", 5)),
                                 master="jobs", db=3, password="s3cret")


def test_redis_as_broker_through_sentinel_is_kombus_sentinel_transport() -> None:
    config = celery_config(Settings(redis_url="redis+sentinel://:pw@h1:1,h2:2/jobs/4"))
    assert config["broker_url"] == "sentinel://:pw@h1:1/4;sentinel://:pw@h2:2/4"
    assert config["broker_transport_options"]["master_name"] == "jobs"


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel://:pw@h1:26379", "the path must be /master-name"),
    ("redis+sentinel://:pw@h1:port/jobs", "a sentinel's port is not a number"),
    ("redis+sentinel://:pw@h1:1/jobs/zero", "the database after the master name"),
    ("redis+sentinel://:pw@/jobs", "name at least one sentinel"),
])
def test_a_bad_sentinel_url_is_refused_naming_the_problem(url, problem, monkeypatch) -> None:
    monkeypatch.setenv("COMFYQ_REDIS_URL", url)
    with pytest.raises(SettingsError) as caught:
        environment_settings(Settings)
    text = "\n".join(caught.value.problems)
    assert "COMFYQ_REDIS_URL" in text and problem in text
    assert "pw" not in text


def test_locations_and_broker_errors_carry_no_credentials() -> None:
    assert redis_location("redis+sentinel://:pw@h1:1,h2:2/jobs/0") == \
        "redis+sentinel://h1:1,h2:2/jobs/0"
    error = BrokerUnavailable("amqp://guest:pw@rabbit:5672/jobs", ConnectionRefusedError(111))
    assert "pw" not in str(error) and "amqp://rabbit:5672/jobs" in str(error)
