"""Every Redis key and channel comfyq uses, named in one place.

All keys share the ``comfyq:`` prefix so one Redis can hold comfyq beside other data, and so
``redis-cli --scan --pattern 'comfyq:*'`` shows everything comfyq owns.
"""

from __future__ import annotations

#: Prefix of every key comfyq writes.
PREFIX = "comfyq"

# --- runs -------------------------------------------------------------------------------------

#: Sorted set of every run id, scored by creation time (newest last).
RUNS_INDEX = f"{PREFIX}:runs"


def run(run_id: str) -> str:
    """Hash holding one run's record (each field a JSON value, ``status`` plain)."""
    return f"{PREFIX}:run:{run_id}"


def run_updates(run_id: str) -> str:
    """Pub/sub channel announcing every change of one run's record."""
    return f"{PREFIX}:run:{run_id}:updates"


def run_cancel(run_id: str) -> str:
    """String set once a run is asked to stop; workers poll it between nodes."""
    return f"{PREFIX}:run:{run_id}:cancel"


# --- node catalogs ------------------------------------------------------------------------------


def catalog(gpu_type: str) -> str:
    """The node catalog (ComfyUI ``/object_info`` JSON) that the workers of ``gpu_type`` offer."""
    return f"{PREFIX}:catalog:{gpu_type}"


def worker_catalogs(gpu_type: str) -> str:
    """Hash worker name -> that worker's own catalog JSON, for one GPU type."""
    return f"{PREFIX}:catalog:{gpu_type}:workers"


# --- webhooks -----------------------------------------------------------------------------------

#: Prefix of the webhook outbox keys (see comfyq.webhooks).
WEBHOOKS = f"{PREFIX}:webhooks"


# --- scheduler ----------------------------------------------------------------------------------

#: Lock held by the one beat instance allowed to run maintenance.
BEAT_LOCK = f"{PREFIX}:beat:lock"


# --- workers ------------------------------------------------------------------------------------

#: Set of the names of workers that announced themselves (some may have expired since).
WORKERS_INDEX = f"{PREFIX}:workers"


def worker(name: str) -> str:
    """String (JSON) describing a live worker: GPU type, device, pid, current run; with a TTL."""
    return f"{PREFIX}:worker:{name}"
