"""Executor overhead per node: comfyq's in-process engine vs ComfyUI 0.3.64's, same graph, same run.

Graphs of ``--nodes`` nodes in two shapes: a *chain* (each node reads the one before, then one
output node; every node's cache key covers all before it, ComfyUI's costliest shape) and a
*wide* graph (independent source -> output pairs, shallow ancestry; every source has its own
seed, since both engines answer a node identical to one already run from the cache). Both sides
must execute every node of every run (checked). Two kinds of nodes:

* ``trivial``: the same three tiny node classes (source, step: +1, output) registered in both
  engines, so the time per node is the executor's own: scheduling, gathering inputs, calling,
  keeping results, cache keys;
* ``image``: built-in nodes each engine has, ``EmptyImage`` (``--size`` x ``--size``),
  ``ImageInvert`` and ``PreviewImage`` (which writes a PNG), so the engines' own nodes count too.

Each run changes the EmptyImage's colour, so every node executes (neither cache answers).
Sides, measured in turns (:func:`bench.measuring.in_turns`):

* ``comfyq numpy`` / ``comfyq torch``: comfyq's ``InProcessBackend`` (the worker's pre-run
  checks: the catalog's and ``VALIDATE_INPUTS``, then the executor), with IMAGE as numpy arrays
  or torch CPU tensors;
* ``ComfyUI``: ComfyUI's ``validate_prompt`` and ``PromptExecutor.execute``, imported from the
  checkout named by ``--comfyui`` (default ``COMFYQ_TEST_COMFYUI_CHECKOUT``), on the CPU, its node
  classes from its ``nodes.py``. Needs torch and ComfyUI's requirements; without a checkout the
  ComfyUI side is left out, saying so.

    python bench/bench_executor.py [--nodes 200] [--runs 20] [--size 8] [--kinds trivial image]
                                   [--comfyui PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, the checkout's root is not on the path unless comfyq is installed.
sys.path.insert(0, str(REPO))

from bench.measuring import in_turns


class BenchSource:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 1 << 30})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, seed: int) -> tuple[int]:
        return (seed,)


class BenchStep:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, value: int) -> tuple[int]:
        return (value + 1,)


class BenchOutput:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"value": ("INT", {})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value: int) -> dict:
        return {"ui": {"value": [value]}}


TRIVIAL_CLASSES = {"BenchSource": BenchSource, "BenchStep": BenchStep,
                   "BenchOutput": BenchOutput}


def _trivial(source: str | None, step: bool, size: int, seed: int) -> dict:
    if source is None:
        return {"class_type": "BenchSource", "inputs": {"seed": seed}}
    return {"class_type": "BenchStep" if step else "BenchOutput", "inputs": {"value": [source, 0]}}


def _image(source: str | None, step: bool, size: int, seed: int) -> dict:
    if source is None:
        return {"class_type": "EmptyImage", "inputs": {
            "width": size, "height": size, "batch_size": 1, "color": seed % 0xFFFFFF}}
    if step:
        return {"class_type": "ImageInvert", "inputs": {"image": [source, 0]}}
    return {"class_type": "PreviewImage", "inputs": {"images": [source, 0]}}


KINDS = {"trivial": _trivial, "image": _image}


def chain_graph(make: Callable[..., dict], nodes: int, size: int, seed: int) -> dict[str, dict]:
    """source -> (nodes - 2) steps -> output."""
    graph = {"0": make(None, True, size, seed)}
    for index in range(1, nodes - 1):
        graph[str(index)] = make(str(index - 1), True, size, seed)
    graph[str(nodes - 1)] = make(str(nodes - 2), False, size, seed)
    return graph


def wide_graph(make: Callable[..., dict], nodes: int, size: int, seed: int) -> dict[str, dict]:
    """Independent source -> output pairs, each source with its own seed (so neither engine
    finds one branch's results in another's cache entries), plus a lone source's output when
    the count is odd."""
    graph: dict[str, dict] = {}
    for pair in range(nodes // 2):
        source = str(2 * pair)
        graph[source] = make(None, True, size, seed * 1000 + pair)
        graph[str(2 * pair + 1)] = make(source, False, size, seed)
    if nodes % 2:
        graph[str(nodes - 1)] = make("0", False, size, seed)
    return graph


SHAPES = {"chain": chain_graph, "wide": wide_graph}


class Seeds:
    """A new seed (or colour) per run, so no cache answers."""

    def __init__(self) -> None:
        self.next = 0

    def __call__(self) -> int:
        self.next = (self.next + 1) % 0xFFFFFF
        return self.next


def comfyq_side(tensors: str, kind: str, shape: str, nodes: int, size: int,
                folder: Path) -> Callable[[], float]:
    from comfyq.execution import tensors as tensor_boundary
    from comfyq.execution.inprocess import InProcessBackend
    from comfyq.nodes import NODE_CLASS_MAPPINGS
    from comfyq.run_context import RunContext

    tensor_boundary.boundary("cpu", tensors)  # ValueError where that library is missing
    backend = InProcessBackend({**NODE_CLASS_MAPPINGS, **TRIVIAL_CLASSES},
                               apply_inputs=lambda graph, _: graph,
                               tensor_library=tensors)
    seeds = Seeds()

    def once() -> float:
        graph = SHAPES[shape](KINDS[kind], nodes, size, seeds())
        run_id = uuid.uuid4().hex
        context = RunContext(run_id=run_id, output_dir=folder / "output" / run_id,
                             temp_dir=folder / "temp" / run_id)
        started = time.perf_counter()
        backend.execute(graph, None, context, lambda *_: None)
        elapsed = time.perf_counter() - started
        assert len(context.executed_nodes) == nodes, context.executed_nodes[:5]
        return elapsed

    return once


class _QuietServer:
    """What ComfyUI's executor expects of its server; with a client listening, it counts the
    nodes the executor says it executes (timed runs have none: a UI's messages cost time)."""

    client_id: str | None = None
    last_node_id = None

    def __init__(self) -> None:
        self.executed = 0

    def send_sync(self, event: str, data: dict, sid: str | None = None) -> None:
        if event == "executing" and data.get("node") is not None:
            self.executed += 1


def comfyui_side(checkout: Path, kind: str, shape: str, nodes: int, size: int,
                 folder: Path) -> Callable[[], float]:
    sys.path.insert(0, str(checkout))
    from comfy.cli_args import args

    args.cpu = True
    import execution
    import folder_paths
    import nodes as comfyui_nodes

    comfyui_nodes.NODE_CLASS_MAPPINGS.update(TRIVIAL_CLASSES)
    folder_paths.set_output_directory(str(folder / "comfyui-output"))
    folder_paths.set_temp_directory(str(folder / "comfyui-temp"))
    server = _QuietServer()
    executor = execution.PromptExecutor(server)
    seeds = Seeds()

    def once(extra_data: dict | None = None) -> float:
        graph = SHAPES[shape](KINDS[kind], nodes, size, seeds())
        prompt_id = uuid.uuid4().hex
        started = time.perf_counter()
        valid, error, outputs, _ = asyncio.run(execution.validate_prompt(prompt_id, graph, None))
        assert valid, error
        executor.execute(graph, prompt_id, extra_data or {}, outputs)
        elapsed = time.perf_counter() - started
        assert executor.success
        return elapsed

    once({"client_id": "bench"})  # untimed: every node executes, as the messages say
    assert server.executed == nodes, f"ComfyUI executed {server.executed} of {nodes} nodes"
    return once


def versions() -> str:
    import numpy

    parts = [f"python {sys.version.split()[0]}", f"numpy {numpy.__version__}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        parts.append("no torch")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=200, help="nodes in the graph (>= 3)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per side")
    parser.add_argument("--size", type=int, default=8, help="the image's width and height")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS),
                        help="which kinds of nodes to measure")
    parser.add_argument("--comfyui", type=Path,
                        default=os.environ.get("COMFYQ_TEST_COMFYUI_CHECKOUT") or None,
                        help="a ComfyUI 0.3.64 checkout (default: COMFYQ_TEST_COMFYUI_CHECKOUT)")
    options = parser.parse_args()
    if options.nodes < 3:
        parser.error("--nodes must be at least 3")

    folder = Path(tempfile.mkdtemp(prefix="bench-executor-"))
    print(f"{options.nodes}-node graphs, {options.size}x{options.size} image, {options.runs} "
          f"runs per side; {versions()}")
    for kind in options.kinds:
        for shape in SHAPES:
            measure(kind, shape, options, folder)


