"""Deployments: a workflow version deployed to an environment, under an id clients keep calling.

The first deployment of a workflow to an environment gets an id; deploying that workflow there
again adds a version to the same deployment (ComfyDeploy's server does the same), so a client's
``deployment_id`` runs whatever was deployed last. Versions count from 1 and are never removed:
:meth:`Deployments.get` reads any of them. Keys: ``comfyq.redis.keys`` (deployments section).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from comfyq.deployments.input_types import input_types
from comfyq.deployments.shapes import (
    MACHINES,
    VERSION_IS_KEPT,
    DeploymentCreate,
    DeploymentModel,
    WorkflowWithName,
    parse_request,
)
from comfyq.deployments.workflow_versions import WorkflowVersions, version_id
from comfyq.errors import FieldProblem, InvalidRunRequest
from comfyq.redis import keys

#: What a refused DeploymentCreate is called in its error.
WHAT = "deployment"


@dataclass(frozen=True)
class ResolvedDeployment:
    """One version of a deployment and the graph it runs."""

    deployment: DeploymentModel
    graph: dict[str, Any]


class Deployments:
    """Every deployment, in Redis (``decode_responses=True``).

    :param machines: the configured machine ids (``COMFYQ_MACHINES``); a deployment may name
        only one of them.
    """

    def __init__(self, redis_client: redis.Redis, machines: Iterable[str]) -> None:
        self.redis = redis_client
        self.machines = frozenset(machines)
        self.workflows = WorkflowVersions(redis_client)

    # -- deploying -------------------------------------------------------------------------------

    def create(self, request: DeploymentCreate | Mapping[str, Any] | str | bytes
               ) -> DeploymentModel:
        """Deploy a kept workflow version: a new deployment, or a new version of the workflow's
        deployment in that environment. Returns the version just made.

        :raises InvalidRunRequest: every problem of the request, by field (an unknown workflow
            version or machine included); nothing was changed.
        """
        request = self._parse(request)
        deployment_id, version = self._add_version(request)
        return self.get(deployment_id, version)

    def deploy(self, workflow_id: str, graph: dict[str, Any] | None = None, *,
               environment: str = "production", machine_id: str | None = None,
               deployment_id: str | None = None) -> DeploymentModel:
        """Keep ``graph`` as a version of ``workflow_id`` and deploy it (see :meth:`create`).

        :param graph: an API graph; the workflow's latest kept graph when None.
        :raises InvalidRunRequest: every problem of the graph and the other fields; nothing was
            kept.
        """
        if graph is None:
            graph = self.workflows.latest(workflow_id)
        if graph is None:
            raise InvalidRunRequest([FieldProblem(
                "workflow_id", f"no graph is kept under workflow {workflow_id!r}; give one")], WHAT)
        fields = {"workflow_id": workflow_id, "workflow_version_id": version_id(graph),
                  "environment": environment, "machine_id": machine_id,
                  "deployment_id": deployment_id}
        problems = self._deploy_problems(graph, fields)
        if problems:
            raise InvalidRunRequest(problems, WHAT)
        self.workflows.add(workflow_id, graph)
        return self.create(fields)

    def _deploy_problems(self, graph: Any, fields: dict[str, Any]) -> list[FieldProblem]:
        """Every problem of deploying ``graph`` as ``fields`` say, found before keeping it."""
        problems: list[FieldProblem] = []
        try:
            self.workflows.check(fields["workflow_id"], graph)
        except InvalidRunRequest as error:
            problems += error.problems
        try:
            request = self._parse(fields, pending=fields["workflow_version_id"])
            problems += _id_problems(self.redis, request, _current_id(self.redis, request))
        except InvalidRunRequest as error:
            problems += error.problems
        # A bad workflow_id is a problem of both checks; it is named once.
        return list(dict.fromkeys(problems))

    def _parse(self, request: Any, pending: str | None = None) -> DeploymentCreate:
        def is_kept(workflow_id: str, version: str) -> bool:
            return version == pending or self.workflows.get(workflow_id, version) is not None

        return parse_request(DeploymentCreate, request, WHAT,
                             {MACHINES: self.machines, VERSION_IS_KEPT: is_kept})

    def _add_version(self, request: DeploymentCreate) -> tuple[str, int]:
        """The deployment's id and the number of the version added to it."""
        created = time.time()
        entry = json.dumps({"workflow_version_id": request.workflow_version_id,
                            "machine_id": request.machine_id or "", "created_at": created})
        with self.redis.pipeline() as pipeline:
            while True:
                try:
                    # Watched: two first deployments of a workflow to one environment make one.
                    pipeline.watch(keys.DEPLOYMENT_TARGETS)
                    current_id = _current_id(pipeline, request)
                    problems = _id_problems(pipeline, request, current_id)
                    if problems:
                        raise InvalidRunRequest(problems, WHAT)
                    deployment_id = current_id or request.deployment_id or str(uuid.uuid4())
                    pipeline.multi()
                    if current_id is None:
                        pipeline.hset(keys.DEPLOYMENT_TARGETS, _target(request), deployment_id)
                        pipeline.hset(keys.deployment(deployment_id), mapping={
                            "workflow_id": request.workflow_id,
                            "environment": request.environment.value, "created_at": created})
                        pipeline.zadd(keys.DEPLOYMENTS, {deployment_id: created})
                    pipeline.rpush(keys.deployment_versions(deployment_id), entry)
                    return deployment_id, pipeline.execute()[-1]
                except redis.WatchError:
                    continue

    # -- reading ---------------------------------------------------------------------------------

    def get(self, deployment_id: str, version: int | None = None) -> DeploymentModel | None:
        """One version of a deployment (the latest by default), or None if there is none."""
        resolved = self.resolve(deployment_id, version)
        return None if resolved is None else resolved.deployment

    def resolve(self, deployment_id: str, version: int | None = None
                ) -> ResolvedDeployment | None:
        """One version of a deployment (the latest by default) with its graph, or None."""
        return self._read([deployment_id], version)[0]

    def list(self, environment: str | None = None) -> list[DeploymentModel]:
        """The latest version of every deployment (of one environment), oldest deployment first."""
        found = self._read(self.redis.zrange(keys.DEPLOYMENTS, 0, -1))
        return [resolved.deployment for resolved in found if resolved is not None
                and environment in (None, resolved.deployment.environment)]

    def _read(self, deployment_ids: list[str], version: int | None = None
              ) -> list[ResolvedDeployment | None]:
        if version is not None and version < 1:
            return [None] * len(deployment_ids)
        pipeline = self.redis.pipeline(transaction=False)
        for deployment_id in deployment_ids:
            pipeline.hgetall(keys.deployment(deployment_id))
            pipeline.llen(keys.deployment_versions(deployment_id))
            pipeline.lindex(keys.deployment_versions(deployment_id),
                            -1 if version is None else version - 1)
        answers = pipeline.execute()
        found: list[_Stored | None] = []
        for index, deployment_id in enumerate(deployment_ids):
            record, count, entry = answers[3 * index: 3 * index + 3]
            found.append(_Stored(deployment_id, record, version or count, json.loads(entry))
                         if record and entry is not None else None)
        for stored in found:
            if stored is not None:
                pipeline.hget(keys.workflow_versions(stored.record["workflow_id"]),
                              stored.entry["workflow_version_id"])
        graphs = iter(pipeline.execute())
        return [None if stored is None else stored.resolved(json.loads(next(graphs) or "{}"))
                for stored in found]


