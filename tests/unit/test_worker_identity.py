"""What a Celery worker started by hand (not by ``comfyq worker``) finds out it serves."""

from __future__ import annotations

import pytest

from comfyq.workers.presence import derived_worker_env


@pytest.mark.parametrize(("queues", "env", "derived"), [
    (["comfyq.gpu.A100"], {}, {"COMFYQ_WORKER_GPU_TYPE": "A100", "COMFYQ_WORKER_DEVICE": "cpu"}),
    (["comfyq.gpu.A100-80GB"], {"CUDA_VISIBLE_DEVICES": "3"},
     {"COMFYQ_WORKER_GPU_TYPE": "A100-80GB", "COMFYQ_WORKER_DEVICE": "cuda:0"}),
    (["comfyq.gpu.T4"], {"CUDA_VISIBLE_DEVICES": ""},
     {"COMFYQ_WORKER_GPU_TYPE": "T4", "COMFYQ_WORKER_DEVICE": "cpu"}),
    (["comfyq.gpu.T4"], {"COMFYQ_WORKER_DEVICE": "cuda:1"}, {"COMFYQ_WORKER_GPU_TYPE": "T4"}),
    # What comfyq worker set is kept as it is.
    (["comfyq.gpu.T4"], {"COMFYQ_WORKER_GPU_TYPE": "T4", "COMFYQ_WORKER_DEVICE": "cuda:0"}, {}),
    # The callback worker, and a worker of two GPU types, are no GPU worker of one type.
    (["comfyq.callbacks", "comfyq.maintenance"], {}, {}),
    (["comfyq.gpu.A100", "comfyq.gpu.T4"], {}, {}),
])
def test_a_hand_started_worker_derives_its_gpu_type_and_device_from_its_queue(queues, env,
                                                                              derived):
    assert derived_worker_env(queues, env) == derived
