"""comfyq's configuration: every setting comes from a ``COMFYQ_`` environment variable.

Defaults work on a laptop: a Redis on localhost, outputs in the user's data folder, and every
ComfyDeploy GPU type known. List and mapping settings accept JSON (``["A100","T4"]``,
``{"m1": "A100"}``) or the shorter comma forms (``A100,T4`` and ``m1=A100,m2=T4``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import platformdirs
from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from comfyq.gpu_types import COMFYDEPLOY_GPU_TYPES
from comfyq.redis_urls import REDIS_URL_SCHEMES, is_sentinel, parse_sentinel_url


def _json(text: str, shape: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        # The position says where; the text itself may be a secret, so it is not repeated.
        raise ValueError(f"not a valid JSON {shape} ({error.msg} at character {error.pos})") \
            from None


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return _json(text, "list")
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


def _split_mapping(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            return _json(text, "object")
        pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("expected NAME=VALUE pairs separated by commas, or a JSON object")
        return {key.strip(): val.strip() for key, val in pairs}
    return value


def _number(text: Any) -> Any:
    try:
        return float(text) if isinstance(text, str) else text
    except ValueError:
        raise ValueError("expected numbers (seconds)") from None


def _split_floats(value: Any) -> Any:
    return [_number(item) for item in _split_list(value)] if isinstance(value, str) else value


def _split_float_mapping(value: Any) -> Any:
    mapping = _split_mapping(value)
    if not isinstance(value, str):
        return mapping
    return {key: _number(val) for key, val in mapping.items()}


def _check_port(url: str) -> str:
    if is_sentinel(url):
        parse_sentinel_url(url)
        return url
    try:
        urlsplit(url).port
    except ValueError:
        raise ValueError("the port after the host is not a number") from None
    return url



StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
StrMap = Annotated[dict[str, str], NoDecode, BeforeValidator(_split_mapping)]
FloatList = Annotated[list[float], NoDecode, BeforeValidator(_split_floats)]
FloatMap = Annotated[dict[str, float], NoDecode, BeforeValidator(_split_float_mapping)]


class Settings(BaseSettings):
    """All of comfyq's settings; read once per process through :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="COMFYQ_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for run records.")
    broker_url: str | None = Field(None, description="Celery broker; defaults to redis_url.")

    gpu_types: StrList = Field(
        default_factory=lambda: list(COMFYDEPLOY_GPU_TYPES),
        description="GPU types this deployment knows; each gets its own queue.",
    )
    default_gpu: str = Field("T4", description="GPU type for runs that name none.")
    machines: StrMap = Field(
        default_factory=dict, description="machine_id -> default GPU type of that machine."
    )
    gpu_name_map: StrMap = Field(
        default_factory=dict,
        description="Extra device-name substring -> GPU type rules, tried before the built-ins.",
    )

    custom_nodes_dirs: Annotated[list[Path], NoDecode, BeforeValidator(_split_list)] = Field(
        default_factory=list,
        description="Directories of custom node packs, loaded like ComfyUI's custom_nodes/.",
    )
    in_process_tensors: str = Field(
        "auto", pattern="^(auto|torch|numpy)$",
        description="How the in-process engine hands IMAGE and MASK to nodes: 'torch' tensors on "
        "the worker's device (as ComfyUI and custom node packs expect), 'numpy' arrays, or "
        "'auto': torch where it imports.",
    )
    unknown_catalog: str = Field(
        "structural", pattern="^(structural|refuse)$",
        description="What submit does when no worker of the run's GPU type has published a node "
        "catalog yet: 'structural' accepts the graph after the structural checks (links, cycles, "
        "inputs that fit their nodes), so producers may start before workers; 'refuse' refuses it.",
    )
    data_dir: Path = Field(
        default_factory=lambda: platformdirs.user_data_path("comfyq"),
        description="Root of outputs and worker state; the user's data folder by default "
        "(~/.local/share/comfyq on Linux), never the current directory.",
    )
    output_url_base: str | None = Field(
        None, description="Public base URL of the output directory; file:// URLs when unset."
    )

    # --- Where outputs are kept (comfyq.storage) ---
    storage: str = Field(
        "local", pattern="^(local|s3)$",
        description="Where workers keep outputs: 'local' (COMFYQ_DATA_DIR/outputs on the worker's "
        "disk) or 's3' (an S3-compatible bucket every host can reach).",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint (MinIO, R2, GCS...); unset: AWS S3 of s3_region."
    )
    s3_region: str | None = Field(
        None, description="S3 region; unset: the AWS chain's (AWS_REGION, ~/.aws/config)."
    )
    s3_bucket: str | None = Field(
        None, validate_default=True, description="Bucket of the outputs (required with s3)."
    )
    s3_prefix: str = Field(
        "comfyq", pattern=r"^[A-Za-z0-9._/-]*$",
        description="Key prefix: a run's files are kept under <prefix>/<run_id>/.",
    )
    s3_addressing_style: str = Field(
        "auto", pattern="^(auto|path|virtual)$",
        description="'path' for MinIO and servers addressed by IP; 'virtual' for AWS and R2.",
    )
    s3_url_lifetime_seconds: int = Field(
        3600, gt=0, le=7 * 24 * 3600,
        description="Lifetime of the presigned URLs records are shown with (signed on each read).",
    )
    s3_public_base_url: str | None = Field(
        None, description="Public URL of the bucket's prefix; outputs then get plain URLs under "
        "it instead of presigned ones.",
    )
    s3_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest one S3 request waits to connect, or for the next bytes "
        "to go out or come back, before that attempt fails."
    )
    s3_upload_retry_seconds: float = Field(
        30.0, ge=0, description="How long a worker keeps retrying an output upload before the "
        "run fails, saying so.",
    )

    # --- Input files fetched by URL (comfyq.remote_files) ---
    input_max_bytes: int = Field(
        32 * 2**30, gt=0, description="Largest input file (LoRA, checkpoint, file) a worker "
        "fetches by URL."
    )
    input_fetch_timeout_seconds: float = Field(
        900.0, gt=0, description="Longest fetching one input file by URL may take."
    )

    max_run_seconds: float = Field(3600.0, gt=0, description="Longest a run may execute.")
    gpu_max_run_seconds: FloatMap = Field(
        default_factory=dict, description="GPU type -> longest run, overriding max_run_seconds."
    )
    machine_max_run_seconds: FloatMap = Field(
        default_factory=dict, description="machine_id -> longest run, overriding the GPU's."
    )
    max_queue_seconds: float = Field(
        3600.0, gt=0, description="Longest a run may wait in its queue before it ends `timeout`."
    )
    timeout_grace_seconds: float = Field(
        30.0, ge=0, description="After its limit, how long a run may take to stop before the "
        "reaper marks it `timeout` anyway."
    )
    cancel_grace_seconds: float = Field(
        10.0, ge=0, description="After a cancel, or past its limit, how long a run may take to "
        "stop at a node boundary before its worker kills the process executing it; a fresh "
        "process takes the next run. A run on a ComfyUI server gets this after "
        "comfyui_interrupt_grace_seconds."
    )
    lease_ttl_seconds: float = Field(
        30.0, gt=0, description="A run's lease lives this long without a worker heartbeat."
    )
    max_attempts: int = Field(
        3, ge=1, description="Executions a run gets when its workers die, before it fails."
    )
    maintenance_interval_seconds: float = Field(
        5.0, gt=0, description="How often beat runs the reaper (dead workers, timeouts)."
    )
    broker_visibility_timeout_seconds: float | None = Field(
        None, gt=0, description="Override of the broker visibility timeout (default: the longest "
        "run limit + visibility_margin_seconds). Leases keep runs single even when it is shorter."
    )
    lost_message_seconds: float = Field(
        60.0, gt=0, description="A queued run whose message is missing this long is re-published."
    )
    visibility_margin_seconds: float = Field(
        600.0, ge=0, description="Broker visibility timeout = max_run_seconds + this margin."
    )
    outage_retry_seconds: float = Field(
        10.0, ge=0, description="How long a submit keeps retrying Redis and the broker through "
        "a restart or failover before it fails (the run is then not kept); a worker's writes "
        "of a run retry Redis as long."
    )
    redis_wait_replicas: int = Field(
        0, ge=0, description="Replicas that must have a submitted run's record (Redis WAIT) "
        "before the submit answers; 0: answer at once (asynchronous replication)."
    )
    redis_wait_timeout_seconds: float = Field(
        1.0, gt=0, description="Longest wait for those replicas; past it the submit answers "
        "anyway and logs a warning."
    )
    run_retention_seconds: float = Field(
        7 * 24 * 3600.0, gt=0, description="How long finished run records are kept."
    )

    callback_concurrency: int = Field(4, ge=1, description="Threads of the callback worker.")
    progress_interval_seconds: float = Field(
        0.2, ge=0, description="Least time between two progress writes of one run."
    )

    # --- ComfyUI servers as the backend (comfyq.comfyui) ---
    comfyui_url: str | None = Field(
        None, description="ComfyUI server this worker runs its graphs on (unset: in-process). "
        "`comfyq worker --comfyui-url` sets it per device."
    )
    comfyui_urls: StrList = Field(
        default_factory=list,
        description="Default of `comfyq worker --comfyui-url`: one ComfyUI URL per device.",
    )
    comfyui_output_dir: Path | None = Field(
        None, description="The output folder of this worker's ComfyUI server when it runs on "
        "the same host: output files are hard-linked (else copied) from it instead of "
        "downloaded over HTTP (a file not found there still is). Set for a launched server."
    )
    comfyui_path: Path | None = Field(
        None, description="Default of `comfyq worker --comfyui-path`: a ComfyUI checkout to "
        "launch once per device."
    )
    comfyui_python: str | None = Field(
        None, description="Python that runs a launched ComfyUI (default: the checkout's .venv "
        "or venv, else this one)."
    )
    comfyui_base_port: int = Field(
        8190, ge=1, le=65000, description="A launched ComfyUI listens on this port + device index."
    )
    comfyui_args: StrList = Field(
        default_factory=list, description="More command-line options for a launched ComfyUI."
    )
    comfyui_startup_seconds: float = Field(
        600.0, gt=0, description="How long a worker waits for its ComfyUI to answer before it "
        "starts without it (runs then wait for the server)."
    )
    comfyui_request_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest one HTTP request to ComfyUI may take."
    )
    comfyui_interrupt_grace_seconds: float = Field(
        10.0, ge=0, description="After a cancel or time limit, how long ComfyUI may take to "
        "confirm the interrupt before the run ends anyway (and a launched server is restarted)."
    )
    comfyui_restart_request: Path | None = Field(
        None, description="Set by `comfyq worker --comfyui-path` for each device's worker: the "
        "file whose creation asks the supervisor to restart the device's ComfyUI, stuck in a "
        "node that did not stop. Unset (a server attached by URL): comfyq cannot restart it."
    )
    comfyui_unavailable_seconds: float = Field(
        60.0, gt=0, description="How long a run waits for a ComfyUI that stopped answering "
        "before it fails (or is retried once it answers)."
    )
    comfyui_retry_lost_prompt: bool = Field(
        True, description="Post a run once more when its ComfyUI restarted mid-run and lost it; "
        "false: the run fails saying so."
    )
    comfyui_probe_seconds: float = Field(
        5.0, gt=0, description="Without news of a running prompt this long, ask ComfyUI's "
        "/queue whether it still has it."
    )
    comfyui_max_output_bytes: int = Field(
        4 * 2**30, gt=0, description="Largest output file downloaded from ComfyUI."
    )

    metrics_host: str = Field(
        "127.0.0.1", description="Address `comfyq metrics` listens on (0.0.0.0 in a container)."
    )
    metrics_port: int = Field(
        9808, ge=1, le=65535, description="Port `comfyq metrics` serves /metrics on."
    )
    metrics_buckets_seconds: FloatList = Field(
        default_factory=lambda: [1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
                                 1800.0, 2700.0, 3600.0],
        min_length=1,
        description="Histogram buckets (seconds) of run duration and queue wait; up to an hour.",
    )

    # --- HTTP API (comfyq api) ---
    api_tokens: StrList = Field(
        default_factory=list,
        description="Bearer tokens the HTTP API accepts; the API refuses to start without one.",
    )
    api_path_prefix: str = Field(
        "/api", pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="Path prefix of the run endpoints ('' for none); '/api' matches "
        "ComfyDeploy's server URLs, so its clients change only the host.",
    )
    api_max_body_bytes: int = Field(
        10 * 1024 * 1024, gt=0, description="Largest request body the HTTP API reads (else 413)."
    )
    api_sync_timeout_seconds: float = Field(
        300.0, gt=0, description="Longest POST /run/workflow/sync waits for its run (else 504)."
    )
    api_stream_timeout_seconds: float = Field(
        3600.0, gt=0, description="Longest POST /run/workflow/stream follows its run."
    )

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def visibility_timeout_seconds(self) -> float:
        if self.broker_visibility_timeout_seconds is not None:
            return self.broker_visibility_timeout_seconds
        return self.longest_run_seconds + self.visibility_margin_seconds

    def run_time_limit(self, gpu_type: str, machine_id: str | None) -> float:
        """Longest a run may execute: the machine's limit, else its GPU type's, else the default."""
        if machine_id is not None and machine_id in self.machine_max_run_seconds:
            return self.machine_max_run_seconds[machine_id]
        return self.gpu_max_run_seconds.get(gpu_type, self.max_run_seconds)

    @property
    def longest_run_seconds(self) -> float:
        """The longest any run may execute under this configuration."""
        return max([self.max_run_seconds, *self.gpu_max_run_seconds.values(),
                    *self.machine_max_run_seconds.values()])

    @property
    def output_dir(self) -> Path:
        return (self.data_dir / "outputs").resolve()

    # Field validators (not a model validator), so a problem is reported under its variable.
    # A bad URL is named by its variable here, and never quoted: it may hold a password.
    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, url: str) -> str:
        if urlsplit(url).scheme not in REDIS_URL_SCHEMES:
            schemes = ", ".join(f"{scheme}://" for scheme in REDIS_URL_SCHEMES)
            raise ValueError(f"expected a URL starting with one of {schemes}")
        return _check_port(url)

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, url: str | None) -> str | None:
        return url if url is None else _check_port(url)

    @field_validator("default_gpu")
    @classmethod
    def _check_default_gpu(cls, gpu: str, info: ValidationInfo) -> str:
        known = info.data.get("gpu_types")
        if known is not None and gpu not in known:
            raise ValueError(f"{gpu!r} is not one of COMFYQ_GPU_TYPES ({', '.join(known)})")
        return gpu

    @field_validator("machines")
    @classmethod
    def _check_machine_gpus(cls, machines: dict[str, str], info: ValidationInfo
                            ) -> dict[str, str]:
        known = info.data.get("gpu_types")
        for machine, gpu in machines.items():
            if known is not None and gpu not in known:
                raise ValueError(f"machine {machine!r} names GPU {gpu!r}, not one of "
                                 f"COMFYQ_GPU_TYPES ({', '.join(known)})")
        return machines

    @field_validator("s3_bucket")
    @classmethod
    def _check_s3_bucket(cls, bucket: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("storage") == "s3" and not bucket:
            raise ValueError("required when COMFYQ_STORAGE is s3")
        return bucket

    @field_validator("s3_endpoint_url", "s3_public_base_url")
    @classmethod
    def _check_http_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("expected a URL starting with http:// or https://")
        return url if url is None else _check_port(url)


class SettingsError(ValueError):
    """Environment variables that make no valid settings.

    :param problems: one line per bad variable: its name and what is wrong, never its value
        (a URL or a secret must not end up in a terminal or a log).
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def setting_problems(error: ValidationError, env_prefix: str = "COMFYQ_") -> list[str]:
    """``error`` as one line per problem, each naming its environment variable."""
    problems = []
    for detail in error.errors(include_url=False, include_input=False):
        field, *within = detail["loc"] or ("",)
        variable = f"{env_prefix}{str(field).upper()}" if field else "settings"
        where = "".join(f" item {part}" for part in within)
        message = detail["msg"].removeprefix("Value error, ")
        problems.append(f"{variable}{where}: {message}")
    return problems


SettingsModel = TypeVar("SettingsModel", bound=BaseSettings)


def environment_settings(model: type[SettingsModel]) -> SettingsModel:
    """``model`` read from the environment; :class:`SettingsError` when a variable is bad."""
    try:
        return model()
    except ValidationError as error:
        prefix = model.model_config.get("env_prefix") or ""
        raise SettingsError(setting_problems(error, prefix)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use.

    :raises SettingsError: a ``COMFYQ_`` variable is bad (each named, with what is wrong).
    """
    return environment_settings(Settings)


def reset_settings() -> None:
    """Forget the cached settings so the next :func:`get_settings` re-reads the environment."""
    get_settings.cache_clear()
