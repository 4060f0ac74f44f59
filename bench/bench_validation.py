"""How long submit-time validation takes: a valid 500-node graph against the full real catalog.

The graph is built from ComfyUI 0.3.64 built-ins: chains of image nodes (create, scale, blend,
blur, crop, mask round trip, composite...) each ending in a SaveImage. Each timed call passes the
plain catalog dict, as callers do; its compiled form is found in the identity cache.

Then the share of submit time it takes: ``Client.submit`` of the same graph against an embedded
Valkey, to a GPU type whose catalog is published (validated) and to one with none (structural
checks only), alternating; the difference is what validation adds to a submit.

    python bench/bench_validation.py [--nodes 500] [--repeat 2000] [--submits 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, the checkout's root is not on the path unless comfyq is installed.
sys.path.insert(0, str(REPO))

from comfyq.catalog.object_info import load_catalog
from comfyq.catalog.publishing import publish_worker_catalog
from comfyq.catalog.validation import (
    PromptValidationError,
    compile_catalog,
    validate_prompt,
)

CATALOG_PATH = REPO / "tests" / "data" / "reference" / "comfyui-0.3.64-object_info.json"
TARGET_MS = 5.0


def _image_chain(first_id: int) -> dict[str, dict]:
    """Twelve linked nodes, ids from ``first_id``, that end in a SaveImage."""
    ids = [str(first_id + offset) for offset in range(12)]
    e, scaled, other, blend, blur, crop, by, to_mask, mask_image, sharp, composite, save = ids
    size = {"width": 512, "height": 512}
    return {
        e: {"class_type": "EmptyImage", "inputs": {**size, "batch_size": 1, "color": 0}},
        scaled: {"class_type": "ImageScale", "inputs": {
            "image": [e, 0], "upscale_method": "bilinear", **size, "crop": "center"}},
        other: {"class_type": "EmptyImage", "inputs": {**size, "batch_size": 1,
                                                       "color": 0xFF8800}},
        blend: {"class_type": "ImageBlend", "inputs": {
            "image1": [scaled, 0], "image2": [other, 0], "blend_factor": 0.5,
            "blend_mode": "multiply"}},
        blur: {"class_type": "ImageBlur", "inputs": {
            "image": [blend, 0], "blur_radius": 3, "sigma": 1.5}},
        crop: {"class_type": "ImageCrop", "inputs": {
            "image": [blur, 0], "width": 256, "height": 256, "x": 16, "y": 16}},
        by: {"class_type": "ImageScaleBy", "inputs": {
            "image": [crop, 0], "upscale_method": "lanczos", "scale_by": 2.0}},
        to_mask: {"class_type": "ImageToMask", "inputs": {"image": [by, 0], "channel": "red"}},
        mask_image: {"class_type": "MaskToImage", "inputs": {"mask": [to_mask, 0]}},
        sharp: {"class_type": "ImageSharpen", "inputs": {
            "image": [mask_image, 0], "sharpen_radius": 2, "sigma": 1.0, "alpha": 0.5}},
        composite: {"class_type": "ImageCompositeMasked", "inputs": {
            "destination": [by, 0], "source": [sharp, 0], "x": 0, "y": 0,
            "resize_source": False, "mask": [to_mask, 0]}},
        save: {"class_type": "SaveImage", "inputs": {
            "images": [composite, 0], "filename_prefix": f"bench_{first_id}"}},
    }


def build_image_graph(node_count: int = 500) -> dict[str, dict]:
    """A valid API graph of exactly ``node_count`` nodes (at least 2) made of image chains."""
    graph: dict[str, dict] = {}
    next_id = 1
    while node_count - len(graph) >= 12:
        graph |= _image_chain(next_id)
        next_id += 12
    if node_count - len(graph) >= 2:
        # The rest: one short chain, an EmptyImage and inverts, into a SaveImage.
        source = str(next_id)
        graph[source] = {"class_type": "EmptyImage", "inputs": {
            "width": 64, "height": 64, "batch_size": 1, "color": 0}}
        while node_count - len(graph) > 1:
            next_id += 1
            graph[str(next_id)] = {"class_type": "ImageInvert", "inputs": {"image": [source, 0]}}
            source = str(next_id)
        graph[str(next_id + 1)] = {"class_type": "SaveImage", "inputs": {
            "images": [source, 0], "filename_prefix": "bench_rest"}}
    return graph


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _milliseconds(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.fmean(ordered), _percentile(ordered, 0.5)


def measure_submit_share(graph: dict, catalog: dict, submits: int) -> None:
    """Print submit times with and without validation (embedded Valkey, real Client)."""
    import tempfile

    import redis

    from comfyq import Client
    from comfyq.devtools.embedded_redis import start_embedded_redis
    from comfyq.settings import Settings

    server = start_embedded_redis(save="")
    try:
        url = f"{server.connection_url}/0"
        store = redis.Redis.from_url(url, decode_responses=True)
        publish_worker_catalog(store, "A100", "bench-worker", catalog)
        with tempfile.TemporaryDirectory() as data_dir:
            client = Client(settings=Settings(redis_url=url, gpu_types=["A100", "T4"],
                                              default_gpu="T4", data_dir=data_dir))
            request = {"workflow_id": "bench", "workflow_api_json": graph}
            timings: dict[str, list[float]] = {"A100": [], "T4": []}
            for index in range(submits + 10):
                for gpu_type, samples in timings.items():
                    started = time.perf_counter()
                    client.submit(request | {"gpu": gpu_type})
                    if index >= 10:  # the first submits warm connections and caches
                        samples.append((time.perf_counter() - started) * 1000)
    finally:
        server.stop()
    checked_mean, checked_p50 = _milliseconds(timings["A100"])
    plain_mean, plain_p50 = _milliseconds(timings["T4"])
    print(f"submit of the {len(graph)}-node graph, {submits} each (embedded Valkey):")
    print(f"  validated against the published catalog: mean {checked_mean:.3f} ms, "
          f"p50 {checked_p50:.3f} ms")
    print(f"  no catalog (structural checks only):    mean {plain_mean:.3f} ms, "
          f"p50 {plain_p50:.3f} ms")
    added = checked_p50 - plain_p50
    print(f"  validation adds {added:.3f} ms per submit (p50): "
          f"{added / checked_p50:.0%} of submit time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--catalog", type=Path, default=CATALOG_PATH)
    parser.add_argument("--submits", type=int, default=200,
                        help="submits per kind for the share of submit time (0: skip)")
    args = parser.parse_args(argv)

    catalog = load_catalog(args.catalog)
    started = time.perf_counter()
    compiled = compile_catalog(catalog)
    compile_ms = (time.perf_counter() - started) * 1000
    graph = build_image_graph(args.nodes)
    assert compile_catalog(catalog) is compiled
    try:
        validate_prompt(graph, catalog)
    except PromptValidationError as error:
        print(f"the benchmark graph is invalid: {error}", file=sys.stderr)
        return 2

    timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        validate_prompt(graph, catalog)
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    mean, p50, p99 = statistics.fmean(timings), _percentile(timings, 0.5), _percentile(
        timings, 0.99)
    print(f"catalog: {len(catalog)} classes, compiled once in {compile_ms:.1f} ms")
    outputs = sum(1 for node in graph.values() if node["class_type"] == "SaveImage")
    print(f"graph: {len(graph)} nodes, {outputs} outputs; {args.repeat} validations")
    print(f"time per graph: mean {mean:.3f} ms, p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    verdict = "meets" if p99 < TARGET_MS else "MISSES"
    print(f"target < {TARGET_MS:.0f} ms per graph (p99): {verdict}")
    if args.submits:
        measure_submit_share(graph, catalog, args.submits)
    return 0 if p99 < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
