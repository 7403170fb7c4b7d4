"""The raw redis-py baseline that `anyqueue bench redis://...` compares anyqueue against.

Each figure is redis-py done the best way for that job, on keys of its own:
- publish: LPUSH pipelined `batch` (100) at a time, the batch size anyqueue's side publishes with;
- consume+ack: the reliable-queue pattern, BLMOVE from the queue to a processing list, then
  LREM from it as the ack, one message at a time;
- request/reply: a server thread BRPOPs requests and LPUSHes each reply to the caller's own
  list, which the caller BRPOPs.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid

import redis

from anyqueue.config import BrokerURL, parse_options

from .connection import plain_client


def baseline(
    url: str, *, messages: int, body_size: int, requests: int, batch: int = 100
) -> dict[str, float]:
    """Measure the raw client on the server at `url`; keys are removed afterwards."""
    from .driver import RedisDriver

    parsed = BrokerURL.parse(url)
    client = plain_client(parsed, parse_options(RedisDriver.Options, parsed.query, {}))
    prefix = f"anyqueue-baseline:{uuid.uuid4().hex}"
    body = os.urandom(body_size)
    figures: dict[str, float] = {}
    try:
        if messages > 0:
            figures["publish_per_s"] = _publish(client, f"{prefix}:queue", body, messages, batch)
            figures["consume_per_s"] = _consume(client, f"{prefix}:queue", messages)
        if requests > 0:
            latencies = _request_reply(client, prefix, body, requests)
            figures["request_p50_ms"] = _percentile(latencies, 50) * 1000
            figures["request_p99_ms"] = _percentile(latencies, 99) * 1000
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
        client.close()
    return figures


def _publish(client: redis.Redis, queue: str, body: bytes, messages: int, batch: int) -> float:
    start = time.perf_counter()
    sent = 0
    while sent < messages:
        count = min(batch, messages - sent)
        pipe = client.pipeline(transaction=False)
        for _ in range(count):
            pipe.lpush(queue, body)
        pipe.execute()
        sent += count
    return messages / (time.perf_counter() - start)


def _consume(client: redis.Redis, queue: str, messages: int) -> float:
    processing = f"{queue}:processing"
    first_at = 0.0
    for received in range(messages):
        body = client.blmove(queue, processing, 5, "RIGHT", "LEFT")
        if body is None:
            raise RuntimeError(f"only {received} of {messages} messages came back")
        if received == 0:
            first_at = time.perf_counter()
        client.lrem(processing, 1, body)
    elapsed = time.perf_counter() - first_at
    return max(1, messages - 1) / elapsed if elapsed > 0 else math.inf


def _request_reply(client: redis.Redis, prefix: str, body: bytes, requests: int) -> list[float]:
    requests_key, reply_key = f"{prefix}:requests", f"{prefix}:replies"
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            popped = client.brpop([requests_key], 0.2)
            if popped is not None:
                client.lpush(reply_key, popped[1])

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    latencies = []
    try:
        for attempt in range(requests + 1):  # the first is a warm-up, as on the anyqueue side
            start = time.perf_counter()
            client.lpush(requests_key, body)
            if client.brpop([reply_key], 30) is None:
                raise RuntimeError("the baseline server did not reply")
            if attempt:
                latencies.append(time.perf_counter() - start)
    finally:
        stop.set()
        server.join(5)
    return latencies


def _percentile(samples: list[float], percent: float) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]
