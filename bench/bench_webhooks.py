"""How many webhook deliveries per second one process makes through the outbox and transport.

The receiver (a threaded HTTP/1.1 server that verifies every signature) runs in its own process
so that it does not share this process's interpreter lock; Redis is an embedded Valkey the
benchmark starts and stops (it never touches another server). Each event goes the whole way:
`record_event`, claimed by `enqueue_due`, then `deliver_event` (URL check, signing, POST over a
kept-alive connection, outcome recorded in Redis, next event of its run released), on
`--threads` delivery threads as a callback worker's pool would run them.

    python bench/bench_webhooks.py [--events 3000] [--runs 300] [--threads 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import threading
import time
from multiprocessing.connection import Connection

import redis

from comfyq.devtools.embedded_redis import start_embedded_redis
from comfyq.webhooks.outbox import deliver_event, enqueue_due, record_event
from comfyq.webhooks.receiver import SigningReceiver
from comfyq.webhooks.settings import WebhookSettings
from comfyq.webhooks.signing import generate_secret

TARGET_PER_SECOND = 300


def serve_receiver(secret: str, port_out: Connection, stop: multiprocessing.Event) -> None:
    """Child process: run a receiver and report its port until told to stop."""
    receiver = SigningReceiver(secret).start()
    port_out.send(receiver.port)
    stop.wait()
    port_out.send((len(receiver.received), len(receiver.accepted())))
    receiver.stop()


def record_all(client: redis.Redis, url: str, runs: int, events: int,
               settings: WebhookSettings) -> float:
    """Record `events` status changes spread over `runs` runs; returns seconds taken."""
    started = time.perf_counter()
    for index in range(events):
        run_id = f"bench-{index % runs}"
        body = {"run_id": run_id, "status": "running", "live_status": f"step {index}",
                "progress": 0.5, "outputs": []}
        record_event(client, run_id, url, body, final=False, status_changed=True,
                     settings=settings)
    return time.perf_counter() - started


def deliver_all(client: redis.Redis, events: int, threads: int,
                settings: WebhookSettings) -> tuple[float, int]:
    """Deliver everything recorded on `threads` threads; returns (seconds, delivered)."""
    handed: queue.Queue[str | None] = queue.Queue()
    delivered = 0
    count_lock = threading.Lock()

    def worker() -> None:
        nonlocal delivered
        while (event_id := handed.get()) is not None:
            outcome = deliver_event(client, event_id, settings=settings)
            if outcome.state == "delivered":
                with count_lock:
                    delivered += 1
            if outcome.next_event_id:
                handed.put(outcome.next_event_id)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    enqueue_due(client, time.time(), handed.put, settings=settings)
    while delivered < events and time.perf_counter() - started < 120:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    for _ in pool:
        handed.put(None)
    return elapsed, delivered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    server = start_embedded_redis(save="")
    client = redis.Redis.from_url(f"{server.connection_url}/0", decode_responses=True,
                                  max_connections=args.threads + 4)
    secret = generate_secret()
    settings = WebhookSettings(webhook_secrets=[secret], webhook_allow_loopback=True,
                               webhook_progress_interval_seconds=0)
    reports, child_end = multiprocessing.Pipe()
    stop = multiprocessing.Event()
    receiver = multiprocessing.Process(target=serve_receiver, args=(secret, child_end, stop))
    receiver.start()
    try:
        hook = f"http://127.0.0.1:{reports.recv()}/hook"
        recording = record_all(client, hook, args.runs, args.events, settings)
        seconds, delivered = deliver_all(client, args.events, args.threads, settings)
        stop.set()
        received, accepted = reports.recv()
    finally:
        stop.set()
        receiver.join(timeout=10)
        server.stop()

    rate = delivered / seconds
    print(f"recorded {args.events} events over {args.runs} runs in {recording:.2f} s "
          f"({args.events / recording:.0f} events/s)")
    print(f"delivered {delivered} in {seconds:.2f} s on {args.threads} threads: "
          f"{rate:.0f} deliveries/s (target >= {TARGET_PER_SECOND}); receiver verified "
          f"{accepted} of {received}")
    return 0 if rate >= TARGET_PER_SECOND and accepted == args.events else 1


if __name__ == "__main__":
    raise SystemExit(main())
