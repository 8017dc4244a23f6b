#!/usr/bin/env python3
"""Checks carrot-gateway's deployment files; run through .ci/check-deploy.

- Dockerfile: hadolint with no finding at all, plus a few facts hadolint does
  not know (Rust version vs Cargo.toml, non-root numeric user, port, build
  context allowed by .dockerignore), and a replay of its dependency stage
  (Cargo.toml + Cargo.lock with placeholder sources, `cargo metadata --locked`).
  No image is built: that needs a docker engine.
- helm/carrot-gateway: `helm lint --strict` with its default values and each
  ci/*-values.yaml; packaging; rendering in standalone mode (HPA, PDB and
  ServiceMonitor on), standalone with anonymous access, standalone with an
  existing Secret, standalone with TLS (HTTPS listener, amqps with a CA bundle
  and a client certificate from Secrets), sidecar mode (whose sidecarContainer template is checked
  inside a Pod), and the example chart helm/examples/app-with-sidecar that
  includes the sidecar templates. Every rendered object is validated against
  the Kubernetes JSON schemas (strict: unknown fields are errors) of the oldest
  and the newest Kubernetes version it targets, and the objects are checked
  against each other (selectors, ports, Secret and ConfigMap keys, probes,
  security context, grace periods).
- Values that must be refused (no auth on a public listener, ...) are refused.

Uses the Helm SDK (helm-python-sdk, no helm binary) and kubernetes-validate.
Prints one PASS/FAIL line per check and exits non-zero if any check failed.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import kubernetes_validate
import yaml
from kubernetes_validate.utils import VersionNotSupportedError

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "carrot-gateway"
EXAMPLE = ROOT / "helm" / "examples" / "app-with-sidecar"
RELEASE = "demo"
NAMESPACE = "messaging"

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion: ">=X.Y.Z-0") and
# the newest one kubernetes-validate has schemas for.
KUBE_MIN = re.search(
    r'^kubeVersion:\s*"?>=\s*([0-9]+\.[0-9]+\.[0-9]+)', (CHART / "Chart.yaml").read_text(), re.M
).group(1)  # type: ignore[union-attr]
KUBE_LATEST = kubernetes_validate.latest_version()

# Custom resources: Kubernetes has no built-in schema for them. They are
# allowed explicitly, and their structure is checked by check_service_monitor.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# Top-level keys of the gateway's config file (it rejects unknown keys).
GATEWAY_CONFIG_KEYS = {
    "listen", "amqp_url", "max_body_bytes", "exchanges", "queues", "consumers",
    "subscriptions", "auth", "amqp_tls", "tls",
}
# Variables naming TLS files the gateway reads at start (a missing file stops it).
GATEWAY_TLS_FILE_VARIABLES = (
    "CARROT_TLS_CERT", "CARROT_TLS_KEY", "CARROT_AMQP_CA_FILE",
    "CARROT_AMQP_CLIENT_CERT", "CARROT_AMQP_CLIENT_KEY",
)
GATEWAY_CONTAINER = "carrot-gateway"

# Markers of the sidecar snippet in NOTES.txt.
NOTES_CONTAINER = "# --- gateway container ---"
NOTES_VOLUMES = "# --- volumes ---"
NOTES_ANNOTATIONS = "# --- pod annotations"


class Report:
    """Counts and prints the outcome of each check."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"PASS {what}", flush=True)

    def fail(self, what: str, detail: str = "") -> None:
        self.failed += 1
        print(f"FAIL {what}", flush=True)
        for line in detail.strip().splitlines():
            print(f"       {line}", flush=True)

    def note(self, what: str) -> None:
        print(f"NOTE {what}", flush=True)

    def check(self, condition: bool, what: str, detail: str = "") -> bool:
        if condition:
            self.ok(what)
        else:
            self.fail(what, detail)
        return condition

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Captures what the native Helm library writes to file descriptor 2.

    `helm lint` does not report a template's `fail` as a finding: the library
    only logs it ("funcMap fail message=...") and goes on, so the log is read.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def load_values(path: Path) -> dict[str, Any]:
    return helm.values_from_yaml(path.read_text())


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------
# Dockerfile


