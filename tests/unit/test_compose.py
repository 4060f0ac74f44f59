"""compose.yaml, the Dockerfile and .dockerignore, checked without a Docker engine: the file
parses, each comfyq command parses with comfyq's own command line, each ``COMFYQ_`` variable is a
known setting with a valid value, the health checks ask what they should, and Flower refuses to
start without a login (its entrypoint script run here by ``sh``)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from comfyq.cli.main import build_parser
from comfyq.settings import Settings, environment_settings
from comfyq.webhooks.settings import WebhookSettings
from tests.paths import REPO

COMPOSE = yaml.safe_load((REPO / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
#: ``${NAME:-default}`` as compose interpolates it when NAME is unset.
_DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


def interpolated(value: object) -> str:
    text = str(value)
    assert not re.search(r"\$\{\w+(:?\?)", text), f"{text}: compose would refuse to start"
    return _DEFAULTED.sub(lambda match: match.group(2), text)


def comfyq_services() -> list[str]:
    return [name for name, service in SERVICES.items()
            if service.get("command", [None])[0] == "comfyq"]


def test_services_are_there():
    assert {"redis", "minio", "minio-bucket", "api", "gpu0", "callbacks", "beat",
            "flower"} <= set(SERVICES)
    assert set(comfyq_services()) == {"api", "gpu0", "callbacks"}


@pytest.mark.parametrize("service", comfyq_services())
def test_each_comfyq_command_parses_with_the_cli(service):
    command = SERVICES[service]["command"]
    arguments = build_parser().parse_args(command[1:])
    assert arguments.command == command[1]


@pytest.mark.parametrize("service", [name for name, service in SERVICES.items()
                                     if service.get("image") == "comfyq:latest"])
def test_each_comfyq_variable_is_a_known_setting_with_a_valid_value(service, monkeypatch):
    known = {f"COMFYQ_{name.upper()}" for name in Settings.model_fields} | {
        f"COMFYQ_{name.upper()}" for name in WebhookSettings.model_fields}
    environment = {name: interpolated(value)
                   for name, value in SERVICES[service]["environment"].items()}
    ours = {name for name in environment if name.startswith("COMFYQ_")}
    assert ours - known == set(), f"{service}: unknown settings"
    for name in ours:
        monkeypatch.setenv(name, environment[name])
    settings = environment_settings(Settings)
    assert settings.storage == "s3" and settings.s3_bucket == "comfyq-outputs"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(environment)


def test_the_bucket_workers_write_to_is_the_one_minio_bucket_makes():
    script = " ".join(SERVICES["minio-bucket"]["entrypoint"])
    assert "mc mb --ignore-existing store/comfyq-outputs" in script
    assert SERVICES["api"]["depends_on"]["minio-bucket"]["condition"] == \
        "service_completed_successfully"


def test_health_checks_ask_the_api_if_ready_and_the_workers_for_a_ping():
    from comfyq.api.health import READY_PATH

    assert READY_PATH in " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert "127.0.0.1:8000" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    for worker in ("gpu0", "callbacks"):
        check = " ".join(SERVICES[worker]["healthcheck"]["test"])
        hostname = SERVICES[worker]["command"][SERVICES[worker]["command"].index("--hostname")
                                                + 1]
        assert "celery -A comfyq.tasks.app inspect ping" in check and f"@{hostname}" in check


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
@pytest.mark.parametrize("login, refused", [("", True), ("admin:s3cret", False)])
def test_flower_refuses_to_start_without_basic_auth(login, refused):
    flower = SERVICES["flower"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    # compose passes "$$" through as "$"; the command is replaced by a harmless one here.
    entrypoint = [part.replace("$$", "$") for part in flower["entrypoint"]]
    result = subprocess.run([*entrypoint, "echo", "flower started"], capture_output=True,
                            text=True, timeout=10, env={"FLOWER_BASIC_AUTH": login,
                                                        "PATH": "/usr/bin:/bin"})
    if refused:
        assert result.returncode != 0 and "FLOWER_BASIC_AUTH" in result.stderr
        assert "flower started" not in result.stdout
    else:
        assert result.returncode == 0 and result.stdout.strip() == "flower started"
    assert flower["command"][:4] == ["celery", "-A", "comfyq.tasks.app", "flower"]


def test_the_image_installs_dependencies_before_the_source_and_runs_as_a_user():
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    copies = [index for index, line in enumerate(lines) if line.startswith("COPY ")]
    assert lines[copies[0]] == "COPY pyproject.toml ./" and lines[copies[1]] == "COPY . ."
    installs = [index for index, line in enumerate(lines) if "pip install -r" in line]
    assert installs and copies[0] < installs[0] < copies[1]
    assert "'api', 's3'" in "\n".join(lines)  # the API and S3 extras are in the image
    user = next(line for line in lines if line.startswith("USER "))
    assert user.split()[1] not in ("root", "0")
    assert lines.index(user) > copies[1]
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert {".git", ".venv", "tests"} <= set(ignored)
