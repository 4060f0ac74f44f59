"""Catalog publishing: workers publish, catalogs of one GPU type combine to what every worker can
run, departed workers drop out, producers read cheaply, ``comfyq nodes`` shows it all.

The first part drives the registry directly against a real Redis; the second starts real
``comfyq worker`` processes with a directory of custom node packs, one of them broken.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from comfyq.catalog import publishing as catalog_publishing
from comfyq.catalog.object_info import build_catalog
from comfyq.catalog.publishing import (
    CatalogPublisher,
    publish_worker_catalog,
    recombine,
    withdraw_worker_catalog,
)
from comfyq.catalog.reading import CatalogReader, published_catalog
from comfyq.catalog.validation import PromptValidationError
from comfyq.cli.main import main as cli_main
from comfyq.nodes import NODE_CLASS_MAPPINGS
from comfyq.redis import keys
from comfyq.worker_presence import announce_presence
from comfyq.workers.presence import start_worker_publisher, worker_description
from tests.ops_helpers import wait_until

BUILT_INS = build_catalog(NODE_CLASS_MAPPINGS)


@pytest.fixture
def store(fresh_redis: redis.Redis) -> redis.Redis:
    """A database of the test's own: these tests' keys stay apart from the session fleet's."""
    return fresh_redis


def online(client: redis.Redis, name: str, gpu_type: str) -> None:
    """Announce ``name`` as a live worker of ``gpu_type``, as its presence thread does."""
    description = worker_description(name, [f"comfyq.gpu.{gpu_type}"])
    announce_presence(client, description | {"gpu_type": gpu_type})


def with_extra_class(catalog: dict, name: str = "ExtraNode") -> dict:
    return {**catalog, name: {**catalog["ImageInvert"], "name": name}}


def combined(client: redis.Redis, gpu_type: str) -> dict:
    return json.loads(client.get(keys.catalog(gpu_type)))


# ------------------------------------------------------------------ combining in Redis


def test_workers_of_one_gpu_type_combine_to_what_every_one_can_run(store) -> None:
    online(store, "gpu0@a", "A100")
    online(store, "gpu0@b", "A100")
    publish_worker_catalog(store, "A100", "gpu0@a", with_extra_class(BUILT_INS))
    assert "ExtraNode" in combined(store, "A100")
    publish_worker_catalog(store, "A100", "gpu0@b", BUILT_INS)
    assert combined(store, "A100") == BUILT_INS
    assert set(store.hkeys(keys.worker_catalogs("A100"))) == {"gpu0@a", "gpu0@b"}


def test_the_combined_catalog_does_not_depend_on_who_published_last(store) -> None:
    for name in ("gpu0@a", "gpu0@b"):
        online(store, name, "A100")
        online(store, name.replace("gpu0", "gpu1"), "T4")
    publish_worker_catalog(store, "A100", "gpu0@a", with_extra_class(BUILT_INS))
    first = publish_worker_catalog(store, "A100", "gpu0@b", BUILT_INS)
    publish_worker_catalog(store, "T4", "gpu1@b", BUILT_INS)
    second = publish_worker_catalog(store, "T4", "gpu1@a", with_extra_class(BUILT_INS))
    assert first == second == store.get(keys.catalog_digest("T4"))
    # Publishing the same catalog again changes nothing a producer would re-read.
    assert publish_worker_catalog(store, "A100", "gpu0@b", BUILT_INS) == first


def test_departed_workers_drop_out_but_the_last_catalog_stays(store, monkeypatch) -> None:
    online(store, "gpu0@a", "A100")
    publish_worker_catalog(store, "A100", "gpu0@gone", BUILT_INS)  # never announced itself
    publish_worker_catalog(store, "A100", "gpu0@a", with_extra_class(BUILT_INS))
    assert "ExtraNode" not in combined(store, "A100")  # within the grace period it counts
    monkeypatch.setattr(catalog_publishing, "PUBLISH_GRACE_SECONDS", 0.0)
    recombine(store, "A100")
    assert "ExtraNode" in combined(store, "A100")
    assert store.hkeys(keys.worker_catalogs("A100")) == ["gpu0@a"]
    withdraw_worker_catalog(store, "A100", "gpu0@a")
    assert store.hlen(keys.worker_catalogs("A100")) == 0
    assert "ExtraNode" in combined(store, "A100")  # no worker left: the last catalog stays


def test_a_publisher_publishes_again_when_its_entry_vanished(store, monkeypatch) -> None:
    online(store, "gpu0@a", "A100")
    publisher = CatalogPublisher(store, "A100", "gpu0@a", BUILT_INS, {"/packs/x.py": "boom"})
    publisher.publish()
    store.delete(keys.worker_catalogs("A100"), keys.worker_catalog_info("A100"))
    publisher.upkeep()
    assert json.loads(store.hget(keys.worker_catalogs("A100"), "gpu0@a")) == BUILT_INS
    info = json.loads(store.hget(keys.worker_catalog_info("A100"), "gpu0@a"))
    assert info["failed_packs"] == {"/packs/x.py": "boom"}


