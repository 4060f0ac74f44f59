"""The session's worker fleet: a real ``comfyq worker --gpus A100,T4`` on the session server's
database 0, started once for every end-to-end test that needs it; and the counts tests keep in
their reports, listed at the end of every run."""

from __future__ import annotations

import pytest
import redis


@pytest.fixture(scope="session")
def fleet_settings(redis_url, tmp_path_factory):
    """Settings shared by the test fleet's workers and the tests' client."""
    from comfyq.settings import Settings

    data_dir = tmp_path_factory.mktemp("comfyq-data")
    env = {
        "COMFYQ_REDIS_URL": redis_url,
        "COMFYQ_GPU_TYPES": "A100,T4",
        "COMFYQ_DEFAULT_GPU": "T4",
        "COMFYQ_DATA_DIR": str(data_dir),
        "COMFYQ_PROGRESS_INTERVAL_SECONDS": "0",
        "COMFYQ_WEBHOOK_ALLOW_LOOPBACK": "true",
        "COMFYQ_WEBHOOK_SCHEDULE": "0,0.2,0.5,1,1",
        "COMFYQ_WEBHOOK_JITTER": "0",
    }
    settings = Settings(redis_url=redis_url, gpu_types=["A100", "T4"], default_gpu="T4",
                        data_dir=data_dir, progress_interval_seconds=0)
    return env, settings


@pytest.fixture(scope="session")
def fleet(fleet_settings, tmp_path_factory):
    """A real ``comfyq worker --gpus A100,T4`` (two GPU workers, callbacks, beat) for the session."""
    from comfyq.devtools.local_fleet import LocalFleet

    env, _ = fleet_settings
    log = tmp_path_factory.mktemp("logs") / "fleet.log"
    with LocalFleet(["A100", "T4"], env, log_path=str(log)) as running_fleet:
        client = redis.Redis.from_url(env["COMFYQ_REDIS_URL"], decode_responses=True)
        try:
            running_fleet.wait_ready(client, timeout=90)
        except Exception:
            print(log.read_text()[-5000:])
            raise
        yield running_fleet


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
