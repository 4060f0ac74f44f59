"""Where the tests' own data lives: everything a test reads is inside the repository."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"
#: ComfyUI 0.3.64's real node catalog and API-format workflows.
REFERENCE = DATA / "reference"
OBJECT_INFO = REFERENCE / "comfyui-0.3.64-object_info.json"
WORKFLOWS = REFERENCE / "workflows"
SD15_WORKFLOW = WORKFLOWS / "sd15-txt2img.api.json"
TRANSCRIPTS = DATA / "comfyui_transcripts"
FAULT_NODES = DATA / "fault_nodes"
MULTIHOST_NODES = DATA / "multihost_nodes"
