"""Schemathesis hooks and checks of the fuzz run (tests/fuzz/run loads them via SCHEMATHESIS_HOOKS).

- Names that reach the shared broker (queues, exchanges, routing keys of the default exchange)
  get the run's prefix (FUZZ_PREFIX), so runs do not collide with each other or with other tests.
- Subscription URLs that could deliver anywhere are pointed at the run's loopback sink
  (FUZZ_SINK_URL): the gateway must never push to an address off this machine.
- Every request is counted per operation, and every queue, exchange, consumer set and
  subscription the gateway reports as created is recorded in FUZZ_STATE_DIR, so that the driver
  (fuzz.py) can delete them afterwards and check the run's size.
- Two checks of the gateway's contract that schemathesis lacks: the error format
  (application/problem+json with type, title, status, detail, code) and the 5xx policy (only
  503/504, and only while /readyz says the broker is unavailable).
"""

from __future__ import annotations

import atexit
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from typing import Any

import schemathesis

PREFIX = os.environ.get("FUZZ_PREFIX", "fuzz.")
SINK_URL = os.environ.get("FUZZ_SINK_URL", "http://127.0.0.1:9/")
STATE_DIR = os.environ.get("FUZZ_STATE_DIR", "")
GATEWAY_URL = os.environ.get("FUZZ_GATEWAY_URL", "").rstrip("/")

# AMQP shortstr: names are at most 255 bytes.
MAX_NAME_BYTES = 255

_lock = threading.Lock()
_requests: Counter[str] = Counter()
_network_errors: Counter[str] = Counter()
_statuses: Counter[str] = Counter()


# --- names --------------------------------------------------------------------------------------


def prefixed(name: Any, *, encoded: bool = False) -> Any:
    """The run's version of a broker name; names the prefix would change the meaning of stay.

    Empty names, reserved `amq.*` names (the gateway must refuse to declare or delete them, and
    `amq.default` is the default exchange), names already carrying the prefix (values that the
    stateful phase took from earlier responses) and names the prefix would push over 255 bytes
    (the gateway must refuse them either way) are sent as generated. `encoded`: the value is a
    path segment, already percent-encoded by schemathesis.
    """
    if not isinstance(name, str) or name == "" or name.startswith(PREFIX):
        return name
    try:
        raw = urllib.parse.unquote_to_bytes(name) if encoded else name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not UTF-8 at all, leave them to the gateway
        return name
    if raw.startswith(b"amq.") or len(PREFIX.encode("utf-8")) + len(raw) > MAX_NAME_BYTES:
        return name
    return PREFIX + name


def _looks_deliverable(url: str) -> bool:
    """Whether a WHATWG URL parser (reqwest's) could read `url` as an http(s) URL.

    The parser strips leading/trailing C0 controls and spaces, drops tabs and newlines anywhere
    and matches the scheme case-insensitively; anything else is refused by the gateway (it
    wants an absolute http:// or https:// URL), so such values are left as generated.
    """
    cleaned = url.strip("".join(chr(c) for c in range(0x21)))
    cleaned = cleaned.replace("\t", "").replace("\n", "").replace("\r", "").lower()
    return cleaned.startswith("http:") or cleaned.startswith("https:")


def _safe_url(url: Any) -> Any:
    if isinstance(url, str) and _looks_deliverable(url):
        return SINK_URL
    return url


def _rename_body(operation: str, body: Any) -> None:
    if not isinstance(body, dict):
        return
    if operation in ("PUT /queues/{queue}",) and isinstance(body.get("bindings"), list):
        for binding in body["bindings"]:
            if isinstance(binding, dict) and "exchange" in binding:
                binding["exchange"] = prefixed(binding["exchange"])
    elif operation in ("POST /queues/{queue}/bindings", "DELETE /queues/{queue}/bindings"):
        if "exchange" in body:
            body["exchange"] = prefixed(body["exchange"])
    elif operation == "POST /consumers":
        if isinstance(body.get("queues"), list):
            body["queues"] = [prefixed(queue) for queue in body["queues"]]
    elif operation == "POST /subscriptions":
        if "queue" in body:
            body["queue"] = prefixed(body["queue"])
        if "url" in body:
            body["url"] = _safe_url(body["url"])
    elif operation == "POST /exchanges/{exchange}/messages":
        # Batch mode: routing keys name queues on the default exchange.
        if isinstance(body.get("messages"), list):
            for message in body["messages"]:
                if isinstance(message, dict) and "routing_key" in message:
                    message["routing_key"] = prefixed(message["routing_key"])


