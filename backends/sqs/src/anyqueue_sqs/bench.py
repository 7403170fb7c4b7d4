"""The raw-boto3 baseline `anyqueue bench sqs://...` compares anyqueue against.

Plain SQS done the best way, on the same endpoint and credentials, in the same process:

- publish: SendMessageBatch of 10, one call after the other (anyqueue publishes the same way,
  through SNS PublishBatch into the group's queue);
- consume: ReceiveMessage of 10 with long polling, then DeleteMessageBatch of those 10;
- request/reply: a server thread long-polls a request queue and answers into a reply queue the
  caller long-polls, matching replies by a correlation attribute.

Bodies are `body_size` random bytes, base64-encoded, as any SQS client must send binary data
(anyqueue's own side sends the same random bytes, which it base64-encodes as well).
"""

from __future__ import annotations

import base64
import math
import os
import threading
import time
import uuid
from typing import Any

from anyqueue.bench import percentile
from anyqueue.config import BrokerURL, parse_options

from .driver import BATCH_LIMIT, SQSOptions, open_clients

#: give up when nothing arrives for this long
IDLE_TIMEOUT = 30.0


def baseline(
    url: str, *, messages: int, body_size: int, requests: int, batch: int = 10
) -> dict[str, float]:
    """publish_per_s, consume_per_s, request_p50_ms and request_p99_ms with plain boto3.
    `batch` is not used: SQS takes at most 10 messages per call whatever anyqueue's side does."""
    parsed = BrokerURL.parse(url)
    options = parse_options(SQSOptions, parsed.query, {})
    sqs, _ = open_clients(parsed, options)
    run = f"{options.prefix}__bench-{uuid.uuid4().hex[:12]}"
    fifo = options.fifo
    body = base64.b64encode(os.urandom(body_size)).decode() or "-"
    created: list[str] = []

    def queue(name: str) -> str:
        attributes = {"FifoQueue": "true"} if fifo else {}
        url = str(
            sqs.create_queue(QueueName=name + (".fifo" if fifo else ""), Attributes=attributes)[
                "QueueUrl"
            ]
        )
        created.append(url)
        return url

    figures: dict[str, float] = {}
    try:
        if messages > 0:
            work = queue(f"{run}-work")
            figures["publish_per_s"] = _publish(sqs, work, body, messages, fifo)
            figures["consume_per_s"] = _consume(sqs, work, messages)
        if requests > 0:
            latencies = _request_reply(
                open_clients(parsed, options)[0],
                sqs,
                queue(f"{run}-requests"),
                queue(f"{run}-replies"),
                body,
                requests,
                fifo,
            )
            figures["request_p50_ms"] = percentile(latencies, 50) * 1000
            figures["request_p99_ms"] = percentile(latencies, 99) * 1000
    finally:
        for queue_url in created:
            sqs.delete_queue(QueueUrl=queue_url)
        sqs.close()
    return figures


def _fifo_fields(fifo: bool, dedup: str) -> dict[str, str]:
    return {"MessageGroupId": "bench", "MessageDeduplicationId": dedup} if fifo else {}


def _publish(sqs: Any, queue_url: str, body: str, messages: int, fifo: bool) -> float:
    start = time.perf_counter()
    for first in range(0, messages, BATCH_LIMIT):
        count = min(BATCH_LIMIT, messages - first)
        entries = [
            {"Id": str(i), "MessageBody": body, **_fifo_fields(fifo, str(first + i))}
            for i in range(count)
        ]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {response['Failed'][0]}")
    return messages / (time.perf_counter() - start)


def _consume(sqs: Any, queue_url: str, messages: int) -> float:
    received = 0
    first_at = 0.0
    idle_since = time.monotonic()
    while received < messages:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=BATCH_LIMIT,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not batch:
            if time.monotonic() - idle_since > IDLE_TIMEOUT:
                raise RuntimeError(f"only {received} of {messages} messages came back")
            continue
        idle_since = time.monotonic()
        if received == 0:
            first_at = time.perf_counter()
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
        received += len(batch)
    elapsed = time.perf_counter() - first_at
    # as on the anyqueue side: intervals from the first delivery to the last delete
    return max(1, messages - 1) / elapsed if elapsed > 0 else math.inf


