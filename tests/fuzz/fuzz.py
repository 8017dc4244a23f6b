"""Driver of the fuzz run: schemathesis against a running gateway, then the run's own checks.

tests/fuzz/run starts the gateway and calls this with its URL. It

1. scrapes /metrics, starts a loopback sink for push subscriptions,
2. runs schemathesis on the document the gateway serves (URL/openapi.json) with tests/fuzz/schemathesis.toml and the hooks and
   checks of tests/fuzz/hooks.py (names prefixed per run, resources recorded, problem+json and
   5xx checks),
3. scrapes /metrics again and compares the broker counters,
4. deletes, through the gateway, every queue, exchange, consumer set and subscription the run
   created,
5. prints a summary (requests, failures per check, causes with an example, metric deltas) and
   exits 1 if anything failed: a check, too few requests, an operation never exercised, a
   broker counter that rose.

`fuzz.py --finish WORK_DIR STATUS`, once the gateway has stopped, asks rabbitmqctl (when there
is one) whether anything with the run's prefix is left in the broker, and prints the verdict.
"""

from __future__ import annotations

import argparse
import base64
import collections
import glob
import http.server as httpserver
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))

# The response checks of the run (see the README of tests/fuzz/run): schemathesis' own, and the
# two of hooks.py. `not_a_server_error` is replaced by `server_error_policy`, which allows a
# 503/504 only while /readyz says the broker is unavailable.
CHECKS = [
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "problem_json_errors",
    "server_error_policy",
]

COUNTERS = {
    "reconnects": "carrot_broker_reconnects_total",
    "connections_lost": "carrot_broker_connections_lost_total",
    "channels_closed": "carrot_broker_channels_closed_total",
}
# Channel closes that ordinary client errors cause (a passive declare of something missing, a
# redeclare with other settings, a reserved name, an exclusive queue in use).
EXPECTED_CLOSE_REASONS = {"NOT_FOUND", "PRECONDITION_FAILED", "ACCESS_REFUSED", "RESOURCE_LOCKED"}
# The label may be the bare reply name or carry words around it ("AMQP soft error: NOT_FOUND").
REPLY_NAME = re.compile(r"\b[A-Z][A-Z_]{2,}\b")


def expected_close(reason: str) -> bool:
    names = REPLY_NAME.findall(reason)
    return bool(names) and names[-1] in EXPECTED_CLOSE_REASONS


def log(message: str) -> None:
    print(f"fuzz: {message}", file=sys.stderr, flush=True)


# --- the gateway over HTTP ----------------------------------------------------------------------


