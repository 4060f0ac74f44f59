"""Schemathesis drives the run endpoints of a live ``comfyq api`` from its own OpenAPI document.

Requests that fit the document (and, in negative mode, requests that break it) are generated
from the schemas; every answer must be no server error, a documented status with a documented
content type, headers and body, and a request the document calls invalid must be refused. The
one 5xx that is no server error is a sync run's own ending (500 failed, 504 still running at the
wait limit, documented with the run's id and status).

Bounded: a few examples per endpoint and mode, in a database of its own with no workers (runs
stay queued: a sync waits 1 s, a stream follows for 1 s), T4 with a published catalog (graphs
are checked as ComfyUI checks them) and A100, the default, without (structural checks only, so
generated graphs are accepted often enough for the answers of accepted runs to be checked).
Acceptance of every request the document allows is not required: some refusals depend on other
fields or stored state (a link must name a node of the graph, an empty graph runs a deployed
workflow, a webhook host must resolve to an allowed address), which a schema cannot state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from comfyq.catalog.publishing import publish_worker_catalog
from tests.e2e.test_api import free_port, wait_for_health
from tests.paths import OBJECT_INFO

TOKEN = "fuzz-token"
#: Examples per endpoint and generation mode: enough to reach each refusal, quick to run.
MAX_EXAMPLES = 25
RUN_OPERATIONS = [("POST", "/api/run/workflow/queue"), ("POST", "/api/run/workflow/queue/batch"),
                  ("POST", "/api/run/workflow/sync"),
                  ("POST", "/api/run/workflow/stream"), ("GET", "/api/run/{run_id}"),
                  ("POST", "/api/run/{run_id}/cancel")]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
#: Statuses of a sync run that ended without success or outlived the wait: the run's outcome.
RUN_OUTCOME_STATUSES = (409, 500, 504)


@pytest.fixture(scope="module")
def fuzzed_api(database_pool, tmp_path_factory) -> Iterator[str]:
    """``comfyq api`` on a database of its own, with T4's catalog published and no workers."""
    with database_pool.lend() as url:
        with redis.Redis.from_url(url, decode_responses=True) as client:
            catalog = json.loads(OBJECT_INFO.read_text())
            publish_worker_catalog(client, "T4", "fuzz@catalog", catalog)
        folder = tmp_path_factory.mktemp("fuzzed-api")
        env = {**os.environ, "COMFYQ_REDIS_URL": url, "COMFYQ_API_TOKENS": TOKEN,
               "COMFYQ_GPU_TYPES": "A100,T4", "COMFYQ_DEFAULT_GPU": "A100",
               "COMFYQ_DATA_DIR": str(folder), "COMFYQ_API_SYNC_TIMEOUT_SECONDS": "1",
               "COMFYQ_API_STREAM_TIMEOUT_SECONDS": "1"}
        port = free_port()
        with open(folder / "api.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "comfyq.cli", "api", "--port",
                                        str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        root = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(root, process)
            yield root
        finally:
            process.terminate()
            process.wait(timeout=30)
            print((folder / "api.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def api_schema(fuzzed_api):
    return schemathesis.openapi.from_url(f"{fuzzed_api}/openapi.json")


def is_run_outcome(case, response) -> bool:
    """Whether ``response`` is a sync run's own ending, which the document gives a 5xx."""
    if not case.path.endswith("/run/workflow/sync"):
        return False
    if response.status_code not in RUN_OUTCOME_STATUSES:
        return False
    return {"run_id", "status"} <= set(response.json())


# Each operation is driven by its Hypothesis strategy here: schemathesis's lazy pytest loader
# (``from_fixture``) does not run under pytest 9.
@pytest.mark.timeout(300)  # a bound on the whole run, not a measure of it
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=lambda mode: mode.value)
@pytest.mark.parametrize(("method", "path"), RUN_OPERATIONS)
def test_run_endpoints_answer_as_their_document_says(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def answers_as_documented(case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        excluded = [not_a_server_error] if is_run_outcome(case, response) else []
        case.validate_response(response, checks=CHECKS, excluded_checks=excluded)

    answers_as_documented()