def measure(kind: str, shape: str, options: argparse.Namespace, folder: Path) -> None:
    sides: dict[str, Callable[[], float]] = {"comfyq numpy": comfyq_side(
        "numpy", kind, shape, options.nodes, options.size, folder)}
    try:
        sides["comfyq torch"] = comfyq_side("torch", kind, shape, options.nodes, options.size,
                                            folder)
    except ValueError as missing:
        print(f"comfyq torch: left out ({missing})")
    if options.comfyui is not None:
        sides["ComfyUI"] = comfyui_side(options.comfyui.resolve(), kind, shape, options.nodes,
                                        options.size, folder)
    else:
        print("ComfyUI: left out (no --comfyui checkout and COMFYQ_TEST_COMFYUI_CHECKOUT unset)")
    for once in sides.values():  # warm up: imports, first allocations, ComfyUI's first run
        once()
    samples = in_turns(sides, options.runs)

    print(f"\n{kind} nodes, {shape}:")
    print(f"{'side':<14} {'median run ms':>14} {'per node us':>12} {'vs ComfyUI':>11}")
    reference = statistics.median(samples["ComfyUI"]) if "ComfyUI" in samples else None
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = f"{median / reference:.3f}x" if reference else "-"
        print(f"{name:<14} {median * 1000:>14.2f} {median / options.nodes * 1e6:>12.1f} "
              f"{ratio:>11}")

if __name__ == "__main__":
    main()
