"""The Celery app of the interoperability tests: a worker runs these tasks for the gateway."""

import os

from celery import Celery

app = Celery(
    "celery_app",
    broker=os.environ.get("CARROT_INTEROP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task
def add(x, y):
    return x + y


@app.task
def greet(name, punctuation="!"):
    return f"hello {name}{punctuation}"


@app.task
def fail(message):
    raise ValueError(message)
