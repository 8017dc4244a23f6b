"""The gateway under test as a child process, and a small keep-alive HTTP client for its API."""

import http.client
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import quote

from ports import free_port
from waits import wait_until

#: Seconds a gateway gets to become ready after it starts.
READY_DEADLINE = 60
#: Seconds a gateway gets to exit after SIGTERM before it is killed.
STOP_DEADLINE = 30
#: Seconds one HTTP request may take; above the gateway's broker timeout (10 s), so that a
#: publish gets the gateway's own answer.
HTTP_TIMEOUT = 30


class TransportError(Exception):
    """The connection failed before a whole answer arrived: the outcome is unknown."""


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    @property
    def ok(self):
        return 200 <= self.status < 300

    def json(self):
        return json.loads(self.body)

    @property
    def problem(self):
        """The problem+json body of an error answer (empty when there is none)."""
        if self.ok or not self.body:
            return {}
        try:
            return self.json()
        except ValueError:
            return {}

    @property
    def label(self):
        """Status and problem code, e.g. `503 broker_unavailable`."""
        return f"{self.status} {self.problem.get('code', '')}".strip()


class Http:
    """One keep-alive HTTP/1.1 connection to a gateway, opened again after a failure."""

    def __init__(self, port, timeout=HTTP_TIMEOUT):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        try:
            self.connection.request(method, path, body=body, headers=headers or {})
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.connection.close()
            raise TransportError(f"{type(error).__name__}: {error}") from error
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def close(self):
        self.connection.close()


def name(text):
    """A name as a path segment."""
    return quote(text, safe="")


def declare_queue(http, queue, quorum=False):
    spec = {"durable": True}
    if quorum:
        spec["arguments"] = {"x-queue-type": "quorum"}
    answer = http.request("PUT", f"/queues/{name(queue)}", json.dumps(spec),
                          {"content-type": "application/json"})
    if not answer.ok:
        raise RuntimeError(f"declaring queue {queue}: {answer.label} {answer.body!r}")


def publish_path(exchange, routing_key, message_id):
    return (f"/exchanges/{name(exchange)}/messages"
            f"?routing_key={name(routing_key)}&message_id={name(message_id)}")


def publish(http, queue, message_id):
    """Publishes `message_id` (as its property and its body) to `queue` by the default exchange."""
    return http.request("POST", publish_path("amq.default", queue, message_id),
                        message_id.encode(), {"content-type": "text/plain"})


def retry_after(answer):
    """Seconds a 503 asks to wait (at least one)."""
    try:
        return max(1, int(answer.headers.get("retry-after", "1")))
    except ValueError:
        return 1


def help_flags(binary):
    """The long flags that `binary --help` lists."""
    text = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30).stdout
    return {word.rstrip(",") for word in text.split() if word.startswith("--")}


def parse_metrics(text):
    """Prometheus text as {`name{labels}`: value}."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def metric_text(values, metric):
    """One metric's series as `{labels} value, ...`, or a note that the gateway has none."""
    series = [f"{key.removeprefix(metric)} {value:g}".strip() for key, value in values.items()
              if key == metric or key.startswith(metric + "{")]
    return ", ".join(series) or "not exported by this binary"


class Gateway:
    """The release binary, started on a free port against the script's own broker node."""

    def __init__(self, binary, amqp_url, log_path, args=(), nofile=None):
        self.binary = binary
        self.amqp_url = amqp_url
        self.log_path = log_path
        self.args = list(args)
        self.nofile = nofile
        self.process = None
        self.port = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *_):
        self.stop()

    def command(self):
        limit = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--"] if self.nofile else []
        return [*limit, self.binary, "--listen", f"127.0.0.1:{self.port}",
                "--amqp-url", self.amqp_url, *self.args]

    def start(self):
        """Starts the gateway and waits until it is ready; another port if its port was taken."""
        # Only the flags given here configure it: no CARROT_* variable of the caller leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARROT_")}
        env["NO_COLOR"] = "1"
        for _ in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command(), stdout=log,
                                                stderr=subprocess.STDOUT, env=env)
            if wait_until(lambda: self.readyz() == 200 or not self.running(), READY_DEADLINE) is None:
                self.stop()
                raise RuntimeError(f"gateway not ready within {READY_DEADLINE} s; see {self.log_path}")
            if self.running():
                return
            if "in use" not in self.log_tail():
                raise RuntimeError(f"gateway exited at start: {self.log_tail()}")
        raise RuntimeError("no free port for the gateway after 3 tries")

    def running(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines=5):
        with open(self.log_path, errors="replace") as log:
            return " | ".join(log.read().splitlines()[-lines:])

    def get(self, path, timeout=2):
        """One request on a connection of its own; None when nothing answered."""
        http = Http(self.port, timeout)
        try:
            return http.request("GET", path)
        except TransportError:
            return None
        finally:
            http.close()

    def readyz(self):
        answer = self.get("/readyz")
        return answer.status if answer else 0

    def metrics(self):
        answer = self.get("/metrics", timeout=10)
        return parse_metrics(answer.body.decode()) if answer and answer.ok else {}

    def proc_status(self, field):
        """A field of /proc/<pid>/status in KiB (VmRSS, VmHWM), or None once the process is gone."""
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def open_files(self):
        try:
            return len(os.listdir(f"/proc/{self.process.pid}/fd"))
        except OSError:
            return None

    def signal(self, signum):
        self.process.send_signal(signum)

    def wait_exit(self, deadline):
        """Seconds until the process exited, or None if it still runs after `deadline` seconds."""
        start = time.monotonic()
        try:
            self.process.wait(deadline)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - start

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited within STOP_DEADLINE."""
        if not self.running():
            return
        self.signal(signal.SIGTERM)
        if self.wait_exit(STOP_DEADLINE) is None:
            self.signal(signal.SIGKILL)
            self.process.wait(STOP_DEADLINE)
