"""Request/reply over HTTP against a Python kombu responder (carrot's Messaging, kombu's RPC).

The gateway publishes a request with RabbitMQ's direct reply-to; kombu answers it as any RPC
server does, to the message's reply_to with its correlation_id; the HTTP client gets the reply.
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from kombu import Connection, Consumer, Producer, Queue

from peer import AMQP_URL, RECEIVE_TIMEOUT


class Responder:
    """A kombu RPC server on `queue_name`: answers {"n": n} with {"doubled": 2n}."""

    def __init__(self, queue_name):
        self.queue = Queue(queue_name, no_declare=True)
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.seen = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(RECEIVE_TIMEOUT), "the kombu responder did not start"
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(RECEIVE_TIMEOUT)

    def run(self):
        with Connection(AMQP_URL, connect_timeout=RECEIVE_TIMEOUT) as connection:
            producer = Producer(connection.channel())

            def answer(body, message):
                self.seen.append(dict(message.properties))
                producer.publish(
                    {"doubled": body["n"] * 2},
                    exchange="",
                    routing_key=message.properties["reply_to"],
                    correlation_id=message.properties["correlation_id"],
                    serializer="json",
                )
                message.ack()

            with Consumer(connection, [self.queue], callbacks=[answer], accept=["json"]):
                self.ready.set()
                while not self.stop.is_set():
                    try:
                        connection.drain_events(timeout=0.2)
                    except TimeoutError:
                        pass


def request(gateway, queue, n, **params):
    return gateway.publish_raw(
        "amq.default", json.dumps({"n": n}), routing_key=queue, reply="wait", timeout=10, **params
    )


def test_a_kombu_responder_answers_an_http_request(gateway):
    queue = gateway.queue_name("rpc")
    gateway.declare_queue(queue, durable=False)
    with Responder(queue) as responder:
        response = request(gateway, queue, 21, correlation_id="order-21")
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["body"] == {"doubled": 42}
    assert reply["properties"]["correlation_id"] == "order-21"
    assert reply["properties"]["content_type"] == "application/json"
    [seen] = responder.seen
    assert seen["reply_to"].startswith("amq.rabbitmq.reply-to")
    assert seen["correlation_id"] == "order-21"


def test_concurrent_requests_each_get_their_own_reply(gateway):
    queue = gateway.queue_name("rpc")
    gateway.declare_queue(queue, durable=False)
    with Responder(queue) as responder, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda n: request(gateway, queue, n), range(64)))
    for n, response in enumerate(responses):
        assert response.status_code == 200, response.text
        assert response.json()["body"] == {"doubled": 2 * n}
    correlation_ids = {seen["correlation_id"] for seen in responder.seen}
    assert len(correlation_ids) == 64, "the gateway gives each request its own correlation_id"


def test_a_request_nobody_answers_times_out_and_stays_delivered(gateway, amqp):
    queue = gateway.queue_name("rpc")
    gateway.declare_queue(queue, durable=False)
    response = gateway.publish_raw(
        "amq.default", json.dumps({"n": 1}), routing_key=queue, reply="wait", timeout=1
    )
    assert response.status_code == 504, response.text
    assert response.json()["code"] == "reply_timeout"
    message = amqp.SimpleQueue(Queue(queue, no_declare=True)).get(timeout=RECEIVE_TIMEOUT)
    assert message.properties["reply_to"].startswith("amq.rabbitmq.reply-to")
    message.ack()
