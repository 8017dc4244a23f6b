"""Celery tasks sent over HTTP and run by a real Celery worker (celery_app.py), with the rpc://
result backend bringing each result back to the gateway."""

import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from peer import AMQP_URL, RECEIVE_TIMEOUT, Gateway

HERE = Path(__file__).parent
#: A worker that has not started by then never will.
WORKER_START = 60


@pytest.fixture(scope="module")
def worker(gateway_url, http_session):
    """A Celery worker consuming a queue of its own, for this module's tests; yields the queue."""
    gateway = Gateway(gateway_url, http_session)
    queue = gateway.queue_name("celery")
    # The worker declares an exchange of the queue's name too.
    gateway.track_exchange(queue)
    logs = Path(os.environ.get("CARROT_INTEROP_LOGS", HERE.parents[1] / "target"))
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{queue}.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-Q", queue,
         "--pool", "solo", "--without-heartbeat", "--without-gossip", "--without-mingle",
         "-l", "info"],
        cwd=HERE,
        env={**os.environ, "CARROT_INTEROP_AMQP_URL": AMQP_URL},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + WORKER_START
        while True:
            assert process.poll() is None, "the Celery worker exited; see its log"
            info = gateway.request("GET", f"/queues/{queue}")
            if info.status_code == 200 and info.json()["consumer_count"] > 0:
                break
            assert time.monotonic() < deadline, "the Celery worker did not start consuming"
            time.sleep(0.2)
        yield queue
    finally:
        process.terminate()
        try:
            process.wait(RECEIVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        problems = gateway.cleanup()
        assert not problems, "cleanup failed: " + "; ".join(problems)


def send(gateway, task, **call):
    response = gateway.request("POST", f"/tasks/{task}", json=call)
    assert response.status_code == 202, response.text
    sent = response.json()
    assert sent["state"] == "PENDING"
    assert response.headers["location"] == f"/tasks/{sent['id']}"
    return sent["id"]


def finished(gateway, task_id, timeout=RECEIVE_TIMEOUT):
    """The task's state once it is no longer PENDING."""
    deadline = time.monotonic() + timeout
    while True:
        response = gateway.request("GET", f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        state = response.json()
        if state["state"] not in ("PENDING", "STARTED"):
            return state
        assert time.monotonic() < deadline, f"task {task_id} still {state['state']}"
        time.sleep(0.05)


def test_a_worker_runs_the_task_and_its_result_comes_back(gateway, worker):
    task_id = send(gateway, "celery_app.add", args=[2, 3], queue=worker)
    state = finished(gateway, task_id)
    assert state["state"] == "SUCCESS", state
    assert state["result"] == 5
    assert state["date_done"]


def test_keyword_arguments_and_a_countdown(gateway, worker):
    sent_at = datetime.now(timezone.utc)
    task_id = send(
        gateway, "celery_app.greet", args=["ada"], kwargs={"punctuation": "?"},
        countdown=1.5, queue=worker,
    )
    state = finished(gateway, task_id)
    assert state["result"] == "hello ada?"
    done = datetime.fromisoformat(state["date_done"])
    assert (done - sent_at).total_seconds() >= 1.5, "ran before its countdown"


def test_a_failure_comes_back_with_its_exception(gateway, worker):
    task_id = send(gateway, "celery_app.fail", args=["boom"], queue=worker)
    state = finished(gateway, task_id)
    assert state["state"] == "FAILURE"
    assert state["result"]["exc_type"] == "ValueError"
    assert state["result"]["exc_message"] == ["boom"]
    assert "ValueError: boom" in state["traceback"]


def test_an_expired_task_is_revoked(gateway, worker):
    task_id = send(gateway, "celery_app.add", args=[1, 1], expires=0, queue=worker)
    state = finished(gateway, task_id)
    assert state["state"] == "REVOKED"
    assert state["result"]["exc_type"] == "TaskRevokedError"


def test_a_queue_no_worker_consumes_is_refused(gateway):
    response = gateway.request(
        "POST", "/tasks/celery_app.add", json={"args": [1, 1], "queue": gateway.queue_name("none")}
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unroutable"
