"""Push subscriptions with a kombu publisher: what kombu publishes reaches a plain HTTP app
(Python's standard library, no AMQP code), and what the app refuses is dead-lettered where
kombu finds it.
"""

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kombu import Exchange, Producer

from peer import RECEIVE_TIMEOUT, path_name, receive


class App:
    """An HTTP app on an ephemeral port that records each POST and answers from a script."""

    def __init__(self, statuses=()):
        self.requests = queue.Queue()
        script = list(statuses)
        requests = self.requests

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                requests.put((dict(self.headers.items()), body))
                status = script.pop(0) if script else 204
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self):
        try:
            headers, body = self.requests.get(timeout=RECEIVE_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no POST reached the app within {RECEIVE_TIMEOUT} s")
        return {name.lower(): value for name, value in headers.items()}, body

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app_factory():
    apps = []

    def start(statuses=()):
        app = App(statuses)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.close()


def subscribe(gateway, name, queue_name, url, **settings):
    response = gateway.request(
        "POST",
        "/subscriptions",
        json={"name": name, "queue": queue_name, "url": url, **settings},
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_state(gateway, name, done):
    deadline = time.monotonic() + RECEIVE_TIMEOUT
    while True:
        state = gateway.request("GET", f"/subscriptions/{path_name(name)}").json()
        if done(state):
            return state
        assert time.monotonic() < deadline, f"subscription never got there: {state}"
        time.sleep(0.02)


def test_kombu_message_reaches_the_app_raw_and_is_acked(gateway, amqp, app_factory):
    queue_name = gateway.queue_name("push")
    gateway.declare_queue(queue_name, durable=False)
    app = app_factory()
    name = gateway.subscription_name("push")
    subscribe(gateway, name, queue_name, app.url)

    with amqp.channel() as channel:
        Producer(channel).publish(
            {"order": 7, "items": ["a", "b"]},
            exchange=Exchange(""),
            routing_key=queue_name,
            serializer="json",
            headers={"tenant": "acme"},
            correlation_id="c-7",
            message_id="m-7",
        )

    headers, body = app.next()
    assert json.loads(body) == {"order": 7, "items": ["a", "b"]}
    assert headers["content-type"] == "application/json"
    assert headers["amqp-attempt"] == "1"
    assert headers["amqp-routing-key"] == queue_name
    assert headers["amqp-message-id"] == "m-7"
    assert headers["amqp-correlation-id"] == "c-7"
    assert json.loads(headers["amqp-headers"]) == {"tenant": "acme"}
    state = wait_state(gateway, name, lambda s: s["delivered"] == 1)
    assert state["in_flight"] == 0
    response = gateway.request("DELETE", f"/subscriptions/{path_name(name)}")
    assert response.status_code == 204
    assert gateway.queue_info(queue_name)["message_count"] == 0


def test_envelope_decodes_what_kombu_serialized(gateway, amqp, app_factory):
    queue_name = gateway.queue_name("push-envelope")
    gateway.declare_queue(queue_name, durable=False)
    app = app_factory()
    name = gateway.subscription_name("push-envelope")
    subscribe(gateway, name, queue_name, app.url, format="envelope")

    with amqp.channel() as channel:
        Producer(channel).publish(
            {"n": 2**40, "ok": True},
            exchange=Exchange(""),
            routing_key=queue_name,
            serializer="msgpack",
        )
    headers, body = app.next()
    assert headers["content-type"] == "application/json"
    envelope = json.loads(body)
    assert envelope["body"] == {"n": 2**40, "ok": True}
    assert envelope["properties"]["content_type"] == "application/x-msgpack"
    assert envelope["queue"] == queue_name


def test_what_the_app_refuses_is_dead_lettered_for_kombu(gateway, amqp, app_factory):
    dead = gateway.queue_name("push-dead")
    gateway.declare_queue(dead, durable=False)
    queue_name = gateway.queue_name("push-refused")
    gateway.declare_queue(
        queue_name,
        durable=False,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead},
    )
    app = app_factory(statuses=[422])
    name = gateway.subscription_name("push-refused")
    subscribe(gateway, name, queue_name, app.url)

    with amqp.channel() as channel:
        Producer(channel).publish(
            {"bad": True}, exchange=Exchange(""), routing_key=queue_name, serializer="json"
        )
    app.next()
    wait_state(gateway, name, lambda s: s["dead_lettered"] == 1)
    (message,) = receive(amqp, dead, 1)
    assert message.decode() == {"bad": True}
    assert message.headers["x-death"][0]["reason"] == "rejected"
