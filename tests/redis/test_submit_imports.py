"""Submitting a run loads no node implementation: producers stay small processes."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import invert_graph


def test_submitting_a_run_with_inputs_imports_no_node_implementation(fresh_redis_url,
                                                                      tmp_path) -> None:
    graph = invert_graph()
    code = f"""
import json, sys
from comfyq import Client
from comfyq.settings import Settings
settings = Settings(redis_url={fresh_redis_url!r}, gpu_types=["T4"], default_gpu="T4",
                    data_dir={str(tmp_path)!r})
run_id = Client(settings=settings).submit({{"workflow_id": "invert",
                                           "workflow_api_json": {json.dumps(graph)},
                                           "inputs": {{"width": 16, "prefix": "cat"}}}})
print(json.dumps([run_id, [m for m in ("comfyq.nodes", "numpy", "PIL", "torch")
                           if m in sys.modules]]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    run_id, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert run_id and loaded == []
