"""GPU detection and pinning: device names to GPU types, one pinned worker per device."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyq.settings import Settings
from comfyq.workers.comfyui_servers import device_servers, launched_servers, with_servers
from comfyq.workers.gpus import Device, gpu_type_for_name, simulated_devices
from comfyq.workers.supervisor import gpu_worker_spec


@pytest.mark.parametrize(("device_name", "gpu_type"), [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA A100 80GB PCIe", "A100-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100"),
    ("NVIDIA A10G", "A10G"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"),
    ("Tesla T4", "T4"),
    ("NVIDIA GeForce RTX 4090", "GeForce-RTX-4090"),
])
def test_device_names_map_to_gpu_types(device_name, gpu_type):
    assert gpu_type_for_name(device_name) == gpu_type


def test_configured_rules_come_first():
    assert gpu_type_for_name("NVIDIA GeForce RTX 4090", {"RTX 4090": "L40S"}) == "L40S"


def test_simulated_devices_need_a_type():
    assert [d.gpu_type for d in simulated_devices("A100, A100,T4")] == ["A100", "A100", "T4"]
    with pytest.raises(ValueError, match="--gpus needs at least one GPU type"):
        simulated_devices(" , ")


def test_each_real_device_gets_a_worker_pinned_to_it_alone():
    spec = gpu_worker_spec(Device(3, "NVIDIA H100 80GB HBM3", "H100"), "host1", "info")
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "3"
    assert spec.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert spec.env["COMFYQ_WORKER_DEVICE"] == "cuda:0"
    argv = spec.argv
    assert argv[argv.index("-Q") + 1] == "comfyq.gpu.H100"
    assert argv[argv.index("-n") + 1] == "gpu3@host1"
    assert argv[argv.index("--concurrency") + 1] == "1"


def test_a_simulated_device_sees_no_gpu():
    [device] = simulated_devices("T4")
    spec = gpu_worker_spec(device, "laptop", "info")
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "" and spec.env["COMFYQ_WORKER_DEVICE"] == "cpu"


def test_a_launched_comfyui_tells_its_worker_where_its_outputs_are(tmp_path):
    checkout = tmp_path / "ComfyUI"
    checkout.mkdir()
    (checkout / "main.py").write_text("")
    settings = Settings(data_dir=tmp_path / "data")
    devices = simulated_devices("2xA100")
    servers = launched_servers(checkout, devices, settings)
    specs = with_servers([gpu_worker_spec(device, "host1", "info") for device in devices],
                         servers, settings)

    for device, server in zip(devices, servers, strict=True):
        argv = server.launch.argv
        launched_output = Path(argv[argv.index("--output-directory") + 1])
        [worker] = [spec for spec in specs if spec.name == device.worker_name]
        assert Path(worker.env["COMFYQ_COMFYUI_OUTPUT_DIR"]) == launched_output
        assert worker.env["COMFYQ_COMFYUI_URL"] == server.url


def test_a_comfyui_attached_by_url_leaves_its_output_folder_to_the_settings(tmp_path):
    devices = simulated_devices("1xA100")
    settings = Settings(data_dir=tmp_path / "data")
    servers = device_servers(devices, "http://127.0.0.1:8188", None, settings)
    [worker] = with_servers([gpu_worker_spec(devices[0], "host1", "info")], servers, settings)
    assert "COMFYQ_COMFYUI_OUTPUT_DIR" not in worker.env
