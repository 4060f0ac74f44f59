"""The run metrics an exporter builds from the counts Redis keeps (``keys.RUN_METRICS``)."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from comfyq.metrics import RunMetrics, webhook_families

#: As the record's scripts leave them: two successes on A100 of 2.5 s and 1.25 s (kept at two
#: significant digits, rounded up: 25e-1 and 13e-1), a T4 run that waited 40 s.
FIELDS = {"submitted|A100": "3", "started|A100": "2", "finished|A100|success": "2",
          "duration|A100|success|25e-1": "1", "duration|A100|success|13e-1": "1",
          "duration_sum|A100|success": "3.75", "queue_wait|T4|40e0": "1",
          "queue_wait_sum|T4": "40", "a_later_kind|A100": "7"}


def exposed(families) -> dict[tuple[str, frozenset], float]:
    class Families:
        def collect(self):
            return families

    registry = CollectorRegistry()
    registry.register(Families())
    text = generate_latest(registry).decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_counts_become_counters_and_cumulative_buckets_at_the_exporters_bounds():
    samples = exposed(RunMetrics([1.0, 2.5, 60.0]).families(FIELDS))

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("comfyq_runs_submitted_total", gpu_type="A100") == 3
    assert value("comfyq_runs_finished_total", gpu_type="A100", status="success") == 2
    duration = "comfyq_run_duration_seconds_bucket"
    assert [value(duration, gpu_type="A100", status="success", le=le)
            for le in ("1.0", "2.5", "60.0", "+Inf")] == [0, 2, 2, 2]  # 2.5 s is within 2.5
    assert value("comfyq_run_duration_seconds_count", gpu_type="A100", status="success") == 2
    assert value("comfyq_run_duration_seconds_sum", gpu_type="A100", status="success") == 3.75
    wait = "comfyq_run_queue_wait_seconds_bucket"
    assert [value(wait, gpu_type="T4", le=le) for le in ("2.5", "60.0", "+Inf")] == [0, 1, 1]
    assert not [name for name, _ in samples if name.endswith("_created")]
    assert not [name for name, _ in samples if "later_kind" in name]


def test_other_bounds_read_the_same_counts():
    samples = exposed(RunMetrics([1.3, 2.4]).families(FIELDS))
    buckets = {dict(labels)["le"]: value for (name, labels), value in samples.items()
               if name == "comfyq_run_duration_seconds_bucket"}
    assert buckets == {"1.3": 1, "2.4": 1, "+Inf": 2}


def test_webhook_outcomes_are_counters_without_created_series():
    samples = exposed(webhook_families({"delivered": "5", "gone": "1"}))
    assert samples == {
        ("comfyq_webhook_deliveries_total", frozenset({("outcome", "delivered")})): 5,
        ("comfyq_webhook_deliveries_total", frozenset({("outcome", "gone")})): 1}