def test_a_publisher_drops_departed_peers_on_upkeep(store, monkeypatch) -> None:
    online(store, "gpu0@a", "A100")
    publish_worker_catalog(store, "A100", "gpu0@gone", BUILT_INS)
    CatalogPublisher(store, "A100", "gpu0@a", with_extra_class(BUILT_INS)).publish()
    monkeypatch.setattr(catalog_publishing, "PUBLISH_GRACE_SECONDS", 0.0)
    CatalogPublisher(store, "A100", "gpu0@a", with_extra_class(BUILT_INS)).upkeep()
    assert "ExtraNode" in combined(store, "A100")


def test_cpu_workers_publish_nothing_and_a_failing_catalog_does_not_stop_a_worker(
        store, caplog) -> None:
    start_worker_publisher(store, {"name": "callbacks@a", "gpu_type": None})

    def broken_source() -> tuple[dict, dict]:
        raise RuntimeError("cannot describe nodes")

    start_worker_publisher(store, {"name": "gpu0@a", "gpu_type": "A100"}, broken_source)
    assert store.keys("comfyq:catalog:*") == []
    assert "cannot describe nodes" in caplog.text


# ------------------------------------------------------------------ reading in a producer


class CountingRedis(redis.Redis):
    """A client that counts the commands it sends (each one a round trip here)."""

    commands = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        type(self).commands += 1
        return super().execute_command(*args, **options)


def test_a_producer_asks_redis_at_most_once_per_check_period(store, fresh_redis_url) -> None:
    client = CountingRedis.from_url(fresh_redis_url, decode_responses=True)
    reader = CatalogReader(check_seconds=60.0)
    assert reader.compiled(client, "A100") is None
    online(store, "gpu0@a", "A100")
    publish_worker_catalog(store, "A100", "gpu0@a", BUILT_INS)
    assert reader.compiled(client, "A100") is None  # still trusting its copy
    reader.check_seconds = 0.0
    CountingRedis.commands = 0
    first = reader.compiled(client, "A100")
    assert first is not None and "ImageInvert" in first.classes
    assert reader.compiled(client, "A100") is first  # unchanged: the same compiled catalog
    assert CountingRedis.commands == 2  # one round trip each
    publish_worker_catalog(store, "A100", "gpu0@a", with_extra_class(BUILT_INS))
    assert "ExtraNode" in reader.compiled(client, "A100").classes
    reader.check_seconds = 60.0
    CountingRedis.commands = 0
    for _ in range(100):
        reader.compiled(client, "A100")
    assert CountingRedis.commands == 0


# ------------------------------------------------------------------ comfyq nodes