class _Stored(NamedTuple):
    """One version of a deployment as Redis holds it: the record and the version's entry."""

    deployment_id: str
    record: dict[str, str]
    version: int
    entry: dict[str, Any]

    def resolved(self, graph: dict[str, Any]) -> ResolvedDeployment:
        workflow_id = self.record["workflow_id"]
        deployment = DeploymentModel(
            id=self.deployment_id, workflow_id=workflow_id,
            environment=self.record["environment"],
            workflow_version_id=self.entry["workflow_version_id"],
            machine_id=self.entry["machine_id"], created_at=float(self.record["created_at"]),
            updated_at=self.entry["created_at"],
            workflow=WorkflowWithName(id=workflow_id, name=workflow_id),
            input_types=input_types(graph), version=self.version)
        return ResolvedDeployment(deployment, graph)


def _target(request: DeploymentCreate) -> str:
    return json.dumps([request.workflow_id, request.environment.value])


def _current_id(reader: redis.Redis, request: DeploymentCreate) -> str | None:
    """The id of the request's workflow's deployment in its environment, if there is one."""
    return reader.hget(keys.DEPLOYMENT_TARGETS, _target(request))


def _id_problems(reader: redis.Redis, request: DeploymentCreate, current_id: str | None
                 ) -> list[FieldProblem]:
    """Why the ``deployment_id`` the request asks for cannot be had, if it cannot."""
    wanted = request.deployment_id
    if wanted is None or wanted == current_id:
        return []
    if current_id is not None:
        message = (f"{request.workflow_id!r} is deployed to {request.environment.value} as "
                   f"{current_id!r}; leave deployment_id out to add a version to it")
    elif reader.exists(keys.deployment(wanted)):
        message = f"{wanted!r} already deploys another workflow or environment"
    else:
        return []
    return [FieldProblem("deployment_id", message)]
