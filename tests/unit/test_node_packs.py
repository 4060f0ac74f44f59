"""Loading custom node packs in process: V1 packs load; packs and classes written for ComfyUI's
V3 node API are refused at load with a message saying why and what runs them instead."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from comfyq.catalog.reading import PublishedCatalog
from comfyq.catalog.summary import format_catalog
from comfyq.execution.registry import V3_REFUSAL, NodeRegistry, load_packs

V1_NODE = '''
class Passthrough:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    def run(self, value):
        return (value,)
'''

V3_BASE = '''
class ComfyNode:  # what comfy_api.latest.io.ComfyNode is to a pack
    @classmethod
    def define_schema(cls):
        raise NotImplementedError
'''


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(textwrap.dedent(text))


def test_v1_classes_load_and_v3_packs_and_classes_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "plain.py", V1_NODE + 'NODE_CLASS_MAPPINGS = {"Passthrough": Passthrough}\n')
    write(tmp_path, "mixed.py", V1_NODE + V3_BASE + '''
class Shiny(ComfyNode):
    @classmethod
    def define_schema(cls):
        return None
NODE_CLASS_MAPPINGS = {"MixedPassthrough": Passthrough, "Shiny": Shiny}
''')
    write(tmp_path, "entrypoint.py", "import folder_paths  # ComfyUI's, missing here\n"
                                      "async def comfy_entrypoint():\n    return None\n")
    write(tmp_path, "needs_comfyui.py", "from comfy_api.latest import io\n")
    registry = NodeRegistry()
    load_packs([tmp_path], registry)

    assert set(registry.classes) == {"Passthrough", "MixedPassthrough"}
    assert registry.failed_packs == {
        f"{tmp_path / 'mixed.py'} (Shiny)": V3_REFUSAL,
        str(tmp_path / "entrypoint.py"): V3_REFUSAL,
        str(tmp_path / "needs_comfyui.py"): V3_REFUSAL,
    }
    assert "V3 node API" in V3_REFUSAL and "--comfyui-url" in V3_REFUSAL


def test_comfyq_nodes_shows_the_refusal() -> None:
    published = PublishedCatalog("T4", {}, {"w1": {"published_at": 0.0,
                                                   "failed_packs": {"/packs/inpaint": V3_REFUSAL}}})
    report = format_catalog(published)
    assert "Custom node packs that failed to load:" in report
    assert f"w1: /packs/inpaint: {V3_REFUSAL}" in report


@pytest.mark.skipif(not os.environ.get("COMFYQ_TEST_V3_PACK"),
                    reason="COMFYQ_TEST_V3_PACK names no checkout of a V3 pack "
                           "(e.g. Acly/comfyui-inpaint-nodes)")
def test_a_real_v3_pack_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "v3pack").symlink_to(Path(os.environ["COMFYQ_TEST_V3_PACK"]).resolve(),
                                     target_is_directory=True)
    registry = NodeRegistry()
    load_packs([tmp_path], registry)
    assert registry.classes == {}
    assert registry.failed_packs == {str(tmp_path / "v3pack"): V3_REFUSAL}
