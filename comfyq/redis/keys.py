"""Every Redis key and channel comfyq uses, named in one place.

All keys share the ``comfyq:`` prefix so one Redis can hold comfyq beside other data, and so
``redis-cli --scan --pattern 'comfyq:*'`` shows everything comfyq owns.

Hash tags (for Redis Cluster). The keys of one run carry the run id as their hash tag
(``comfyq:run:{<run_id>}``, ``...:lease``, ``...:cancel``, the webhook outbox's
``comfyq:webhooks:run:{<run_id>}...``), the keys of one GPU type's catalog carry the GPU
type, and a deployment's record and versions carry its id, so each lands in one slot and a
script or transaction touching only them could run on a cluster. (Creating a deployment also
updates ``DEPLOYMENTS`` and ``DEPLOYMENT_TARGETS`` in its transaction.) The Lua scripts
(``comfyq/redis/lua``) and the keys they touch:

- ``lease_renew``, ``lease_release``: one run's lease only; ``beat_lock_hold``: ``BEAT_LOCK``
  only; ``catalog_read``: one GPU type's catalog keys only. Ready for a cluster as they are.
- ``run_transition``, ``run_claim``: one run's keys, plus the cross-run indexes ``ACTIVE_RUNS``
  and ``QUEUED_RUNS`` and the counts ``RUN_METRICS``, kept in step with the status in the same
  step. On a cluster those indexes would have to move out of the scripts (updated after them,
  with the reaper repairing a missed update) or be split per slot (one index per hash slot,
  read by scanning them all), and the counts too. ``RUNS_INDEX`` is written beside the record
  (``RunStore.create``), not by a script.
- The webhook outbox's scripts (``outbox_*``): one run's outbox keys and record, plus the
  cross-run ``WEBHOOKS_DUE``, ``WEBHOOKS_INFLIGHT``, ``WEBHOOKS_OUTSTANDING``,
  ``WEBHOOKS_DELIVERED``, ``WEBHOOKS_DEAD``, ``WEBHOOKS_GONE_URLS`` and ``WEBHOOK_METRICS``, and
  event hashes, which are named by event id alone (the ``webhook-id`` receivers see, and the one
  name a delivery task gets). On a cluster the event ids would have to carry their run's tag,
  and the indexes be split per slot, with the scheduler claiming from each.
"""

from __future__ import annotations

#: Prefix of every key comfyq writes.
PREFIX = "comfyq"


def _tag(name: str) -> str:
    """``name`` as a Redis Cluster hash tag: only it decides the slot of a key that holds it."""
    return "{" + name + "}"


# --- runs -------------------------------------------------------------------------------------

#: Sorted set of every run id, scored by creation time (newest last).
RUNS_INDEX = f"{PREFIX}:runs"


def run(run_id: str) -> str:
    """Hash holding one run's record (each field a JSON value, ``status`` plain)."""
    return f"{PREFIX}:run:{_tag(run_id)}"


def run_updates(run_id: str) -> str:
    """Pub/sub channel announcing every change of one run's record."""
    return f"{run(run_id)}:updates"


def run_cancel(run_id: str) -> str:
    """String set once a run is asked to stop; workers poll it between nodes."""
    return f"{run(run_id)}:cancel"


def run_lease(run_id: str) -> str:
    """String holding the token of the worker executing the run; expires without heartbeats."""
    return f"{run(run_id)}:lease"


#: Sorted set of runs a worker has started and not finished, scored by start time (the reaper's
#: list of runs whose worker may have died).
ACTIVE_RUNS = f"{PREFIX}:runs:active"
#: Sorted set of runs waiting in a queue, scored by when they were queued (queue-wait timeouts and
#: lost-message recovery).
QUEUED_RUNS = f"{PREFIX}:runs:queued"


def workflow(workflow_id: str) -> str:
    """String (JSON) holding the API graph deployed under a workflow id."""
    return f"{PREFIX}:workflow:{workflow_id}"


def workflow_versions(workflow_id: str) -> str:
    """Hash version id -> API graph (JSON) of every version kept of a workflow."""
    return f"{PREFIX}:workflow-versions:{workflow_id}"


def idempotency(key: str) -> str:
    """String holding the run id first submitted with this idempotency key."""
    return f"{PREFIX}:idempotency:{key}"


# --- deployments (comfyq.deployments) -----------------------------------------------------------

#: Sorted set of every deployment id, scored by creation time.
DEPLOYMENTS = f"{PREFIX}:deployments"
#: Hash ``[workflow_id, environment]`` (JSON) -> the id of that workflow's deployment there.
DEPLOYMENT_TARGETS = f"{PREFIX}:deployments:targets"


def deployment(deployment_id: str) -> str:
    """Hash of one deployment: its workflow id, environment and creation time."""
    return f"{PREFIX}:deployment:{_tag(deployment_id)}"


