"""The graphs kept under a workflow id: every version, and the latest.

A version's id is a digest of its graph, so keeping the same graph twice keeps one version, and
a deployment's ``workflow_version_id`` always names exactly the graph it runs. The latest graph
is what a workflow run naming the workflow with an empty ``workflow_api_json`` runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import redis

from comfyq.models import parse_run_request
from comfyq.redis import keys

#: Hex digits of a graph's SHA-256 that make its version id.
VERSION_ID_LENGTH = 16


@dataclass(frozen=True)
class WorkflowVersion:
    workflow_id: str
    version_id: str
    graph: dict[str, Any]


def version_id(graph: Any) -> str:
    """The id of the version whose graph is ``graph`` (the same for equal graphs)."""
    canonical = json.dumps(graph, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_ID_LENGTH]


class WorkflowVersions:
    """The graph versions of every workflow, in Redis (``decode_responses=True``)."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self.redis = redis_client

    def check(self, workflow_id: str, graph: dict[str, Any]) -> dict[str, Any]:
        """``graph`` checked as a run request's would be; raises InvalidRunRequest."""
        request = {"workflow_id": workflow_id, "workflow_api_json": graph}
        return parse_run_request(request).workflow_api_json

    def add(self, workflow_id: str, graph: dict[str, Any]) -> WorkflowVersion:
        """Keep ``graph`` as a version of ``workflow_id``, and as its latest.

        :raises InvalidRunRequest: the graph is malformed; nothing is kept.
        """
        checked = self.check(workflow_id, graph)
        version = WorkflowVersion(workflow_id, version_id(checked), checked)
        stored = json.dumps(checked)
        pipeline = self.redis.pipeline(transaction=True)
        pipeline.hset(keys.workflow_versions(workflow_id), version.version_id, stored)
        pipeline.set(keys.workflow(workflow_id), stored)
        pipeline.execute()
        return version

    def get(self, workflow_id: str, workflow_version_id: str) -> dict[str, Any] | None:
        """The graph of one version of ``workflow_id``, or None."""
        stored = self.redis.hget(keys.workflow_versions(workflow_id), workflow_version_id)
        return None if stored is None else json.loads(stored)

    def latest(self, workflow_id: str) -> dict[str, Any] | None:
        """The graph kept last under ``workflow_id``, or None."""
        stored = self.redis.get(keys.workflow(workflow_id))
        return None if stored is None else json.loads(stored)