def test_comfyq_nodes_prints_classes_inputs_and_failed_packs(store, fresh_redis_url, use_redis,
                                                             capsys) -> None:
    online(store, "gpu0@a", "A100")
    publish_worker_catalog(store, "A100", "gpu0@a", BUILT_INS,
                           {"/packs/broken.py": "ModuleNotFoundError: No module named 'x'"})
    use_redis(fresh_redis_url)
    assert cli_main(["nodes", "--gpu", "A100"]) == 0
    text = capsys.readouterr().out
    assert f"GPU A100: {len(BUILT_INS)} node classes, offered by 1 worker(s): gpu0@a" in text
    assert "  EmptyImage [image] width: INT 1..16384, height: INT 1..16384" in text
    assert "ImageScale [image/upscaling] image: IMAGE, upscale_method: COMBO(5)" in text
    assert "gpu0@a: /packs/broken.py: ModuleNotFoundError: No module named 'x'" in text
    assert cli_main(["nodes", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["A100"]
    assert report["A100"]["catalog"] == BUILT_INS
    assert report["A100"]["failed_packs"] == {
        "gpu0@a": {"/packs/broken.py": "ModuleNotFoundError: No module named 'x'"}}
    assert cli_main(["nodes", "--gpu", "T4"]) == 1
    assert "no worker of GPU type T4 has published a node catalog" in capsys.readouterr().err


@pytest.fixture
def use_redis(monkeypatch) -> Iterator[Any]:
    """Point the command line's settings at a Redis database; forget them afterwards."""
    from comfyq.settings import reset_settings

    def point_at(url: str) -> None:
        monkeypatch.setenv("COMFYQ_REDIS_URL", url)
        monkeypatch.setenv("COMFYQ_GPU_TYPES", "A100,T4")
        monkeypatch.setenv("COMFYQ_DEFAULT_GPU", "T4")
        reset_settings()

    yield point_at
    reset_settings()


# ------------------------------------------------------------------ real workers with packs

GOOD_PACK = '''
"""A working custom node pack: swaps the colour channels of an image."""


class ChannelSwap:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "swap"
    CATEGORY = "test pack"

    def swap(self, image):
        return (image[..., ::-1].copy(),)


NODE_CLASS_MAPPINGS = {"ChannelSwap": ChannelSwap}
NODE_DISPLAY_NAME_MAPPINGS = {"ChannelSwap": "Channel Swap"}
'''

BROKEN_PACK = "import comfyq_test_module_that_does_not_exist\n"


def swap_graph(prefix: str) -> dict:
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 6, "height": 4, "batch_size": 1, "color": 0xFF0000}},
        "2": {"class_type": "ChannelSwap", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


@pytest.fixture(scope="module")
def pack_fleets(database_pool, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Workers with packs (A100 and T4) and one without (A100), on their own Redis database."""
    with database_pool.lend() as url:
        yield from _pack_fleets(url, tmp_path_factory)


def _pack_fleets(url: str, tmp_path_factory) -> Iterator[dict[str, Any]]:
    from comfyq.devtools.local_fleet import LocalFleet

    client = redis.Redis.from_url(url, decode_responses=True)
    packs = tmp_path_factory.mktemp("custom_nodes")
    (packs / "good_pack").mkdir()
    (packs / "good_pack" / "__init__.py").write_text(textwrap.dedent(GOOD_PACK))
    (packs / "broken_pack.py").write_text(BROKEN_PACK)
    data_dir = tmp_path_factory.mktemp("pack-data")
    logs = tmp_path_factory.mktemp("pack-logs")
    env = {"COMFYQ_REDIS_URL": url, "COMFYQ_GPU_TYPES": "A100,T4", "COMFYQ_DEFAULT_GPU": "T4",
           "COMFYQ_DATA_DIR": str(data_dir), "COMFYQ_CUSTOM_NODES_DIRS": ""}
    quiet = ["--no-callbacks", "--no-beat"]
    with_packs = LocalFleet(["A100", "T4"], env | {"COMFYQ_CUSTOM_NODES_DIRS": str(packs)},
                            quiet, log_path=str(logs / "packs.log"), hostname=f"packs{os.getpid()}")
    plain = LocalFleet(["A100"], env, quiet, log_path=str(logs / "plain.log"),
                       hostname=f"plain{os.getpid()}")
    with with_packs, plain:
        try:
            with_packs.wait_ready(client, 90, callbacks=False)
            plain.wait_ready(client, 90, callbacks=False)
            wait_until(lambda: publishers(client, "A100") == 2, timeout=30)
        except Exception:
            for log in logs.iterdir():
                print(log.read_text()[-4000:])
            raise
        yield {"url": url, "client": client, "plain": plain, "data_dir": data_dir}
    client.close()


def publishers(client: redis.Redis, gpu_type: str) -> int:
    """How many workers have published a catalog for ``gpu_type``."""
    published = published_catalog(client, gpu_type)
    return 0 if published is None else len(published.workers)


@pytest.fixture
def pack_client(pack_fleets, tmp_path):
    from comfyq import Client
    from comfyq.settings import Settings

    settings = Settings(redis_url=pack_fleets["url"], gpu_types=["A100", "T4"], default_gpu="T4",
                        data_dir=pack_fleets["data_dir"])
    return Client(settings=settings)


def test_a_broken_pack_is_reported_and_the_worker_still_serves(pack_fleets, use_redis,
                                                                capsys) -> None:
    use_redis(pack_fleets["url"])
    assert cli_main(["nodes", "--gpu", "T4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["T4"]
    assert report["catalog"]["ChannelSwap"]["display_name"] == "Channel Swap"
    [(worker, failed)] = report["failed_packs"].items()
    assert worker.startswith("gpu1@packs")
    [(pack, error)] = failed.items()
    assert pack.endswith("broken_pack.py")
    assert "comfyq_test_module_that_does_not_exist" in error
    assert cli_main(["nodes", "--gpu", "T4"]) == 0
    text = capsys.readouterr().out
    assert "ChannelSwap [test pack] image: IMAGE -> IMAGE" in text
    assert "broken_pack.py: ModuleNotFoundError" in text


def test_a_run_using_a_node_of_the_working_pack_succeeds(pack_client) -> None:
    run = pack_client.wait(pack_client.submit(
        {"workflow_id": "swap", "workflow_api_json": swap_graph("swapped"), "gpu": "T4"}), 60)
    assert run.status.value == "success", run.error
    [image] = run.outputs[0].data["images"]
    pixels = np.asarray(Image.open(image["url"].removeprefix("file://")))
    assert pixels.shape == (4, 6, 3) and (pixels == [0, 0, 255]).all()


def test_workers_of_one_type_with_different_packs_offer_only_the_common_nodes(
        pack_fleets, pack_client) -> None:
    a100 = published_catalog(pack_fleets["client"], "A100")
    assert len(a100.workers) == 2
    assert "ChannelSwap" not in a100.catalog and "EmptyImage" in a100.catalog
    request = {"workflow_id": "swap", "workflow_api_json": swap_graph("x"), "gpu": "A100"}
    with pytest.raises(PromptValidationError) as refused:
        pack_client.submit(request)
    assert refused.value.body["error"]["type"] == "invalid_prompt"
    assert "ChannelSwap does not exist" in refused.value.body["error"]["message"]


def test_when_the_worker_without_the_pack_stops_its_peers_catalog_remains(pack_fleets) -> None:
    pack_fleets["plain"].stop()
    client = pack_fleets["client"]
    wait_until(lambda: "ChannelSwap" in published_catalog(client, "A100").catalog, 30)
    assert publishers(client, "A100") == 1
