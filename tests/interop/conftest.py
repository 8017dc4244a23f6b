"""Fixtures of the kombu interoperability tests.

The gateway under test runs elsewhere (``.ci/interop`` starts it) and is named by the
environment variable ``CARROT_GATEWAY_URL``; the broker behind it is reached directly by
kombu at ``CARROT_INTEROP_AMQP_URL`` (default: RabbitMQ on 127.0.0.1:5672, guest/guest,
vhost ``/``), which must be the broker and vhost the gateway serves.

Every test names what it declares with a fresh uuid and deletes it afterwards.
"""

import os

import pytest
import requests
from kombu import Connection

from peer import AMQP_URL, HTTP_TIMEOUT, RECEIVE_TIMEOUT, Gateway


@pytest.fixture(scope="session")
def gateway_url():
    url = os.environ.get("CARROT_GATEWAY_URL")
    if not url:
        pytest.fail(
            "CARROT_GATEWAY_URL is not set: run .ci/interop, or start carrot-gateway and "
            "set CARROT_GATEWAY_URL to its base URL, e.g. http://127.0.0.1:8080"
        )
    response = requests.get(url.rstrip("/") + "/readyz", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, f"gateway at {url} is not ready: {response.text}"
    return url


@pytest.fixture(scope="session")
def http_session():
    with requests.Session() as session:
        yield session


@pytest.fixture
def gateway(gateway_url, http_session):
    api = Gateway(gateway_url, http_session)
    yield api
    problems = api.cleanup()
    assert not problems, "cleanup failed: " + "; ".join(problems)


@pytest.fixture
def amqp():
    """A kombu connection to the broker behind the gateway, connected with a deadline."""
    connection = Connection(AMQP_URL, connect_timeout=RECEIVE_TIMEOUT)
    connection.ensure_connection(max_retries=3, timeout=RECEIVE_TIMEOUT)
    try:
        yield connection
    finally:
        connection.release()