def _request_reply(
    server_sqs: Any,
    sqs: Any,
    request_queue: str,
    reply_queue: str,
    body: str,
    requests: int,
    fifo: bool,
) -> list[float]:
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            batch = server_sqs.receive_message(
                QueueUrl=request_queue,
                MaxNumberOfMessages=BATCH_LIMIT,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            for request in batch:
                correlation = request["MessageAttributes"]["correlation"]
                server_sqs.send_message(
                    QueueUrl=reply_queue,
                    MessageBody=request["Body"],
                    MessageAttributes={"correlation": correlation},
                    **_fifo_fields(fifo, uuid.uuid4().hex),
                )
            if batch:
                server_sqs.delete_message_batch(
                    QueueUrl=request_queue,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(batch)
                    ],
                )

    def call() -> float:
        correlation = uuid.uuid4().hex
        start = time.perf_counter()
        sqs.send_message(
            QueueUrl=request_queue,
            MessageBody=body,
            MessageAttributes={"correlation": {"DataType": "String", "StringValue": correlation}},
            **_fifo_fields(fifo, correlation),
        )
        deadline = time.monotonic() + IDLE_TIMEOUT
        while time.monotonic() < deadline:
            replies = sqs.receive_message(
                QueueUrl=reply_queue,
                MaxNumberOfMessages=BATCH_LIMIT,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if replies:
                sqs.delete_message_batch(
                    QueueUrl=reply_queue,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(replies)
                    ],
                )
            for reply in replies:
                if reply["MessageAttributes"]["correlation"]["StringValue"] == correlation:
                    return time.perf_counter() - start
        raise RuntimeError("no reply within 30 s")

    server = threading.Thread(target=serve, name="sqs-bench-server", daemon=True)
    server.start()
    try:
        call()  # warm-up, like the anyqueue side
        return [call() for _ in range(requests)]
    finally:
        stop.set()
        server.join(5)
        server_sqs.close()


def compare(
    url: str, *, rounds: int, messages: int, body_size: int, requests: int
) -> list[dict[str, float]]:
    """anyqueue ÷ baseline ratios for `rounds` rounds, alternating which side runs first, so
    that a shared, busy machine (or moto's slowdown as it accumulates queues) skews neither."""
    from anyqueue import connect
    from anyqueue.bench import measure, with_combined

    ratios = []
    for round_number in range(rounds):
        sides: dict[str, dict[str, float]] = {}
        order = ("anyqueue", "baseline") if round_number % 2 == 0 else ("baseline", "anyqueue")
        for side in order:
            if side == "anyqueue":
                with connect(url) as broker:
                    sides[side] = measure(
                        broker, messages=messages, body_size=body_size, requests=requests
                    )
            else:
                sides[side] = baseline(
                    url, messages=messages, body_size=body_size, requests=requests
                )
        ours, theirs = with_combined(sides["anyqueue"]), with_combined(sides["baseline"])
        ratios.append({name: ours[name] / theirs[name] for name in ours if theirs.get(name)})
        print(f"round {round_number + 1}: anyqueue {_show(ours)}")
        print(f"         baseline {_show(theirs)}")
        print(f"         ratio    {_show(ratios[-1], ratio=True)}")
    return ratios


def _show(figures: dict[str, float], *, ratio: bool = False) -> str:
    return "  ".join(
        f"{name}={value:.2f}{'x' if ratio else ''}" for name, value in sorted(figures.items())
    )


if __name__ == "__main__":
    import argparse
    import statistics

    parser = argparse.ArgumentParser(description="anyqueue vs raw boto3, alternating rounds")
    parser.add_argument("url")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--body-size", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50)
    arguments = parser.parse_args()
    results = compare(
        arguments.url,
        rounds=arguments.rounds,
        messages=arguments.messages,
        body_size=arguments.body_size,
        requests=arguments.requests,
    )
    medians = {name: statistics.median(r[name] for r in results) for name in results[0]}
    print(f"median ratio   {_show(medians, ratio=True)}")
