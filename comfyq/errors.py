"""The errors comfyq raises to application code; each names what is wrong and where."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ComfyqError(Exception):
    """Base class of every error comfyq raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem of a request: the dotted path of the field, what is wrong with it, and the
    kind of problem (the HTTP API's ``type``; ComfyUI's error type for a graph's problems)."""

    path: str
    message: str
    kind: str = "value_error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidRunRequest(ComfyqError, ValueError):
    """A run request was refused; ``problems`` lists every problem with its field path.

    Nothing was recorded or enqueued for it.
    """

    def __init__(self, problems: Sequence[FieldProblem], what: str = "run request") -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid {what} ({count} problem{'s' * (count != 1)}):\n{lines}")

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"field": problem.path, "message": problem.message} for problem in self.problems]


class DeploymentNotFound(InvalidRunRequest):
    """A deployment run named a deployment that does not exist; ``problems`` names
    ``deployment_id``. The HTTP API answers 404, as ComfyDeploy's server does."""

    def __init__(self, deployment_id: str) -> None:
        self.deployment_id = deployment_id
        super().__init__([FieldProblem("deployment_id", f"no deployment with id {deployment_id!r} "
                                                        "(comfyq deployments list shows them)")])


class UnknownGpuType(ComfyqError, ValueError):
    """The run needs a GPU type that no configuration knows, so no queue would ever serve it.

    ``field`` names where the GPU type came from: the request's ``gpu`` or ``machine_id``, or
    the setting ``COMFYQ_DEFAULT_GPU`` (then it is the deployment's fault, not the caller's).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


class RunNotFound(ComfyqError, KeyError):
    """No run with this id exists (never submitted, or expired after the retention period)."""

    def __str__(self) -> str:
        return f"no run with id {self.args[0]!r}"


class WaitTimeout(ComfyqError, TimeoutError):
    """``wait`` gave up before the run reached a final status; the run itself goes on."""


class SubmitFailed(ComfyqError):
    """The run could not be recorded or handed to the broker; nothing was kept of it."""


class BrokerUnavailable(ComfyqError):
    """The broker (RabbitMQ) could not be read; says where (no credentials) and why."""

    def __init__(self, url: str, reason: BaseException) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
        super().__init__(f"could not read the broker at {where}{parts.path}: "
                         f"{type(reason).__name__}: {reason}")