def http(method: str, url: str, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> dict[str, dict[tuple, float]] | None:
    status, body = http("GET", url + "/metrics")
    if status != 200:
        return None
    samples: dict[str, dict[tuple, float]] = collections.defaultdict(dict)
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("# TYPE "):
            # A labelled counter has no sample until it first counts: declared, so 0.
            samples.setdefault(line.split()[2], {})
            continue
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if not match:
            continue
        name, _, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples[name][tuple(sorted(LABEL.findall(labels or "")))] = number
    return samples


def counter_deltas(before, after) -> tuple[list[str], list[str]]:
    """Lines describing the broker counters' deltas, and the failures among them."""
    lines: list[str] = []
    failures: list[str] = []
    for key, name in COUNTERS.items():
        if name not in before and name not in after:
            lines.append(f"{name}: absent from /metrics (treated as 0)")
            continue
        old = before.get(name, {})
        new = after.get(name, {})
        if key != "channels_closed":
            delta = sum(new.values()) - sum(old.values())
            lines.append(f"{name}: +{delta:g}")
            if delta > 0:
                failures.append(f"{name} rose by {delta:g}")
            continue
        by_reason: collections.Counter[str] = collections.Counter()
        for labels in set(old) | set(new):
            reason = dict(labels).get("reason", "(no reason label)")
            by_reason[reason] += new.get(labels, 0) - old.get(labels, 0)
        rose = {reason: delta for reason, delta in sorted(by_reason.items()) if delta}
        shown = ", ".join(f"{reason} +{delta:g}" for reason, delta in rose.items()) or "+0"
        lines.append(f"{name}: {shown}")
        for reason, delta in rose.items():
            if not expected_close(reason) and delta > 0:
                failures.append(f"{name}{{reason={reason!r}}} rose by {delta:g}")
    return lines, failures


# --- the sink that push subscriptions deliver to -----------------------------------------------


class Sink(httpserver.BaseHTTPRequestHandler):
    deliveries = 0
    lock = threading.Lock()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with Sink.lock:
            Sink.deliveries += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_GET = _answer

    def log_message(self, *args: Any) -> None:
        pass


def start_sink() -> tuple[httpserver.ThreadingHTTPServer, str]:
    server = httpserver.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sink", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/fuzz-sink"


# --- cleanup ------------------------------------------------------------------------------------


def read_resources(state_dir: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = collections.defaultdict(list)
    path = os.path.join(state_dir, "resources.jsonl")
    if not os.path.exists(path):
        return found
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            if isinstance(entry.get("value"), str) and entry["value"] not in found[entry["kind"]]:
                found[entry["kind"]].append(entry["value"])
    return found


def cleanup(url: str, resources: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Deletes what the run created. Returns what was done and what failed."""
    done: list[str] = []
    failed: list[str] = []
    # Path values of queues and exchanges were recorded percent-encoded, as sent.
    plan = [
        ("consumer", lambda v: "/consumers/" + urllib.parse.quote(v, safe=""), (204, 404)),
        ("subscription", lambda v: "/subscriptions/" + urllib.parse.quote(v, safe=""), (204, 404)),
        ("queue", lambda v: "/queues/" + v, (200, 404)),
        ("queue?", lambda v: "/queues/" + v, (200, 400, 404)),
        ("exchange", lambda v: "/exchanges/" + v, (204, 404)),
    ]
    for kind, path_of, fine in plan:
        deleted = 0
        for value in resources.get(kind, []):
            status, body = http("DELETE", url + path_of(value))
            if status == 409 and b"RESOURCE_LOCKED" in body:
                # Exclusive to another of the gateway's connections: it goes when the gateway
                # stops, and `--finish` checks that it did.
                done.append(f"DELETE {path_of(value)[:60]}… -> 409 RESOURCE_LOCKED (exclusive queue)")
            elif status not in fine:
                failed.append(f"DELETE {path_of(value)} -> {status} {body[:200]!r}")
            elif status != 404 and status != 400:
                deleted += 1
        if resources.get(kind):
            done.append(f"{kind.rstrip('?')}s{' (failed declares)' if kind.endswith('?') else ''}: "
                        f"{deleted} deleted of {len(resources[kind])} recorded")
    return done, failed


def rabbitmqctl_names(what: str) -> list[str] | None:
    tool = shutil.which("rabbitmqctl") or ("/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None)
    if tool is None:
        return None
    try:
        result = subprocess.run(
            [tool, "-q", what, "-p", "/", "name"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return [line.strip() for line in result.stdout.splitlines()]


def leftovers(prefix: str) -> list[str] | None:
    queues = rabbitmqctl_names("list_queues")
    exchanges = rabbitmqctl_names("list_exchanges")
    if queues is None or exchanges is None:
        return None
    return [f"queue {n}" for n in queues if n.startswith(prefix)] + [
        f"exchange {n}" for n in exchanges if n.startswith(prefix)
    ]


# --- the report ---------------------------------------------------------------------------------


def _text(content: Any, limit: int = 300) -> str:
    if content is None:
        return ""
    if isinstance(content, dict) and "$base64" in content:
        raw = base64.b64decode(content["$base64"])
    elif isinstance(content, str):
        raw = content.encode()
    else:
        raw = json.dumps(content).encode()
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= limit else text[:limit] + "…"


def _cause(check: str, failure: dict) -> str:
    """A key grouping failures of one cause: the check, the kind, and the message's gist."""
    message = failure.get("message", "") or ""
    title = failure.get("title", "")
    if check == "response_schema_conformance":
        where = re.search(r"Schema at (\S+?):?\n", message)
        status = re.search(r"status code (\d+)", message)
        first = message.split("\n", 1)[0]
        gist = re.sub(r"^.* is (not valid|not of type|a required property|too)", r"… is \1", first)
        gist = re.sub(r"'[^']{30,}'", "'…'", gist)
        return f"{title} ({status.group(1) if status else '?'}): {gist} [{where.group(1) if where else '?'}]"
    if check == "status_code_conformance":
        received = re.search(r"Received: (\d+)", message)
        documented = re.search(r"Documented: (.*)", message)
        return f"{title}: {received.group(1) if received else '?'} (documented {documented.group(1) if documented else '?'})"
    if check == "negative_data_rejection":
        component = re.search(r"Invalid component: (.*)", message)
        gist = component.group(1) if component else message.split("\n", 1)[0]
        gist = re.sub(r"`[^`]{20,}`", "`…`", gist)
        return f"{title}: {gist}"
    first = message.split("\n", 1)[0]
    first = re.sub(r"'[^']{40,}'", "'…'", first)
    return f"{title}: {first}" if title and title not in first else first


def read_ndjson(path: str, log_text: str = "") -> dict[str, Any]:
    interactions = 0
    check_failures: collections.Counter[str] = collections.Counter()
    causes: dict[tuple[str, str, str], dict[str, Any]] = {}
    errors: list[str] = []
    fuzzer_faults: list[str] = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line)
            (kind, body), = event.items()
            if kind == "NonFatalError" or kind == "FatalError":
                if _fuzzers_own_fault(body, log_text):
                    fuzzer_faults.append(f"{kind}: {json.dumps(body)[:400]}")
                else:
                    errors.append(f"{kind}: {json.dumps(body)[:400]}")
                continue
            if kind != "ScenarioFinished":
                continue
            recorder = body.get("recorder") or {}
            label = recorder.get("label", "?")
            calls = recorder.get("interactions") or {}
            interactions += len(calls)
            for case_id, results in (recorder.get("checks") or {}).items():
                for result in results:
                    if result.get("status") != "failure":
                        continue
                    failure = (result.get("failure_info") or {}).get("failure") or {}
                    name = result.get("name", "?")
                    if _mislabelled_negative(name, failure):
                        fuzzer_faults.append(f"{name} on a case it calls positive: "
                                             f"{json.dumps(calls.get(case_id))[:400]}")
                        continue
                    check_failures[name] += 1
                    operation = failure.get("operation") or label
                    key = (name, operation, _cause(name, failure))
                    entry = causes.setdefault(key, {"count": 0, "case": case_id, "interaction": calls.get(case_id),
                                                    "message": failure.get("message", "")})
                    entry["count"] += 1
    return {"interactions": interactions, "check_failures": check_failures, "causes": causes, "errors": errors,
            "fuzzer_faults": fuzzer_faults}


#: Errors raised inside the fuzzer itself while it builds test cases, with no request sent:
#: CPython's `ast` module can trip over its own recursion counter when schemathesis compiles
#: patterns in worker threads. Reported, not held against the gateway.
FUZZER_FAULTS = ("AST constructor recursion depth mismatch",)


def _mislabelled_negative(name: str, failure: dict[str, Any]) -> bool:
    """A "schema-violating request accepted" whose invalid component schemathesis itself names
    as the positive test case: no part of the request was invalid. It happens when the hooks'
    renaming (which schemathesis re-checks) turned a generated negative case into a valid one;
    the gateway was right to accept it."""
    return name == "negative_data_rejection" and "Invalid component: positive test case" in (
        failure.get("message") or ""
    )


def _fuzzers_own_fault(body: dict[str, Any], log_text: str) -> bool:
    value = body.get("value") or {}
    if value.get("type") == "SystemError":
        return any(fault in value.get("message", "") for fault in FUZZER_FAULTS)
    # Hypothesis calls a draw that failed once and not on replay flaky; the same fault inside
    # its own case generation surfaces that way. Only when the log's traceback for that
    # operation runs through case generation, i.e. no request was involved.
    if value.get("type") == "FlakyFailure":
        return _generation_traceback(log_text, body.get("label", ""))
    return False


def _generation_traceback(log_text: str, label: str) -> bool:
    """The error section of `label` in schemathesis's output raised while generating cases."""
    header = re.search(r"^_+ " + re.escape(label) + r" _+$", log_text, re.MULTILINE)
    if not header:
        return False
    section = log_text[header.end():]
    following = re.search(r"^_{5,} .* _{5,}$|^={5,}", section, re.MULTILINE)
    section = section[: following.start()] if following else section
    return "schemathesis/generation/hypothesis/examples.py" in section and any(
        marker in section for marker in ("hypothesis/internal/lambda_sources.py", *FUZZER_FAULTS)
    )


def describe(entry: dict[str, Any]) -> str:
    interaction = entry.get("interaction") or {}
    request = interaction.get("request") or {}
    response = interaction.get("response") or {}
    lines = [f"    request:  {request.get('method', '?')} {request.get('uri', '?')}"]
    headers = request.get("headers") or {}
    content_type = headers.get("Content-Type") or headers.get("content-type")
    if content_type:
        lines[-1] += f"  [Content-Type: {content_type[0] if isinstance(content_type, list) else content_type}]"
    if request.get("body") is not None:
        lines.append(f"    body:     {_text(request.get('body'), 200)}")
    if response:
        ctype = (response.get("headers") or {}).get("content-type", ["-"])[0]
        lines.append(f"    answer:   {response.get('status_code')} [{ctype}] {_text(response.get('content'), 240)}")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the running gateway")
    parser.add_argument("--schemathesis", required=True, help="the schemathesis executable")
    parser.add_argument("--work-dir", required=True, help="reports and state go here")
    parser.add_argument("--max-examples", type=int, required=True)
    parser.add_argument("--budget", type=int, help="seconds schemathesis may run (its --max-time)")
    parser.add_argument("--min-requests", type=int, default=0)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--seed")
    args = parser.parse_args()

    url = args.url.rstrip("/")
    schemathesis = os.path.abspath(args.schemathesis)
    work = os.path.abspath(args.work_dir)
    state_dir = os.path.join(work, "state")
    report_dir = os.path.join(work, "report")
    for folder in (state_dir, report_dir):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    prefix = f"fuzz-{secrets.token_hex(4)}."

    status, document = http("GET", url + "/openapi.json")
    if status != 200:
        log(f"GET {url}/openapi.json answered {status}")
        return 1
    spec = json.loads(document)
    # Schemathesis leaves out the operation that serves the document it loads from a URL: it
    # reads the same document, as served, from a file, so that GET /openapi.json is fuzzed too.
    document_path = os.path.join(work, "openapi.json")
    with open(document_path, "wb") as out:
        out.write(document)
    operations = sorted(
        f"{method.upper()} {path}"
        for path, item in spec.get("paths", {}).items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace")
    )

    sink, sink_url = start_sink()
    before = scrape(url)
    if before is None:
        log("GET /metrics failed before the run")
        return 1

    command = [
        schemathesis,
        "--config-file", os.path.join(HERE, "schemathesis.toml"),
        "run", document_path,
        "--url", url,
        "--checks", ",".join(CHECKS),
        "--max-examples", str(args.max_examples),
        "--workers", str(args.workers),
        "--continue-on-failure",
        "--report", "ndjson,json",
        "--report-dir", report_dir,
        "--no-color",
    ]
    if args.budget:
        command += ["--max-time", str(args.budget)]
    if args.seed:
        command += ["--seed", str(args.seed)]
    env = dict(os.environ)
    env.update(
        SCHEMATHESIS_HOOKS=os.path.join(HERE, "hooks.py"),
        FUZZ_PREFIX=prefix,
        FUZZ_SINK_URL=sink_url,
        FUZZ_STATE_DIR=state_dir,
        FUZZ_GATEWAY_URL=url,
        FUZZ_POOL="1",
        FUZZ_SEED=str(args.seed or prefix),
        PYTHONDONTWRITEBYTECODE="1",
    )
    log(f"schemathesis against {url} (names prefixed {prefix!r}; output: {work}/schemathesis.log)")
    started = time.monotonic()
    # Hypothesis' and schemathesis' caches go to the work dir, not the repository.
    with open(os.path.join(work, "schemathesis.log"), "w", encoding="utf-8") as output:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            exit_code = process.wait(timeout=(args.budget + 60) if args.budget else 3 * 3600)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            exit_code = -9
            log("schemathesis overran its time and was killed")
    elapsed = time.monotonic() - started

    after = scrape(url)
    problems: list[str] = []
    if exit_code not in (0, 1):
        problems.append(f"schemathesis exited {exit_code} (see {work}/schemathesis.log)")

    # Requests, per operation.
    counts: collections.Counter[str] = collections.Counter()
    network_errors: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    for path in glob.glob(os.path.join(state_dir, "counts-*.json")):
        with open(path, encoding="utf-8") as data:
            numbers = json.load(data)
        counts.update(numbers.get("requests", {}))
        network_errors.update(numbers.get("network_errors", {}))
        statuses.update(numbers.get("statuses", {}))
    total = sum(counts.values())
    documented = sum(counts[operation] for operation in operations)
    unexercised = [operation for operation in operations if counts[operation] == 0]
    if unexercised:
        problems.append(f"operations never exercised: {', '.join(unexercised)}")
    if total < args.min_requests:
        problems.append(f"only {total} requests, fewer than the {args.min_requests} wanted")
    if network_errors:
        problems.append(f"network errors (timeouts, refused): {dict(network_errors)}")

    # Checks.
    reports = sorted(glob.glob(os.path.join(report_dir, "ndjson-*.ndjson")))
    with open(os.path.join(work, "schemathesis.log"), encoding="utf-8", errors="replace") as output:
        log_text = output.read()
    results = read_ndjson(reports[-1], log_text) if reports else None
    if results is None:
        problems.append("schemathesis wrote no NDJSON report")
        results = {"interactions": 0, "check_failures": collections.Counter(), "causes": {}, "errors": [],
                   "fuzzer_faults": []}
    problems.extend(results["errors"])
    for fault in results["fuzzer_faults"]:
        print(f"fuzzer's own fault (not the gateway's): {fault}")
    failing = sum(results["check_failures"].values())
    if exit_code == 1 and not failing and not results["errors"] and not results["fuzzer_faults"]:
        problems.append("schemathesis reported failures that the NDJSON report does not show")

    # Broker counters.
    if after is None:
        problems.append("GET /metrics failed after the run")
        metric_lines = ["(no scrape after the run)"]
    else:
        metric_lines, metric_failures = counter_deltas(before, after)
        problems.extend(metric_failures)

    # Cleanup.
    resources = read_resources(state_dir)
    done, failed = cleanup(url, resources)
    problems.extend(f"cleanup: {line}" for line in failed)
    # Exclusive queues belong to one of the gateway's connections and go with it: what is left
    # is looked for once the gateway has stopped (`--finish`, called by tests/fuzz/run).
    with open(os.path.join(state_dir, "prefix"), "w", encoding="utf-8") as out:
        out.write(prefix)
    sink.shutdown()

    # Causes, fullest first, into a file and (briefly) on the terminal.
    causes = sorted(results["causes"].items(), key=lambda item: (-item[1]["count"], item[0]))
    with open(os.path.join(work, "failures.txt"), "w", encoding="utf-8") as out:
        for (check, operation, cause), entry in causes:
            out.write(f"[{entry['count']}x] {check} | {operation} | {cause}\n{describe(entry)}\n\n")

    print()
    print("== fuzz summary")
    print(f"schemathesis: {elapsed:.0f} s, exit {exit_code}; report: {work}")
    print(
        f"requests: {total} ({documented} to documented operations, {total - documented} probes of other "
        f"methods); by status: {dict(sorted(statuses.items()))}; recorded in the report: "
        f"{results['interactions']}"
    )
    fewest = sorted((counts[operation], operation) for operation in operations)[:3]
    print(f"operations: {len(operations) - len(unexercised)}/{len(operations)} exercised; fewest requests: "
          + ", ".join(f"{operation} {n}" for n, operation in fewest))
    print(f"push deliveries to the sink: {Sink.deliveries}")
    print("failures per check (responses):")
    for check in CHECKS:
        print(f"  {check}: {results['check_failures'].get(check, 0)}")
    for check, n in results["check_failures"].items():
        if check not in CHECKS:
            print(f"  {check}: {n}")
    print(f"distinct causes: {len(causes)} (each with an example in {work}/failures.txt)")
    for (check, operation, cause), entry in causes[:40]:
        print(f"  [{entry['count']}x] {check} | {operation} | {cause[:160]}")
    if len(causes) > 40:
        print(f"  … and {len(causes) - 40} more in failures.txt")
    print("broker counters (after - before):")
    for line in metric_lines:
        print(f"  {line}")
    print("cleanup: " + ("; ".join(done) or "nothing to delete"))
    for problem in problems:
        print(f"FAIL: {problem}")
    return 0 if not failing and not problems else 1


def finish(work_dir: str, status: int) -> int:
    """After the gateway stopped: is anything of the run left in the broker? Then the verdict."""
    path = os.path.join(os.path.abspath(work_dir), "state", "prefix")
    prefix = open(path, encoding="utf-8").read().strip() if os.path.exists(path) else None
    if prefix:
        # The broker drops a closed connection's exclusive queues at once; give it a moment.
        time.sleep(1)
        left = leftovers(prefix)
        if left is None:
            print("leftovers: not checked (no usable rabbitmqctl)")
        else:
            print(f"leftovers in the broker with prefix {prefix!r} after the gateway stopped: {len(left)}")
            for name in left[:10]:
                print(f"  {name}")
            if left:
                print("FAIL: the run left resources in the broker")
                status = 1
    print(f"fuzz: {'1 passed, 0 failed' if status == 0 else '0 passed, 1 failed'}")
    return status


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--finish":
        sys.exit(finish(sys.argv[2], int(sys.argv[3])))
    sys.exit(main())
