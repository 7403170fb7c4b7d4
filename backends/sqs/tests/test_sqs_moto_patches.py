"""The test server's speed-ups of moto must not change what moto answers."""

from __future__ import annotations

import json
from typing import Any

import boto3
from moto import mock_aws

from anyqueue_sqs.testing import _linear_queue_bookkeeping


def _queues(sqs: Any) -> list[str]:
    """A standard, a FIFO and a redriven, encrypted queue, with messages in every state."""
    dead = sqs.create_queue(QueueName="dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dead_arn["Attributes"]["QueueArn"], "maxReceiveCount": 3}
    urls = [
        sqs.create_queue(QueueName="plain")["QueueUrl"],
        sqs.create_queue(
            QueueName="ordered.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        )["QueueUrl"],
        sqs.create_queue(
            QueueName="redriven",
            Attributes={"RedrivePolicy": json.dumps(redrive), "KmsMasterKeyId": "alias/k"},
        )["QueueUrl"],
    ]
    for url in urls:
        fifo = {"MessageGroupId": "g"} if url.endswith(".fifo") else {}
        for index in range(4):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{index}", **fifo)
        if not fifo:
            sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=60)
    return urls


def _attributes(sqs: Any, urls: list[str]) -> list[dict[str, str]]:
    answers = [
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"] for url in urls
    ]
    for answer in answers:  # timestamps differ between the two runs
        for name in ("CreatedTimestamp", "LastModifiedTimestamp", "QueueArn"):
            answer.pop(name, None)
    return answers


def test_patched_queue_attributes_answer_as_moto_does() -> None:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        plain = _attributes(sqs, _queues(sqs))
    with mock_aws(), _linear_queue_bookkeeping():
        sqs = boto3.client("sqs", region_name="us-east-1")
        urls = _queues(sqs)
        patched = _attributes(sqs, urls)
        one = sqs.get_queue_attributes(
            QueueUrl=urls[1], AttributeNames=["ApproximateNumberOfMessages", "FifoQueue"]
        )["Attributes"]
        # a send reads ContentBasedDeduplication: the FIFO queue still drops a duplicate body
        sqs.send_message(QueueUrl=urls[1], MessageBody="m0", MessageGroupId="g")
        after = sqs.get_queue_attributes(
            QueueUrl=urls[1], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
    assert patched == plain
    assert plain[0]["ApproximateNumberOfMessages"] == "3"
    assert plain[0]["ApproximateNumberOfMessagesDelayed"] == "1"
    assert plain[0]["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert one == {"ApproximateNumberOfMessages": "3", "FifoQueue": "true"}
    assert after == {"ApproximateNumberOfMessages": "3"}
