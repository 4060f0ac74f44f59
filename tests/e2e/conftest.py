"""The session's worker fleet: a real ``comfyq worker --gpus A100,T4`` on the session server's
database 0, started once for every end-to-end test that needs it; and the counts tests keep in
their reports, listed at the end of every run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import redis


def fleet_environment(redis_url: str, data_dir, broker_url: str | None = None):
    """The environment of a test fleet's workers, and the settings of the tests' client."""
    from comfyq.settings import Settings

    env = {
        "COMFYQ_REDIS_URL": redis_url,
        "COMFYQ_GPU_TYPES": "A100,T4",
        "COMFYQ_DEFAULT_GPU": "T4",
        "COMFYQ_DATA_DIR": str(data_dir),
        "COMFYQ_PROGRESS_INTERVAL_SECONDS": "0",
        "COMFYQ_WEBHOOK_ALLOW_LOOPBACK": "true",
        "COMFYQ_WEBHOOK_SCHEDULE": "0,0.2,0.5,1,1",
        "COMFYQ_WEBHOOK_JITTER": "0",
        **({"COMFYQ_BROKER_URL": broker_url} if broker_url else {}),
    }
    settings = Settings(redis_url=redis_url, broker_url=broker_url, gpu_types=["A100", "T4"],
                        default_gpu="T4", data_dir=data_dir, progress_interval_seconds=0)
    return env, settings


@contextlib.contextmanager
def ready_fleet(env: dict[str, str], log) -> Iterator:
    """A real ``comfyq worker --gpus A100,T4`` (two GPU workers, callbacks, beat), ready."""
    from comfyq.devtools.local_fleet import LocalFleet

    with LocalFleet(["A100", "T4"], env, log_path=str(log)) as running_fleet:
        client = redis.Redis.from_url(env["COMFYQ_REDIS_URL"], decode_responses=True)
        try:
            running_fleet.wait_ready(client, timeout=90)
        except Exception:
            print(log.read_text()[-5000:])
            raise
        yield running_fleet


@pytest.fixture(scope="session")
def fleet_settings(redis_url, tmp_path_factory):
    """Settings shared by the test fleet's workers and the tests' client."""
    return fleet_environment(redis_url, tmp_path_factory.mktemp("comfyq-data"))


@pytest.fixture(scope="session")
def fleet(fleet_settings, tmp_path_factory):
    """The session's fleet (:func:`ready_fleet`)."""
    with ready_fleet(fleet_settings[0], tmp_path_factory.mktemp("logs") / "fleet.log") as running:
        yield running


@pytest.fixture
def client(fleet, fleet_settings, monkeypatch):
    """A comfyq client talking to the test fleet."""
    from comfyq import Client

    env, settings = fleet_settings
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from comfyq.settings import reset_settings
    from comfyq.webhooks.settings import reset_webhook_settings

    reset_settings()
    reset_webhook_settings()
    return Client(settings=settings)


#: The report property that :func:`record_counts` keeps a test's counts under.
COUNTS_PROPERTY = "counts"


@pytest.fixture
def record_counts(record_property):
    """Keep what a test counted (kills landed, runs retried, ...) in its report: listed at the end
    of every run by :func:`pytest_terminal_summary`, and in JUnit XML as a property."""
    def record(**counts: object) -> None:
        record_property(COUNTS_PROPERTY, " ".join(f"{name}={value}"
                                                  for name, value in counts.items()))
    return record


def pytest_terminal_summary(terminalreporter) -> None:
    """A short section with each test's recorded counts, whatever the verbosity."""
    lines = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if name == COUNTS_PROPERTY:
                    lines.append(f"{report.nodeid.rsplit('::', 1)[-1]} ({report.outcome}): "
                                 f"{value}")
    if lines:
        terminalreporter.write_sep("-", "counts")
        for line in sorted(lines):
            terminalreporter.write_line(line)
