"""A RabbitMQ broker that does not answer: ``comfyq queues`` says so in one line, and a metrics
scrape reports itself down instead of failing."""

from __future__ import annotations

from comfyq.metrics import ComfyqCollector
from comfyq.settings import Settings
from tests.ops_helpers import run_comfyq
from tests.rabbitmq import free_port


def unanswered_broker() -> str:
    return f"amqp://guest:s3cret@127.0.0.1:{free_port()}/jobs"


def test_queues_with_rabbitmq_down_is_one_line_error(fresh_redis_url, tmp_path):
    result = run_comfyq({"COMFYQ_REDIS_URL": fresh_redis_url, "COMFYQ_DATA_DIR": str(tmp_path),
                         "COMFYQ_BROKER_URL": unanswered_broker()}, "queues", timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("comfyq: error: could not read the broker at "
                                                   "amqp://127.0.0.1:"), lines
    assert "s3cret" not in result.stderr


def test_a_scrape_with_rabbitmq_down_reports_itself_down(fresh_redis_url, tmp_path):
    settings = Settings(redis_url=fresh_redis_url, broker_url=unanswered_broker(),
                        data_dir=tmp_path)
    families = list(ComfyqCollector(settings).collect())
    assert [(f.name, [s.value for s in f.samples]) for f in families] == [("comfyq_redis_up", [0])]