@schemathesis.hook
def before_call(context, case, kwargs):
    operation = f"{case.method.upper()} {case.operation.path}"
    _redirect_to_pool(operation, case)
    _use_known_words(operation, case)
    params = case.path_parameters
    if params:
        for key in ("queue", "exchange"):
            if key in params:
                params[key] = prefixed(params[key], encoded=True)
    if operation == "POST /exchanges/{exchange}/messages":
        exchange = urllib.parse.unquote(str((params or {}).get("exchange")))
        query = case.query
        if exchange == "amq.default" and isinstance(query, dict) and "routing_key" in query:
            query["routing_key"] = prefixed(query["routing_key"])
        if exchange == "amq.default":
            _rename_body(operation, case.body)
        _bound_reply_wait(case)
    else:
        # For POST /subscriptions this also points the URL at the sink: subscriptions are the
        # one way a request makes the gateway send traffic elsewhere. (Edits are in place;
        # schemathesis notices them and re-derives which parts of the request are still invalid.)
        _rename_body(operation, case.body)


def _bound_reply_wait(case) -> None:
    """A request with reply=wait that a queue takes waits its whole timeout for a reply nobody
    sends: keep that to a second, so it neither outlasts the request timeout nor eats the budget."""
    query = case.query
    if not isinstance(query, dict) or query.get("reply") != "wait" or not _generated_valid(case, "query"):
        return
    query["timeout"] = "1"


# --- a pool of live resources -------------------------------------------------------------------
#
# Random names and ids almost always answer 404, so on their own the fuzzer would never see a
# leased message, a consumer set or a subscription. With FUZZ_POOL=1 this module keeps a few real
# ones alive (a queue with messages and leased receipts, an exchange, two consumer sets, a
# subscription delivering to the sink) and sends a share of the requests whose path parameters
# were generated as valid to them instead. Operations that would destroy a pool resource
# (DELETE of the queue, exchange, consumer set or subscription itself) are never redirected.

POOL_ENABLED = os.environ.get("FUZZ_POOL") == "1" and bool(GATEWAY_URL)
POOL_QUEUE = PREFIX + "pool.q"  # messages to get, lease, settle, purge, stream
POOL_CONSUMED = PREFIX + "pool.c"  # the consumer sets' queue
POOL_PUSHED = PREFIX + "pool.s"  # the subscription's queue
POOL_EXCHANGE = PREFIX + "pool.x"
POOL_SUBSCRIPTION = PREFIX + "pool.sub"
_pool: dict[str, Any] = {"consumer": None, "spare_consumer": None, "receipts": [], "ready": False}
_random = random.Random(os.environ.get("FUZZ_SEED", "0"))