def deployment_versions(deployment_id: str) -> str:
    """List of one deployment's versions (JSON each), version 1 first."""
    return f"{deployment(deployment_id)}:versions"


# --- node catalogs ------------------------------------------------------------------------------


def catalog(gpu_type: str) -> str:
    """The node catalog (ComfyUI ``/object_info`` JSON) that the workers of ``gpu_type`` offer."""
    return f"{PREFIX}:catalog:{_tag(gpu_type)}"


def worker_catalogs(gpu_type: str) -> str:
    """Hash worker name -> that worker's own catalog JSON, for one GPU type."""
    return f"{catalog(gpu_type)}:workers"


# --- catalog publishing (comfyq.catalog.registry) ---------------------------------------------


def catalog_digest(gpu_type: str) -> str:
    """String: SHA-256 of the combined catalog JSON; producers re-read the catalog on change."""
    return f"{catalog(gpu_type)}:digest"


def worker_catalog_info(gpu_type: str) -> str:
    """Hash worker name -> JSON ``{published_at, failed_packs}`` of that worker's catalog."""
    return f"{catalog(gpu_type)}:info"


# --- webhooks -----------------------------------------------------------------------------------

#: Prefix of the webhook outbox keys (see comfyq.webhooks).
WEBHOOKS = f"{PREFIX}:webhooks"

#: Sorted set of events whose next attempt waits for its due time (score: due, Unix seconds).
WEBHOOKS_DUE = f"{WEBHOOKS}:due"
#: Sorted set of events handed to a delivery task (score: deadline of that claim or attempt).
WEBHOOKS_INFLIGHT = f"{WEBHOOKS}:inflight"
#: Sorted set of every event not yet delivered, dead or gone (score: creation time).
WEBHOOKS_OUTSTANDING = f"{WEBHOOKS}:outstanding"
#: Sorted set of the most recently delivered events (score: delivery time), trimmed.
WEBHOOKS_DELIVERED = f"{WEBHOOKS}:delivered"
#: Sorted set of dead-lettered and gone events (score: when they died), kept until redelivered.
WEBHOOKS_DEAD = f"{WEBHOOKS}:dead"
#: Hash URL -> Unix time it answered 410 Gone; nothing more is sent to those URLs.
WEBHOOKS_GONE_URLS = f"{WEBHOOKS}:gone"
#: String: the signing secret generated for this deployment when none is configured.
WEBHOOKS_SECRET = f"{WEBHOOKS}:secret"


def webhook_event(event_id: str) -> str:
    """Hash of one webhook event: its body, target URL, state and attempts."""
    return f"{WEBHOOKS}:event:{event_id}"


def webhook_run(run_id: str) -> str:
    """Hash of one run's outbox state: last seq, the event in delivery, last send time."""
    return f"{WEBHOOKS}:run:{_tag(run_id)}"


def webhook_run_queue(run_id: str) -> str:
    """Sorted set of one run's undelivered events (score: seq); the lowest is delivered next."""
    return f"{webhook_run(run_id)}:queue"


def webhook_run_dead(run_id: str) -> str:
    """Sorted set of one run's dead-lettered or gone events (score: seq), for redelivery."""
    return f"{webhook_run(run_id)}:dead"


def webhook_run_attempts(run_id: str) -> str:
    """List of one run's latest delivery attempts (JSON each), mirrored into its record."""
    return f"{webhook_run(run_id)}:attempts"


# --- metrics (comfyq.metrics) ------------------------------------------------------------------

#: Hash of run counts, counted where the runs change (the record's scripts, ``RunStore.create``)
#: so that every exporter reads the same: ``submitted|<gpu>``, ``started|<gpu>``,
#: ``finished|<gpu>|<status>``; observations of queue wait and duration as
#: ``queue_wait|<gpu>|<bound>`` and ``duration|<gpu>|<status>|<bound>`` (how many, each at its
#: value rounded up to two significant digits, e.g. ``25e-1``) and ``..._sum|<labels>``.
RUN_METRICS = f"{PREFIX}:metrics:runs"
#: Hash of webhook events settled, by outcome: ``delivered``, ``dead``, ``gone``.
WEBHOOK_METRICS = f"{PREFIX}:metrics:webhooks"


# --- scheduler ----------------------------------------------------------------------------------

#: Lock held by the one beat instance allowed to run maintenance.
BEAT_LOCK = f"{PREFIX}:beat:lock"


# --- workers ------------------------------------------------------------------------------------

#: Set of the names of workers that announced themselves (some may have expired since).
WORKERS_INDEX = f"{PREFIX}:workers"


def worker(name: str) -> str:
    """String (JSON) describing a live worker: GPU type, device, pid, current run; with a TTL."""
    return f"{PREFIX}:worker:{name}"
