"""One ComfyUI server per device for ``comfyq worker``: attached by URL, or launched and supervised.

``--comfyui-url URL[,URL...]`` attaches device *i* to the *i*-th server. ``--comfyui-path DIR``
launches ``DIR/main.py`` once per device as a supervised child: ``CUDA_VISIBLE_DEVICES`` set to
that device (empty, plus ``--cpu``, for a simulated one), listening on 127.0.0.1 at
``COMFYQ_COMFYUI_BASE_PORT`` + device index, with its own output, input and temp folders under
``<data dir>/comfyui/gpu<i>/``. The supervisor restarts a server that dies, as it restarts a
worker, and one whose worker asks for it (``COMFYQ_COMFYUI_RESTART_REQUEST``, a file in those
folders): a prompt stuck in a node that does not stop after a cancel or time limit.

Either way the device's Celery worker gets ``COMFYQ_COMFYUI_URL`` and is started only once its
server answers (or after ``COMFYQ_COMFYUI_STARTUP_SECONDS``, with a warning: its runs then wait
for the server), so no run is taken before there is a server to run it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from comfyq.comfyui.client import ComfyUIClient
from comfyq.errors import ComfyqError
from comfyq.settings import Settings
from comfyq.workers.gpus import Device
from comfyq.workers.supervisor import ChildSpec

logger = logging.getLogger(__name__)

#: Loopback address a launched server listens on.
LAUNCH_HOST = "127.0.0.1"
#: The file in a launched server's folder that asks its supervisor to restart it.
RESTART_REQUEST_FILE = "restart-requested"


@dataclass(frozen=True)
class DeviceServer:
    """The ComfyUI server of one device, and its launch when comfyq runs it."""

    device: Device
    url: str
    launch: ChildSpec | None = None
    #: Its output folder, when comfyq launched it on this host.
    output_dir: Path | None = None


def split_urls(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip().rstrip("/") for item in items if item.strip()]


def attached_servers(urls: Sequence[str], devices: Sequence[Device]) -> list[DeviceServer]:
    """Device *i* on the *i*-th URL; the counts must match."""
    if len(urls) != len(devices):
        raise ComfyqError(f"--comfyui-url names {len(urls)} server(s) for {len(devices)} "
                          "device(s); give one URL per device, in device order")
    for url in urls:
        ComfyUIClient(url)  # refuses a malformed URL with a clear message
    return [DeviceServer(device, url) for device, url in zip(devices, urls)]


def comfyui_python(checkout: Path, configured: str | None) -> str:
    """The interpreter for ``checkout``: configured, else its own venv, else this one."""
    if configured:
        return configured
    for venv in (".venv", "venv"):
        candidate = checkout / venv / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    return sys.executable


def launched_servers(checkout: Path, devices: Sequence[Device],
                     settings: Settings) -> list[DeviceServer]:
    """One launched server per device from the ComfyUI checkout ``checkout``."""
    main = checkout / "main.py"
    if not main.is_file():
        raise ComfyqError(f"--comfyui-path {checkout}: no main.py there; give the folder of a "
                          "ComfyUI checkout")
    python = comfyui_python(checkout, settings.comfyui_python)
    servers = []
    for device in devices:
        port = settings.comfyui_base_port + device.index
        folders = settings.data_dir.resolve() / "comfyui" / device.worker_name
        argv = [python, str(main.resolve()), "--listen", LAUNCH_HOST, "--port", str(port),
                "--output-directory", str(folders / "output"),
                "--input-directory", str(folders / "input"),
                "--temp-directory", str(folders), "--disable-auto-launch",
                *(["--cpu"] if device.simulated else []), *settings.comfyui_args]
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
               "CUDA_VISIBLE_DEVICES": "" if device.simulated else str(device.index)}
        spec = ChildSpec(f"comfyui-{device.worker_name}", argv, env, cwd=str(checkout),
                         stop_last=True, restart_request=folders / RESTART_REQUEST_FILE)
        servers.append(DeviceServer(device, f"http://{LAUNCH_HOST}:{port}", spec,
                                    folders / "output"))
    return servers


class ServerAnswers:
    """A supervisor start gate: true once the server answers, or when the wait is over."""

    def __init__(self, url: str, wait_seconds: float) -> None:
        self.client = ComfyUIClient(url, timeout=2.0)
        self.deadline = time.monotonic() + wait_seconds
        self.wait_seconds = wait_seconds

    def __call__(self) -> bool:
        if self.client.answers(timeout=1.0):
            return True
        if time.monotonic() < self.deadline:
            return False
        logger.warning("ComfyUI at %s did not answer within %g s; starting its worker anyway "
                       "(its runs wait for the server)", self.client.base_url, self.wait_seconds)
        return True


def with_servers(gpu_specs: Sequence[ChildSpec], servers: Sequence[DeviceServer],
                 settings: Settings) -> list[ChildSpec]:
    """The servers to launch, then each GPU worker bound to its server and gated on it."""
    launches = [server.launch for server in servers if server.launch is not None]
    bound = []
    for spec, server in zip(gpu_specs, servers):
        env = {**spec.env, "COMFYQ_COMFYUI_URL": server.url}
        if server.launch is not None and server.launch.restart_request is not None:
            env["COMFYQ_COMFYUI_RESTART_REQUEST"] = str(server.launch.restart_request)
        if server.output_dir is not None:
            env["COMFYQ_COMFYUI_OUTPUT_DIR"] = str(server.output_dir)
        bound.append(ChildSpec(spec.name, spec.argv, env, cwd=spec.cwd,
                               start_gate=ServerAnswers(server.url,
                                                        settings.comfyui_startup_seconds)))
    return [*launches, *bound]


def device_servers(devices: Sequence[Device], urls: str | Sequence[str] | None,
                   checkout: str | Path | None, settings: Settings) -> list[DeviceServer]:
    """The servers ``comfyq worker`` was asked for (none: the workers run in-process)."""
    url_list = split_urls(urls)
    if url_list and checkout:
        raise ComfyqError("give --comfyui-url or --comfyui-path, not both")
    if url_list:
        return attached_servers(url_list, devices)
    if checkout:
        return launched_servers(Path(checkout), devices, settings)
    return []