def _gateway(method: str, path: str, body: Any = None, content_type: str = "application/json"):
    data = None
    headers = {}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    request = urllib.request.Request(GATEWAY_URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _pool_setup() -> None:
    """Declares the pool's resources, and again whatever the fuzzer has deleted meanwhile."""
    for queue in (POOL_QUEUE, POOL_CONSUMED, POOL_PUSHED):
        if _gateway("GET", f"/queues/{_q(queue)}")[0] == 404:
            _gateway("PUT", f"/queues/{_q(queue)}", {"durable": False})
            _record("queue", _q(queue))
    if _gateway("GET", f"/exchanges/{_q(POOL_EXCHANGE)}")[0] == 404:
        _gateway("PUT", f"/exchanges/{_q(POOL_EXCHANGE)}", {"type": "topic", "durable": False})
        _record("exchange", _q(POOL_EXCHANGE))
        _gateway("POST", f"/queues/{_q(POOL_QUEUE)}/bindings", {"exchange": POOL_EXCHANGE, "routing_key": "#"})
    for key in ("consumer", "spare_consumer"):
        if _pool[key] and _gateway("GET", f"/consumers/{_q(_pool[key])}")[0] != 404:
            continue
        status, answer = _gateway("POST", "/consumers", {"queues": [POOL_CONSUMED], "prefetch": 2})
        if status == 201:
            _pool[key] = json.loads(answer)["id"]
            _record("consumer", _pool[key])
    if _gateway("GET", f"/subscriptions/{_q(POOL_SUBSCRIPTION)}")[0] == 404:
        status, _ = _gateway(
            "POST",
            "/subscriptions",
            {"name": POOL_SUBSCRIPTION, "queue": POOL_PUSHED, "url": SINK_URL, "max_attempts": 2},
        )
        if status in (200, 201):
            _record("subscription", POOL_SUBSCRIPTION)
    _pool["ready"] = True


def _fill(queue: str, at_least: int) -> None:
    status, answer = _gateway("GET", f"/queues/{_q(queue)}")
    if status == 404:
        _gateway("PUT", f"/queues/{_q(queue)}", {"durable": False})
        count = 0
    elif status == 200:
        count = json.loads(answer).get("message_count", 0)
    else:
        return
    for n in range(max(0, at_least - count)):
        body = {"n": n, "text": "pool message"} if n % 2 else b"\x00\xffbinary"
        content_type = "application/json" if n % 2 else "application/octet-stream"
        _gateway("POST", f"/exchanges/amq.default/messages?routing_key={_q(queue)}", body, content_type)


def _pool_keeper() -> None:
    while True:
        try:
            _pool_setup()
            _fill(POOL_QUEUE, 6)
            _fill(POOL_CONSUMED, 4)
            _fill(POOL_PUSHED, 1)
            with _lock:
                missing = 8 - len(_pool["receipts"])
            for _ in range(max(0, missing)):
                status, answer = _gateway("GET", f"/queues/{_q(POOL_QUEUE)}/next?lease=900")
                if status != 200:
                    break
                receipt = json.loads(answer).get("receipt")
                if receipt:
                    with _lock:
                        _pool["receipts"].append(receipt)
        except Exception:  # noqa: BLE001 - the keeper must outlive any odd answer
            pass
        time.sleep(1.0)


def _redirect_to_pool(operation: str, case) -> None:
    params = case.path_parameters
    if not POOL_ENABLED or not _pool["ready"] or not params or not _generated_valid(case, "path"):
        return
    method, path = operation.split(" ", 1)
    if method == "DELETE" and path in (
        "/queues/{queue}",
        "/exchanges/{exchange}",
        "/consumers/{id}",
        "/subscriptions/{name}",
    ):
        return
    roll = _random.random()
    if "receipt" in params:
        if roll < 0.5:
            with _lock:
                receipts = _pool["receipts"]
                if receipts:
                    # extend keeps the lease open; the others settle it
                    receipt = receipts[-1] if path.endswith("/extend") else receipts.pop()
                    params["queue"] = _q(POOL_QUEUE)
                    params["receipt"] = receipt
        return
    if path == "/consumers/{id}/queues/{queue}":
        if roll < 0.2 and _pool["spare_consumer"]:
            params["id"] = _pool["spare_consumer"]
            params["queue"] = _q(POOL_CONSUMED)
        return
    if "id" in params and path.startswith("/consumers/"):
        if roll < 0.5 and _pool["consumer"]:
            params["id"] = _pool["consumer"]
    elif "name" in params and path.startswith("/subscriptions/"):
        if roll < 0.5:
            params["name"] = _q(POOL_SUBSCRIPTION)
    elif "queue" in params:
        if roll < 0.4:
            params["queue"] = _q(POOL_QUEUE)
    elif "exchange" in params:
        if roll < 0.3:
            params["exchange"] = _q(POOL_EXCHANGE)


# --- values the gateway knows -------------------------------------------------------------------
#
# Several parameters are plain strings in the document whose valid values are words named only
# in descriptions (ack, format, delivery_mode, serializer, a subscription's format, an
# exchange's type). Random strings almost never hit them, so in part of the requests generated
# as valid those values are replaced by one of the words: the answers then cover the modes
# behind them (raw messages, auto-ack, yaml/msgpack, plugin exchange types, ...).

QUERY_WORDS = {
    "ack": ["lease", "auto"],
    "format": ["json", "raw"],
    "delivery_mode": ["1", "2", "transient", "persistent"],
    "serializer": ["json", "raw", "yaml", "msgpack", "pickle"],
}
BODY_WORDS = {
    "POST /consumers": {"ack": ["lease", "auto"]},
    "POST /subscriptions": {"format": ["raw", "envelope", "cloudevents", "cloudevents-structured"]},
    "PUT /exchanges/{exchange}": {"type": ["direct", "fanout", "topic", "headers", "x-fuzz-missing-plugin"]},
}


def _generated_valid(case, location: str) -> bool:
    meta = getattr(case, "_meta", None)
    if meta is None:
        return True
    for where, info in meta.components.items():
        if getattr(where, "name", str(where)).lower() == location:
            return not info.mode.is_negative
    return True


def _use_known_words(operation: str, case) -> None:
    query = case.query
    if isinstance(query, dict) and query and _generated_valid(case, "query"):
        for key, words in QUERY_WORDS.items():
            if isinstance(query.get(key), str) and _random.random() < 0.5:
                query[key] = _random.choice(words)
    body = case.body
    if isinstance(body, dict) and operation in BODY_WORDS and _generated_valid(case, "body"):
        for key, words in BODY_WORDS[operation].items():
            if isinstance(body.get(key), str) and _random.random() < 0.5:
                body[key] = _random.choice(words)


# --- bookkeeping --------------------------------------------------------------------------------


def _record(kind: str, value: Any) -> None:
    if not STATE_DIR:
        return
    line = json.dumps({"kind": kind, "value": value}, ensure_ascii=False)
    with _lock, open(os.path.join(STATE_DIR, "resources.jsonl"), "a", encoding="utf-8") as out:
        out.write(line + "\n")


def _json(response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, TypeError):
        return None


@schemathesis.hook
def after_call(context, case, response):
    operation = f"{case.method.upper()} {case.operation.path}"
    status = response.status_code
    with _lock:
        _requests[operation] += 1
        _statuses[f"{status // 100}xx"] += 1
    params = case.path_parameters or {}
    if 200 <= status < 300:
        if operation == "PUT /queues/{queue}":
            _record("queue", params.get("queue"))
        elif operation == "PUT /exchanges/{exchange}":
            _record("exchange", params.get("exchange"))
        elif operation == "POST /consumers":
            body = _json(response)
            if isinstance(body, dict) and "id" in body:
                _record("consumer", body["id"])
        elif operation == "POST /subscriptions":
            if isinstance(case.body, dict):
                _record("subscription", case.body.get("name"))
    elif operation in ("PUT /queues/{queue}", "POST /queues/{queue}/bindings") and status >= 400:
        # A failed declare may still leave a queue behind (a bug worth seeing): try it anyway.
        _record("queue?", params.get("queue"))


@schemathesis.hook
def after_network_error(context, case, request):
    operation = f"{case.method.upper()} {case.operation.path}"
    with _lock:
        _requests[operation] += 1
        _network_errors[operation] += 1


def _dump() -> None:
    if not STATE_DIR:
        return
    with _lock:
        data = {
            "requests": dict(_requests),
            "network_errors": dict(_network_errors),
            "statuses": dict(_statuses),
        }
    path = os.path.join(STATE_DIR, f"counts-{os.getpid()}.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump(data, out)


atexit.register(_dump)


# --- checks -------------------------------------------------------------------------------------

PROBLEM_FIELDS = ("type", "title", "status", "detail", "code")


def _header(response, name: str) -> str | None:
    values = response.headers.get(name.lower())
    if not values:
        return None
    return values[0]


def _problem_code(response) -> str:
    body = _json(response)
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return body["code"]
    return "-"


@schemathesis.check
def problem_json_errors(ctx, response, case):
    """Every 4xx/5xx answer is application/problem+json with type, title, status, detail, code."""
    status = response.status_code
    if status < 400:
        return None
    content_type = _header(response, "content-type")
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/problem+json":
        raise AssertionError(
            f"{status} answer has Content-Type {content_type!r}, not application/problem+json"
        )
    body = _json(response)
    if not isinstance(body, dict):
        raise AssertionError(f"{status} problem+json body is not a JSON object: {response.content[:200]!r}")
    missing = [field for field in PROBLEM_FIELDS if field not in body]
    if missing:
        raise AssertionError(f"{status} problem+json body lacks {', '.join(missing)}")
    if body.get("status") != status:
        raise AssertionError(f"problem+json status {body.get('status')!r} differs from the HTTP status {status}")
    return None


def _broker_unavailable() -> bool:
    """Whether /readyz says the broker is unavailable right now."""
    if not GATEWAY_URL:
        return False
    try:
        with urllib.request.urlopen(GATEWAY_URL + "/readyz", timeout=5) as answer:
            return answer.status == 503
    except urllib.error.HTTPError as error:
        return error.code == 503
    except OSError:
        return False


@schemathesis.check
def server_error_policy(ctx, response, case):
    """No 5xx except 503/504, and those only while /readyz says the broker is unavailable."""
    status = response.status_code
    if status < 500:
        return None
    code = _problem_code(response)
    if status == 504 and code == "reply_timeout":
        # A request that no responder answered: the answer the document promises, not a fault.
        return None
    if status in (503, 504):
        if _broker_unavailable():
            return None
        raise AssertionError(f"{status} ({code}) while /readyz says the broker is available")
    raise AssertionError(f"server error {status} ({code})")


# Last, once every function it uses is defined.
if POOL_ENABLED:
    threading.Thread(target=_pool_keeper, name="fuzz-pool", daemon=True).start()