def check_dockerfile(report: Report) -> None:
    report.section("Dockerfile")
    dockerfile = ROOT / "Dockerfile"
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        hadolint = Path(shutil.which("hadolint") or "hadolint")
    proc = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True, text=True, check=False,
    )
    report.check(
        proc.returncode == 0 and not proc.stdout.strip(),
        "hadolint Dockerfile: no findings (failure threshold: style)",
        proc.stdout + proc.stderr,
    )

    text = dockerfile.read_text()
    declared = re.search(r'^rust-version\s*=\s*"([0-9.]+)"', (ROOT / "Cargo.toml").read_text(), re.M)
    needed = declared.group(1) if declared else "0"
    found = re.search(r"^ARG RUST_VERSION=([0-9.]+)$", text, re.M)
    version = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    report.check(
        bool(found) and version(found.group(1)) >= version(needed)[:len(version(found.group(1)))],
        f"Dockerfile builds with Rust {found.group(1) if found else '?'} "
        f">= Cargo.toml rust-version {needed}",
        "ARG RUST_VERSION=<version> is missing or older than the crate's rust-version",
    )

    stages = re.split(r"^FROM ", text, flags=re.M)
    final = stages[-1]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    uid = user[-1].split(":")[0] if user else ""
    report.check(
        uid.isdigit() and int(uid) != 0,
        f"runtime stage runs as a numeric non-root user ({user[-1] if user else 'none'})",
        "Kubernetes' runAsNonRoot can only verify a numeric, non-zero USER",
    )
    report.check(
        re.search(r"^EXPOSE\s+8080\b", final, re.M) is not None,
        "runtime stage exposes port 8080",
    )
    report.check(
        re.search(r'^CMD\s+\[.*"--listen",\s*"0\.0\.0\.0:8080"', final, re.M) is not None
        and "CARROT_ALLOW_ANONYMOUS" not in "".join(
            line for line in final.splitlines() if line.startswith(("ENV", "ARG"))
        ),
        "default command listens on 0.0.0.0:8080 and anonymous access is not preset",
    )

    # The build context: .dockerignore is an allow-list ("*" then "!/path").
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    allowed = {line[1:].strip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for match in re.finditer(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        copied.update(p.strip("./") for p in match.group(1).split()[:-1] if not p.startswith("--"))
    copied.discard("")
    needed = copied | {"Cargo.toml", "Cargo.lock", "src"}
    needed |= {p for p in ("build.rs", "tests", "benches", "examples") if (ROOT / p).exists()}
    report.check(
        bool(ignore) and ignore[0] == "*" and not (needed - allowed),
        f".dockerignore lets only {', '.join(sorted(allowed))} into the build context, "
        f"including all the build needs ({', '.join(sorted(needed))})",
        f"not allowed by .dockerignore: {', '.join(sorted(needed - allowed)) or '-'}; "
        f"first pattern: {ignore[0] if ignore else '-'}",
    )
    for path in sorted(copied | {"Cargo.toml", "Cargo.lock", "src"}):
        report.check((ROOT / path).exists(), f"build input {path} exists")
    check_dependency_stage(report)


def check_dependency_stage(report: Report) -> None:
    """Replays the Dockerfile's dependency stage: manifest + lock + placeholder sources.

    `cargo build --locked` there fails when Cargo.lock is out of date with
    Cargo.toml, or when the cut-down manifest does not parse. Runs in a scratch
    copy, so the work tree's Cargo.lock is never touched.
    """
    cargo = shutil.which("cargo")
    if cargo is None:
        report.note("cargo not found: the Dockerfile's dependency stage was not replayed")
        return
    with tempfile.TemporaryDirectory(prefix="check-deploy-cargo-") as tmp:
        work = Path(tmp)
        manifest = (ROOT / "Cargo.toml").read_text()
        kept, skip = [], False
        for line in manifest.splitlines():
            if re.match(r"^\[\[(bench|test|example)\]\]", line):
                skip = True
                continue
            if line.startswith("["):
                skip = False
            if not skip:
                kept.append(line)
        (work / "Cargo.toml").write_text("\n".join(kept) + "\n")
        shutil.copy(ROOT / "Cargo.lock", work / "Cargo.lock")
        (work / "src").mkdir()
        (work / "src" / "main.rs").write_text("fn main() {}\n")
        (work / "src" / "lib.rs").write_text("")
        proc = subprocess.run(
            [cargo, "metadata", "--locked", "--format-version", "1"],
            cwd=work, capture_output=True, text=True, check=False,
            env={**os.environ, "CARGO_TARGET_DIR": str(work / "target")},
        )
    report.check(
        proc.returncode == 0,
        "Dockerfile dependency stage: Cargo.toml and Cargo.lock agree (cargo --locked) "
        "with placeholder sources",
        proc.stderr[-2000:],
    )


# --------------------------------------------------------------------------
# Helm: lint, render, validate


SHOWN_NOTES: set[str] = set()


def lint(report: Report, chart: Path, label: str, values: dict[str, Any] | None,
         expected_fail: str | None = None) -> None:
    with captured_stderr() as log:
        result = helm.lint(
            str(chart), values=values, strict=True, with_subcharts=True,
            kube_version=f"v{KUBE_LATEST}",
        )
    problems = [
        f"[{ {2: 'WARNING', 3: 'ERROR'}.get(m['severity'], m['severity']) }] {m['path']}: {m['error'].strip()}"
        for m in result.get("messages", [])
        if m.get("severity", 0) >= 2
    ]
    known = {m["error"] for m in result.get("messages", [])}
    problems += [f"[ERROR] {e.strip()}" for e in result.get("errors", []) if e not in known]
    fails = [line for line in log if "funcMap fail" in line]
    if expected_fail:
        unexpected = [f for f in fails if expected_fail not in f]
        ok = not problems and not unexpected and len(fails) > len(unexpected)
        detail = "\n".join(problems + unexpected) or f"expected a fail() saying {expected_fail!r}"
        report.check(ok, f"helm lint --strict {chart.name} ({label}); the template refuses it as expected", detail)
    else:
        report.check(not problems and not fails,
                     f"helm lint --strict {chart.name} ({label})",
                     "\n".join(problems + fails))
    for message in result.get("messages", []):
        note = f"lint info {chart.name}: {message['path']}: {message['error'].strip()}"
        if message.get("severity") == 1 and note not in SHOWN_NOTES:
            SHOWN_NOTES.add(note)
            report.note(note)


def render(chart_dir: Path, values: dict[str, Any] | None) -> dict[str, str]:
    with helm.Chart.load(str(chart_dir)) as chart:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
    """Splits the rendered files into (source, object) pairs and the NOTES."""
    objects: list[tuple[str, dict[str, Any]]] = []
    notes: dict[str, str] = {}
    for source, text in sorted(rendered.items()):
        if source.endswith("NOTES.txt"):
            notes[source] = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append((source, doc))
    return objects, notes


def ident(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def validate_schemas(report: Report, label: str, objects: list[tuple[str, dict[str, Any]]],
                     versions: list[str]) -> None:
    for source, obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in CRD_KINDS:
            report.note(f"{label}: {ident(obj)} ({key[0]}) is a custom resource with no "
                        "built-in schema: schema validation skipped, structure checked below")
            continue
        errors = []
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                errors.append(f"Kubernetes {version}: {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"Kubernetes {version}: {error.message}")
            except VersionNotSupportedError as error:
                errors.append(error.message)
        report.check(
            not errors,
            f"{label}: {ident(obj)} valid against the Kubernetes {' and '.join(v.rsplit('.', 1)[0] for v in versions)} schemas (strict) [{source}]",
            "\n".join(errors),
        )


def subset(small: dict[str, str] | None, big: dict[str, str] | None) -> bool:
    return bool(small) and all((big or {}).get(k) == v for k, v in small.items())


def env_value(container: dict[str, Any], name: str) -> Any:
    for env in container.get("env", []):
        if env.get("name") == name:
            return env.get("value", env.get("valueFrom"))
    return None


def arg_after(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


class Objects:
    """The rendered objects of one scenario, looked up by kind and name."""

    def __init__(self, objects: list[tuple[str, dict[str, Any]]], external_secrets: set[str]) -> None:
        self.all = [obj for _, obj in objects]
        self.external_secrets = external_secrets

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.all if o.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        for obj in self.of(kind):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def data(self, kind: str, name: str, key: str) -> str | None:
        """The decoded value of key in a rendered ConfigMap or Secret."""
        obj = self.get(kind, name)
        if obj is None:
            return None
        if kind == "Secret":
            if key in obj.get("stringData", {}):
                return obj["stringData"][key]
            if key in obj.get("data", {}):
                return base64.b64decode(obj["data"][key]).decode()
            return None
        return obj.get("data", {}).get(key)


def check_gateway_pod(report: Report, label: str, objs: Objects, pod: dict[str, Any],
                      extra_config_keys: set[str], own_pod: bool = True) -> None:
    """Checks a pod spec that runs the gateway (Deployment template or sidecar Pod)."""
    spec = pod["spec"]
    containers = spec.get("containers", []) + spec.get("initContainers", [])
    gateway = next((c for c in containers if c.get("name") == GATEWAY_CONTAINER), None)
    if not report.check(gateway is not None, f"{label}: pod runs the {GATEWAY_CONTAINER} container"):
        return
    assert gateway is not None
    if gateway in spec.get("initContainers", []):
        report.check(gateway.get("restartPolicy") == "Always",
                     f"{label}: gateway under initContainers is a native sidecar (restartPolicy: Always)")

    psc = spec.get("securityContext", {})
    csc = gateway.get("securityContext", {})
    problems = []
    if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not true")
    if csc.get("runAsUser", psc.get("runAsUser")) in (None, 0):
        problems.append("runAsUser is not a non-zero uid")
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        problems.append("capabilities.drop does not contain ALL")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})) or {}
    if seccomp.get("type") != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")
    report.check(not problems, f"{label}: gateway security context (non-root, read-only root, "
                 "no capabilities, no privilege escalation, seccomp RuntimeDefault)", "\n".join(problems))

    resources = gateway.get("resources", {})
    report.check(
        all(k in resources.get(part, {}) for part in ("requests", "limits") for k in ("cpu", "memory")),
        f"{label}: gateway has cpu and memory requests and limits",
        f"resources: {resources}",
    )

    # --config FILE: mounted from the ConfigMap or Secret, whose key exists and parses.
    args = gateway.get("args", [])
    config_path = arg_after(args, "--config")
    listen = arg_after(args, "--listen")
    mounts = {m["mountPath"].rstrip("/"): m for m in gateway.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    config_ok, detail, config_text, source_kind = False, "", None, None
    if config_path:
        directory, filename = config_path.rsplit("/", 1)
        mount = mounts.get(directory)
        volume = volumes.get(mount["name"]) if mount else None
        if volume is None:
            detail = f"no volume is mounted at {directory}"
        else:
            source_kind = "ConfigMap" if "configMap" in volume else "Secret" if "secret" in volume else None
            source = volume.get("configMap") or volume.get("secret") or {}
            source_name = source.get("name") or source.get("secretName")
            items = {i["path"]: i["key"] for i in source.get("items", [])} or {filename: filename}
            key = items.get(filename)
            if source_kind is None or key is None:
                detail = f"volume {mount['name']} does not provide {filename}"
            elif source_kind == "Secret" and source_name in objs.external_secrets:
                config_ok, detail = True, f"from the existing Secret {source_name}, key {key}"
            else:
                config_text = objs.data(source_kind, source_name, key)
                config_ok = config_text is not None
                detail = f"{source_kind} {source_name} key {key}"
                if not config_ok:
                    detail = f"{detail} is not rendered"
    report.check(config_ok, f"{label}: --config {config_path} is mounted ({detail})", detail)

    if config_text is not None:
        try:
            config = yaml.safe_load(config_text)
        except yaml.YAMLError as error:
            report.fail(f"{label}: config file is valid YAML", str(error))
            config = None
        if isinstance(config, dict):
            unknown = set(config) - GATEWAY_CONFIG_KEYS - extra_config_keys
            report.check(not unknown, f"{label}: config file holds only gateway config keys "
                         f"({', '.join(sorted(config)) or 'empty'})", f"unknown keys: {sorted(unknown)}")
            has_tokens = bool((config.get("auth") or {}).get("tokens"))
            report.check(not (has_tokens and source_kind == "ConfigMap"),
                         f"{label}: auth tokens are not stored in a ConfigMap "
                         f"(config file in a {source_kind})")
        elif config is not None:
            report.fail(f"{label}: config file is a YAML mapping", repr(config))

    # CARROT_AMQP_URL comes from a Secret that holds it.
    amqp = env_value(gateway, "CARROT_AMQP_URL")
    ref = (amqp or {}).get("secretKeyRef") if isinstance(amqp, dict) else None
    if ref and ref["name"] in objs.external_secrets:
        report.ok(f"{label}: CARROT_AMQP_URL from the existing Secret {ref['name']} (key {ref['key']})")
    elif ref:
        url = objs.data("Secret", ref["name"], ref["key"])
        report.check(url is not None and re.match(r"^amqps?://", url) is not None,
                     f"{label}: CARROT_AMQP_URL from Secret {ref['name']} key {ref['key']} is an amqp(s) URL",
                     f"value: {url!r}")
    else:
        report.fail(f"{label}: CARROT_AMQP_URL comes from a Secret", f"env: {amqp!r}")

    # Probes: /healthz and /readyz on the listen port, unless the listener is loopback-only.
    loopback = bool(listen) and (listen.startswith("127.") or listen.startswith("[::1]"))
    port = int(listen.rsplit(":", 1)[1]) if listen else None
    if loopback:
        report.check(
            "livenessProbe" not in gateway and "readinessProbe" not in gateway
            and not gateway.get("ports"),
            f"{label}: loopback listener {listen}: no kubelet probes and no container port "
            "(the kubelet could not reach it)",
        )
    else:
        probe_ok = (
            gateway.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
            and gateway.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"
            and all(gateway[p]["httpGet"].get("port") in (port, "http")
                    for p in ("livenessProbe", "readinessProbe"))
        )
        report.check(probe_ok, f"{label}: liveness GET /healthz and readiness GET /readyz on port {port}",
                     f"liveness: {gateway.get('livenessProbe')}\nreadiness: {gateway.get('readinessProbe')}")
        report.check(any(p.get("containerPort") == port for p in gateway.get("ports", [])),
                     f"{label}: container port {port} matches --listen {listen}")

    # TLS files: each one the gateway is told to read comes from a mounted Secret.
    for variable in GATEWAY_TLS_FILE_VARIABLES:
        path = env_value(gateway, variable)
        if path is None:
            continue
        directory, filename = str(path).rsplit("/", 1)
        mount = mounts.get(directory)
        volume = volumes.get(mount["name"]) if mount else None
        secret = (volume or {}).get("secret") or {}
        items = {i["path"]: i["key"] for i in secret.get("items", [])} or {filename: filename}
        report.check(bool(secret) and filename in items,
                     f"{label}: {variable}={path} is a file of a mounted Secret",
                     f"mount: {mount!r}\nvolume: {volume!r}")
    if env_value(gateway, "CARROT_TLS_CERT") is not None and not loopback:
        schemes = {p: gateway.get(p, {}).get("httpGet", {}).get("scheme") for p in ("livenessProbe", "readinessProbe")}
        report.check(all(v == "HTTPS" for v in schemes.values()),
                     f"{label}: the probes use HTTPS, like the listener", f"schemes: {schemes}")

    # Kubernetes must wait longer than the preStop sleep plus the gateway's own drain
    # (only for pods the chart renders: a sidecar's pod is the user's).
    grace = int(env_value(gateway, "CARROT_SHUTDOWN_GRACE") or 25)
    sleep = gateway.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    termination = spec.get("terminationGracePeriodSeconds", 30)
    if own_pod:
        report.check(termination > grace + sleep,
                     f"{label}: terminationGracePeriodSeconds {termination} > preStop sleep {sleep} "
                     f"+ CARROT_SHUTDOWN_GRACE {grace}")

    # Every secret or config map the pod references is rendered (or is the existing Secret).
    missing = []
    for volume in spec.get("volumes", []):
        if "configMap" in volume and objs.get("ConfigMap", volume["configMap"]["name"]) is None:
            missing.append(f"ConfigMap {volume['configMap']['name']}")
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            if name not in objs.external_secrets and objs.get("Secret", name) is None:
                missing.append(f"Secret {name}")
    report.check(not missing, f"{label}: every ConfigMap and Secret the pod mounts is rendered",
                 ", ".join(missing))


def check_service_monitor(report: Report, label: str, objs: Objects, monitor: dict[str, Any]) -> None:
    spec = monitor.get("spec", {})
    selector = spec.get("selector", {}).get("matchLabels")
    services = [s for s in objs.of("Service") if subset(selector, s["metadata"].get("labels"))]
    endpoints = spec.get("endpoints", [])
    port_names = {p.get("name") for s in services for p in s["spec"].get("ports", [])}
    problems = []
    if monitor.get("metadata", {}).get("name") in (None, ""):
        problems.append("metadata.name is missing")
    if not services:
        problems.append(f"selector {selector} matches no rendered Service")
    if not endpoints:
        problems.append("no endpoints")
    for endpoint in endpoints:
        if endpoint.get("port") not in port_names:
            problems.append(f"endpoint port {endpoint.get('port')!r} is not a port of the Service")
        if endpoint.get("path") != "/metrics":
            problems.append(f"endpoint path {endpoint.get('path')!r} is not /metrics")
    allowed = {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
               "podTargetLabels", "sampleLimit"}
    problems += [f"unexpected spec field {k}" for k in spec if k not in allowed]
    report.check(not problems, f"{label}: {ident(monitor)} scrapes /metrics on the gateway Service",
                 "\n".join(problems))


def check_replicas(report: Report, label: str, objs: Objects, deployment: dict[str, Any]) -> None:
    """Cooperating replicas: each pod advertises its DNS name under a headless Service that
    selects it, shares a long enough secret, and the pods prefer different nodes (the PDB is
    checked with the other objects)."""
    spec = deployment["spec"]["template"]["spec"]
    gateway = next(c for c in spec["containers"] if c.get("name") == GATEWAY_CONTAINER)
    advertise = env_value(gateway, "CARROT_ADVERTISE_URL")
    cooperating = (deployment["spec"].get("replicas", 2) > 1
                   or any(True for _ in objs.of("HorizontalPodAutoscaler")))
    if not cooperating:
        report.check(advertise is None and not spec.get("subdomain"),
                     f"{label}: one replica alone advertises no address")
        return
    subdomain = spec.get("subdomain")
    peers = objs.get("Service", subdomain) if subdomain else None
    report.check(peers is not None and peers["spec"].get("clusterIP") == "None"
                 and peers["spec"].get("publishNotReadyAddresses") is True,
                 f"{label}: pod subdomain {subdomain!r} is a headless Service that keeps "
                 "not-ready pods' names")
    pod_names = {env.get("name"): env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                 for env in gateway.get("env", [])}
    port = arg_after(gateway.get("args", []), "--listen").rsplit(":", 1)[1]
    wanted = f"://$(POD_NAME).{subdomain}.$(POD_NAMESPACE).svc:{port}"
    report.check(isinstance(advertise, str) and advertise.endswith(wanted)
                 and pod_names.get("POD_NAME") == "metadata.name"
                 and pod_names.get("POD_NAMESPACE") == "metadata.namespace",
                 f"{label}: CARROT_ADVERTISE_URL is the pod's own name under that Service",
                 f"CARROT_ADVERTISE_URL: {advertise!r}")
    ref = (env_value(gateway, "CARROT_PEER_SECRET") or {}).get("secretKeyRef", {})
    if ref.get("name") in objs.external_secrets:
        report.ok(f"{label}: CARROT_PEER_SECRET from your Secret {ref.get('name')}")
    else:
        secret = objs.data("Secret", ref.get("name", ""), ref.get("key", ""))
        report.check(secret is not None and len(secret) >= 32,
                     f"{label}: CARROT_PEER_SECRET from a rendered Secret, at least 32 characters",
                     f"secretKeyRef: {ref}")
    anti = spec.get("affinity", {}).get("podAntiAffinity")
    report.check(bool(anti), f"{label}: the pods prefer different nodes (podAntiAffinity)")


def check_relations(report: Report, label: str, objs: Objects, extra_config_keys: set[str]) -> None:
    deployments = objs.of("Deployment")
    for deployment in deployments:
        if "carrot-gateway" in deployment["metadata"]["name"]:
            check_replicas(report, f"{label}: {ident(deployment)}", objs, deployment)
        template = deployment["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        report.check(subset(deployment["spec"]["selector"].get("matchLabels"), labels),
                     f"{label}: {ident(deployment)} selector matches its pod labels")
        check_gateway_pod(report, f"{label}: {ident(deployment)}", objs, template, extra_config_keys)
        annotations = template["metadata"].get("annotations", {})
        report.check(any(k.startswith("checksum/") for k in annotations),
                     f"{label}: {ident(deployment)} pods roll when the config changes (checksum annotations)")

    pods = [(d, d["spec"]["template"]) for d in deployments]
    for service in objs.of("Service"):
        matching = [(d, t) for d, t in pods if subset(service["spec"].get("selector"), t["metadata"].get("labels"))]
        report.check(bool(matching), f"{label}: {ident(service)} selects the gateway pods")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            found = any(
                target in (p.get("name"), p.get("containerPort"))
                for _, t in matching for c in t["spec"]["containers"] for p in c.get("ports", [])
            )
            report.check(found, f"{label}: {ident(service)} port {port.get('name')} targets "
                         f"container port {target!r}")

    for hpa in objs.of("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = objs.get(ref["kind"], ref["name"])
        report.check(target is not None, f"{label}: {ident(hpa)} scales {ref['kind']}/{ref['name']}")
        if target is not None:
            report.check("replicas" not in target["spec"],
                         f"{label}: {ident(target)} leaves replicas to the HPA")
            report.check(hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"],
                         f"{label}: {ident(hpa)} minReplicas <= maxReplicas")

    for pdb in objs.of("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"].get("matchLabels")
        report.check(any(subset(selector, t["metadata"].get("labels")) for _, t in pods),
                     f"{label}: {ident(pdb)} selects the gateway pods")

    for monitor in objs.of("ServiceMonitor"):
        check_service_monitor(report, label, objs, monitor)

    for account in objs.of("ServiceAccount"):
        report.check(account.get("automountServiceAccountToken") is False,
                     f"{label}: {ident(account)} does not mount an API token")


def sidecar_pod_from_notes(notes: dict[str, str]) -> dict[str, Any] | None:
    """Builds a Pod from the sidecar snippet NOTES.txt prints (container + volumes)."""
    text = next(iter(notes.values()), "")
    if NOTES_CONTAINER not in text or NOTES_VOLUMES not in text:
        return None
    container_text = text.split(NOTES_CONTAINER, 1)[1].split(NOTES_VOLUMES, 1)[0]
    volumes_text = text.split(NOTES_VOLUMES, 1)[1].split(NOTES_ANNOTATIONS, 1)[0]
    annotations_text = text.split(NOTES_ANNOTATIONS, 1)[1].split("\n", 1)[1] if NOTES_ANNOTATIONS in text else ""
    containers = yaml.safe_load(container_text)
    app = {"name": "app", "image": "registry.example.com/app:1.0.0"}
    gateway = containers[0]
    native = gateway.get("restartPolicy") == "Always"
    spec: dict[str, Any] = {
        "containers": [app] if native else [app, gateway],
        "volumes": yaml.safe_load(volumes_text),
    }
    if native:
        spec["initContainers"] = [gateway]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app-with-gateway", "annotations": yaml.safe_load(annotations_text) or {}},
        "spec": spec,
    }


class Scenario:
    def __init__(self, name: str, chart: Path, values: dict[str, Any] | None, *,
                 versions: list[str], kinds: set[str], external_secrets: set[str] | None = None,
                 sidecar_notes: bool = False, description: str = "") -> None:
        self.name = name
        self.chart = chart
        self.values = values
        self.versions = versions
        self.kinds = kinds
        self.external_secrets = external_secrets or set()
        self.sidecar_notes = sidecar_notes
        self.description = description


def run_scenario(report: Report, scenario: Scenario) -> None:
    report.section(f"render {scenario.name}: {scenario.description}")
    try:
        rendered = render(scenario.chart, scenario.values)
    except helm.HelmError as error:
        report.fail(f"{scenario.name}: chart renders", str(error))
        return
    objects, notes = manifests(rendered)
    report.ok(f"{scenario.name}: chart renders ({len(objects)} objects)")
    kinds = sorted(o.get("kind", "?") for _, o in objects)
    report.check(set(kinds) == scenario.kinds,
                 f"{scenario.name}: renders {', '.join(kinds)}",
                 f"expected kinds: {', '.join(sorted(scenario.kinds))}")
    names = [(o.get("kind"), o.get("metadata", {}).get("name")) for _, o in objects]
    report.check(len(names) == len(set(names)), f"{scenario.name}: object names are unique")

    objs = Objects(objects, scenario.external_secrets)
    extra = set(((scenario.values or {}).get("config") or {}).get("extra") or {})
    extra |= set((((scenario.values or {}).get("carrot-gateway") or {}).get("config") or {}).get("extra") or {})

    if scenario.sidecar_notes:
        pod = sidecar_pod_from_notes({k: v for k, v in notes.items() if k.startswith(f"{scenario.chart.name}/templates")})
        if report.check(pod is not None, f"{scenario.name}: NOTES.txt prints the sidecar container and volumes"):
            assert pod is not None
            objects.append(("NOTES.txt (sidecar snippet in a Pod)", pod))
            check_gateway_pod(report, f"{scenario.name}: sidecar snippet", objs, pod, extra, own_pod=False)
            report.check(any(k.startswith("checksum/") for k in pod["metadata"]["annotations"]),
                         f"{scenario.name}: NOTES.txt prints the checksum pod annotations")

    validate_schemas(report, scenario.name, objects, scenario.versions)
    check_relations(report, scenario.name, objs, extra)


def expect_refused(report: Report, label: str, values: dict[str, Any] | None, message: str) -> None:
    try:
        render(CHART, values)
    except helm.HelmError as error:
        report.check(message in str(error), f"refused as expected: {label}",
                     f"refused, but not with {message!r}: {error}")
        return
    report.fail(f"refused as expected: {label}", "the chart rendered these values")


def prepare_example(workdir: Path) -> Path:
    """Copies the example chart and this chart side by side and fetches the dependency."""
    shutil.copytree(CHART, workdir / "helm" / "carrot-gateway")
    example = workdir / "helm" / "examples" / EXAMPLE.name
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    helm.dependency_update(str(example))
    return example


def check_chart(report: Report) -> None:
    report.section("helm lint")
    ci_values = sorted((CHART / "ci").glob("*-values.yaml"))
    lint(report, CHART, "default values", None,
         expected_fail="no auth tokens are configured")
    lint(report, CHART, "auth.allowAnonymous=true", {"auth": {"allowAnonymous": True}})
    for path in ci_values:
        lint(report, CHART, rel(path), load_values(path))

    with tempfile.TemporaryDirectory(prefix="check-deploy-") as tmp:
        try:
            archive = helm.package(str(CHART), destination=tmp)
            report.ok(f"helm package {CHART.name} -> {Path(archive).name}")
        except helm.HelmError as error:
            report.fail(f"helm package {CHART.name}", str(error))

        try:
            example = prepare_example(Path(tmp))
            report.ok(f"helm dependency update {rel(EXAMPLE)} (file:// dependency on the chart)")
        except helm.HelmError as error:
            report.fail(f"helm dependency update {rel(EXAMPLE)}", str(error))
            example = None
        if example is not None:
            lint(report, example, f"{rel(EXAMPLE)} with the chart as dependency", None)

        gateway_objects = {"ServiceAccount", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
        scenarios = [
            Scenario(
                "standalone-full", CHART, load_values(CHART / "ci" / "standalone-values.yaml"),
                # preStop "sleep" needs Kubernetes 1.30.
                versions=["1.30.0", KUBE_LATEST],
                kinds=gateway_objects | {"HorizontalPodAutoscaler", "ServiceMonitor"},
                description="ci/standalone-values.yaml: auth tokens, HPA, PDB, ServiceMonitor, preStop sleep",
            ),
            Scenario(
                "standalone-anonymous", CHART, {"auth": {"allowAnonymous": True}},
                versions=[KUBE_MIN, KUBE_LATEST],
                kinds=gateway_objects | {"ConfigMap"},
                description="default values with auth.allowAnonymous=true",
            ),
            Scenario(
                "standalone-existing-secret", CHART, {"existingSecret": {"name": "gateway-credentials", "amqpUrlKey": "url",
                                           "configKey": "gateway.yaml"},
                        "podDisruptionBudget": {"enabled": False}},
                versions=[KUBE_MIN, KUBE_LATEST],
                kinds={"ServiceAccount", "Deployment", "Service"},
                external_secrets={"gateway-credentials"},
                description="existingSecret with the AMQP URL and a complete config file, no PDB",
            ),
            Scenario(
                "standalone-tls", CHART, {
                    "auth": {"allowAnonymous": True},
                    "gateway": {"tls": {"secretName": "gateway-tls"}},
                    "amqp": {"url": "amqps://gateway:secret@rabbitmq.messaging.svc:5671/%2f",
                             "tls": {"caSecret": {"name": "rabbitmq-ca", "key": "ca.pem"},
                                     "clientCertSecret": "gateway-amqp-client"}},
                    "serviceMonitor": {"enabled": True,
                                       "tlsConfig": {"ca": {"secret": {"name": "gateway-tls", "key": "ca.crt"}}}},
                },
                versions=[KUBE_MIN, KUBE_LATEST],
                kinds=gateway_objects | {"ConfigMap", "ServiceMonitor"},
                external_secrets={"gateway-tls", "rabbitmq-ca", "gateway-amqp-client"},
                description="HTTPS listener, amqps with a CA bundle and a client certificate, "
                            "ServiceMonitor over HTTPS",
            ),
            Scenario(
                "standalone-one-replica", CHART, {"auth": {"allowAnonymous": True}, "replicaCount": 1},
                versions=[KUBE_MIN, KUBE_LATEST],
                kinds=gateway_objects | {"ConfigMap"},
                description="replicaCount 1: no peers Service, no advertised address",
            ),
            Scenario(
                "standalone-replicas-given-secret", CHART, {
                    "auth": {"allowAnonymous": True}, "replicaCount": 3,
                    "replicas": {"peerSecret": "0123456789abcdef0123456789abcdef"},
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "topology.kubernetes.io/zone",
                         "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "carrot-gateway"}}}]}},
                    "amqp": {"url": "amqp://gateway:secret@rabbit-0.rabbit:5672/%2f,"
                                    "amqp://gateway:secret@rabbit-1.rabbit:5672/%2f"},
                },
                versions=[KUBE_MIN, KUBE_LATEST],
                kinds=gateway_objects | {"ConfigMap"},
                description="3 cooperating replicas with a given secret, own affinity, two broker nodes",
            ),
            Scenario(
                "sidecar", CHART, load_values(CHART / "ci" / "sidecar-values.yaml"),
                # native sidecar (restartPolicy on a container) needs Kubernetes 1.29.
                versions=["1.29.0", KUBE_LATEST],
                kinds={"ConfigMap", "Secret"},
                sidecar_notes=True,
                description="ci/sidecar-values.yaml: native sidecar, topology; container checked in a Pod",
            ),
            Scenario(
                "sidecar-classic-token", CHART, {"mode": "sidecar", "gateway": {"listen": "0.0.0.0:8080"}, "auth": {"tokens": [
                    {"name": "app", "token": "change-me", "configure": "^app\\.", "write": "^app\\.",
                     "read": "^app\\."}]}},
                versions=[KUBE_MIN, KUBE_LATEST],
                kinds={"Secret"},
                sidecar_notes=True,
                description="sidecar.native=false, an auth token (config file in the Secret), "
                            "listening on 0.0.0.0 so that the kubelet can probe it",
            ),
        ]
        if example is not None:
            scenarios.append(Scenario(
                "example-app", example, None,
                versions=["1.29.0", KUBE_LATEST],
                kinds={"ConfigMap", "Secret", "Deployment"},
                description=f"{rel(EXAMPLE)}: an app chart whose pod includes the sidecar templates",
            ))
        for scenario in scenarios:
            run_scenario(report, scenario)

    report.section("values the chart must refuse")
    anonymous = {"auth": {"allowAnonymous": True}}
    expect_refused(report, "standalone on 0.0.0.0 without tokens or allowAnonymous (default values)",
                   None, "no auth tokens are configured")
    expect_refused(report, "sidecar on a non-loopback address without tokens",
                   {"mode": "sidecar", "gateway": {"listen": "0.0.0.0:8080"}}, "no auth tokens are configured")
    expect_refused(report, "standalone on a loopback address (the Service could not reach it)",
                   {**anonymous, "gateway": {"listen": "127.0.0.1:8080"}}, "loopback address")
    expect_refused(report, "terminationGracePeriodSeconds not above the shutdown grace",
                   {**anonymous, "terminationGracePeriodSeconds": 25}, "terminationGracePeriodSeconds")
    expect_refused(report, "an AMQP URL that is not amqp:// or amqps://",
                   {**anonymous, "amqp": {"url": "http://rabbitmq:15672"}}, "amqp.url must start with")
    expect_refused(report, "amqp.tls with an amqp:// URL",
                   {**anonymous, "amqp": {"url": "amqp://rabbitmq:5672/%2f",
                                          "tls": {"clientCertSecret": "gateway-amqp-client"}}},
                   "amqp.tls is set but amqp.url is not an amqps:// URL")
    expect_refused(report, "auth.tokens with an existingSecret that has no config file",
                   {"existingSecret": {"name": "creds"},
                    "auth": {"tokens": [{"name": "a", "token": "b"}]}}, "existingSecret.configKey")
    expect_refused(report, "a replicas.peerSecret shorter than 32 characters",
                   {**anonymous, "replicas": {"peerSecret": "short"}}, "at least 32 characters")
    expect_refused(report, "an unknown mode (values schema)", {"mode": "daemonset"}, "at '/mode'")
    expect_refused(report, "a misspelt top-level value (values schema)",
                   {**anonymous, "autoscalling": {"enabled": True}}, "'autoscalling' not allowed")


def main() -> int:
    report = Report()
    print(f"carrot-gateway deployment checks (helm SDK {helm.helm_sdk_version()}, "
          f"kubernetes-validate {kubernetes_validate.__version__}, Kubernetes schemas "
          f"{KUBE_MIN.rsplit('.', 1)[0]}..{KUBE_LATEST.rsplit('.', 1)[0]})")
    check_dockerfile(report)
    check_chart(report)
    print(f"\ncheck-deploy: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
