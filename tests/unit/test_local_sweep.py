"""Each host sweeps its own data folder: outputs, temp files, uploads and fetched inputs older
than the retention go, newer ones stay; ``comfyq worker``'s supervisor does it on every host,
and a failing sweep never stops it."""

from __future__ import annotations

import os
import time

from comfyq.settings import Settings
from comfyq.storage.local import local_folders, sweep_local_folders
from comfyq.workers.supervisor import Supervisor


def test_old_folders_of_every_kind_go_and_new_ones_stay(tmp_path):
    settings = Settings(data_dir=tmp_path)
    old, new = [], []
    for root in local_folders(settings):
        for name, kept in (("old", False), ("new", True)):
            folder = root / f"{name}-entry"
            folder.mkdir(parents=True)
            (folder / "file.bin").write_bytes(b"x")
            if not kept:
                os.utime(folder, (time.time() - 100, time.time() - 100))
            (new if kept else old).append(folder)
    assert {root.name for root in local_folders(settings)} == {
        "outputs", "temp", "uploads", "input-cache"}
    assert sweep_local_folders(settings, time.time() - 50) == len(old) == 4
    assert not any(folder.exists() for folder in old)
    assert all(folder.exists() for folder in new)


def test_the_supervisor_sweeps_at_its_first_turn_then_on_its_interval():
    calls = []
    supervisor = Supervisor([], grace_seconds=1, housekeeping=lambda: calls.append(1),
                            housekeeping_seconds=3600)
    supervisor.supervise()
    supervisor.supervise()
    assert calls == [1]


def test_a_failing_sweep_is_logged_and_the_supervisor_goes_on(caplog):
    def broken() -> None:
        raise OSError("disk gone")

    supervisor = Supervisor([], grace_seconds=1, housekeeping=broken, housekeeping_seconds=0)
    supervisor.supervise()
    supervisor.supervise()
    assert [record.getMessage() for record in caplog.records].count(
        "housekeeping failed; trying again in 0 s") == 2
