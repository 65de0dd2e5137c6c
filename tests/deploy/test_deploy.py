"""deploy/: the dashboard and the alert rules name only what a live router exports, the
rules pass promtool and fire on a real router's own page, and the manifests agree with
each other and with the project's config loader."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from router.config import parse_config
from router.errors import ConfigError
from router.outcomes import FailureClass
from router.sim import Fault, SimKey
from router.telemetry.labels import AttemptOutcome, RequestOutcome, RouteState
from router.telemetry.state_gauges import DISABLE_REASONS
from tests.configs import key, model, route, routes_yaml, sim_keys, two_keys_models
from tests.conftest import HI, REPO, SIM_A, SIM_B, SIM_C, client

DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "llm-router.json"
KUBERNETES = DEPLOY / "kubernetes"
FAKE_ENV = {
    "ROUTER_CLIENT_KEY": "fake-client-token",
    "OPENAI_API_KEY": "sk-fake-openai-000001",
    "OPENAI_API_KEY_2": "sk-fake-openai-000002",
    "GROQ_API_KEY": "gsk_fake-groq-000003",
    "REDIS_URL": "redis://redis.example:6379/0",
}
PROMTOOL_SECONDS = 60

# --------------------------------------------------------------------------- PromQL names
# Good enough for the PromQL this repository writes, not a parser: metric names are the
# router's and the process collector's; label names sit in selectors, grouping and
# matching clauses, and label_values(). Quoted strings are blanked before looking for
# names, so label values and Grafana variables ("$model") are never taken for names.
# Literal matcher values (state="available", outcome=~"exhausted|failed") are checked
# too: each must be on the page or, since metrics.py creates a series when it first has
# something to say, be one of the values metrics.py can give that label.
METRIC = re.compile(r"\b(?:llm_router_\w+|process_\w+)")
SELECTOR = re.compile(r"\b(llm_router_\w+|process_\w+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|%q)')
PLAIN_ALTERNATIVES = re.compile(r"[\w\-/]+(?:\|[\w\-/]+)*")
CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"\blabel_values\(\s*(\w+)\s*,\s*(\w+)\s*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
# Go templates in annotations: queries are raw strings, labels are read as
# $labels.x (the alert's) or .Labels.x (a query result's).
TEMPLATE_QUERY = re.compile(r"`([^`]*)`")
ALERT_LABEL = re.compile(r"\$labels\.(\w+)")
RESULT_LABEL = re.compile(r"\.Labels\.(\w+)")

LABEL_VALUES_OF: Mapping[str, set[str]] = {
    "state": {s.value for s in RouteState},
    "outcome": {o.value for o in (*RequestOutcome, *AttemptOutcome)},
    "reason": {str(r) for r in DISABLE_REASONS} | {f.value for f in FailureClass},
    "direction": {"input", "output"},
    "dimension": {"requests", "tokens"},
}

Page = Mapping[str, Mapping[str, set[str]]]  # sample name -> label name -> values seen


def read_page(text: str) -> dict[str, dict[str, set[str]]]:
    page: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = page.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return page


def grouping_labels(expr: str) -> set[str]:
    """Labels of every by (...) clause: what an aggregation keeps."""
    text = STRING.sub('""', expr)
    return {
        label.strip()
        for clause, names in CLAUSE.findall(text)
        if clause == "by"
        for label in names.split(",")
        if label.strip()
    }


def unknown_names(expr: str, page: Page) -> list[str]:
    """Every metric, label and literal label value `expr` names that `page` lacks.

    A selector's labels (and values) must be on that very metric; a by/on/... label must
    be on at least one of the expression's metrics (it may be joined in from either side).
    """
    text = STRING.sub('""', expr)
    metrics = set(METRIC.findall(text))
    problems = [f"metric {name}" for name in sorted(metrics - page.keys())]
    for metric, body in SELECTOR.findall(expr):
        for label, operator, quoted in MATCHER.findall(body):
            if metric not in page:
                continue
            if label not in page[metric]:
                problems.append(f"label {label} on {metric}")
            elif operator in ("=", "=~") and quoted != "%q":
                value = json.loads(quoted)
                literal = operator == "=" or PLAIN_ALTERNATIVES.fullmatch(value)
                if literal and "$" not in value:
                    problems += [
                        f"value {label}={each!r} on {metric}"
                        for each in (value.split("|") if operator == "=~" else [value])
                        if each not in page[metric][label]
                        and each not in LABEL_VALUES_OF.get(label, set())
                    ]
    for metric, label in LABEL_VALUES.findall(text):
        if metric in page and label not in page[metric]:
            problems.append(f"label {label} on {metric}")
    carried = set().union(*(page.get(metric, {}).keys() for metric in metrics))
    for _, names in CLAUSE.findall(text):
        problems += [
            f"label {label} on none of {sorted(metrics)}"
            for label in (name.strip() for name in names.split(","))
            if label and label not in carried
        ]
    return problems


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, rows and nested panels included, and every
    query variable."""

    def walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            title = node.get("title", where)
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    yield f"panel {title!r}", value
                else:
                    yield from walk(value, title)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item, where)

    yield from walk(dashboard.get("panels", []), "")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        yield f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query
        yield f"variable {variable['name']} definition", variable.get("definition", "")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def rule_problems(rule: dict[str, Any], page: Page) -> list[str]:
    """The rule's expr and annotation queries against the page, and every label an
    annotation reads against what its query keeps."""
    problems = unknown_names(rule["expr"], page)
    kept = grouping_labels(rule["expr"])
    for name, text in rule.get("annotations", {}).items():
        queries = TEMPLATE_QUERY.findall(text)
        for query in queries:
            problems += [f"{name}: {problem}" for problem in unknown_names(query, page)]
        problems += [
            f"{name}: $labels.{label} is not kept by the expr"
            for label in ALERT_LABEL.findall(text)
            if label not in kept
        ]
        from_queries = set().union(*(grouping_labels(query) for query in queries))
        problems += [
            f"{name}: .Labels.{label} is kept by none of its queries"
            for label in RESULT_LABEL.findall(text)
            if label not in from_queries
        ]
    return problems


# --------------------------------------------------------------------------- promtool
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def run_promtool(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_SECONDS,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def input_series(
    page_text: str,
    minutes: int,
    *,
    growing: bool = False,
    prefixes: tuple[str, ...] = ("llm_router_",),
) -> list[dict[str, str]]:
    """The router's samples as promtool input series over `minutes`: each held constant,
    or (`growing`) counters and histograms adding their page value every minute, so that
    rate() sees the traffic."""
    series = []
    for family in text_string_to_metric_families(page_text):
        grows = growing and family.type in ("counter", "histogram")
        for sample in family.samples:
            if not sample.name.startswith(prefixes) or sample.name.endswith("_created"):
                continue
            if math.isnan(sample.value):  # headroom not reported
                continue
            labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(sample.labels.items()))
            value = f"{sample.value:.6f}".rstrip("0").rstrip(".")
            values = f"0+{value}x{minutes}" if grows else f"{value}x{minutes}"
            series.append({"series": f"{sample.name}{{{labels}}}", "values": values})
    return series


async def promtool_unit_test(
    tmp_path: Path, rules: list[dict[str, Any]], series: list[dict[str, str]], cases: list[Any]
) -> None:
    """Evaluate `rules` over `series` (one sample a minute) and check `cases` with promtool."""
    group = {"name": "under-test", "rules": rules}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [group]}))
    test = {"interval": "1m", "input_series": series, "alert_rule_test": cases}
    unit_test = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [test]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(unit_test))
    await asyncio.to_thread(run_promtool, "test", "rules", str(tmp_path / "test.yml"))


async def scrape(url: str) -> str:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{url}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


def sample(page_text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(page_text):
        for each in family.samples:
            if each.name == name and all(each.labels.get(k) == v for k, v in labels.items()):
                return each.value
    raise AssertionError(f"no sample {name}{labels}")


async def quota_outage_page(stack) -> str:
    """A live /metrics page at 3 a.m.: keys a and b (every gpt-4o route) out of quota,
    gpt-4o served by its fallback gpt-4o-mini on key c, which reports rate-limit headroom;
    streamed and plain requests."""
    limited_c = SimKey(name=SIM_C.name, api_key=SIM_C.api_key, rpm=1000, tpm=1_000_000)
    sim, sim_url = await stack.sim(SIM_A, SIM_B, limited_c)
    # gpt-4o-capped is over its budget after its first request, served on c (a model the
    # operator capped: LLMRouterModelOverBudget).
    models = two_keys_models(fallback=["gpt-4o-mini"])
    price = {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000}  # $1 a token
    models["gpt-4o-capped"] = model(route("c", "gpt-4o", price=price), budget={"usd_per_month": 1})
    # A key on OpenAI itself, which no request reaches (these tests touch 127.0.0.1 only):
    # its route on gpt-4o, which litellm's model data dates, has a retirement series.
    direct = key("openai-direct", api_key="sk-never-sent-0123456789abcdef")
    models["gpt-4o-direct"] = model(route("openai-direct", "gpt-4o"))
    url = await stack.router(
        routes_yaml(keys=[*sim_keys(sim_url, SIM_A, SIM_B, SIM_C), direct], models=models)
    )
    sim.inject("a", Fault.insufficient_quota())
    sim.inject("b", Fault.insufficient_quota())
    async with client(url) as llm:
        for name in ("gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-capped"):
            await llm.chat.completions.create(model=name, messages=HI)
        stream = await llm.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
        async for _ in stream:
            pass
    text = await scrape(url)
    assert sample(text, "llm_router_key_disabled", key="a", reason="quota") == 1
    assert sample(text, "llm_router_key_disabled", key="b", reason="quota") == 1
    assert sample(text, "llm_router_route_state", route="c/gpt-4o-mini", state="available") == 1
    assert sample(text, "llm_router_model_disabled", model="gpt-4o-capped", reason="budget") == 1
    assert sample(
        text, "llm_router_route_retirement_timestamp_seconds", route="openai-direct/gpt-4o"
    )
    return text


# --------------------------------------------------------------------------- tests
async def test_every_metric_and_label_the_dashboard_and_rules_name_is_on_a_live_page(stack):
    page = read_page(await quota_outage_page(stack))
    dashboard = json.loads(DASHBOARD.read_text())
    problems = {
        where: found
        for where, expr in dashboard_queries(dashboard)
        if (found := unknown_names(expr, page))
    }
    problems |= {
        f"alert {rule['alert']}": found for rule in rules() if (found := rule_problems(rule, page))
    }
    assert not problems, json.dumps(problems, indent=2)
    assert sum(1 for _ in dashboard_queries(dashboard)) > 25  # the walk found the panels


def test_the_name_check_reports_a_bogus_metric_or_label():
    page = {
        "llm_router_requests_total": {"model": {"gpt-4o"}, "outcome": {"served", "failed"}},
        "llm_router_route_state": {
            "route": {"a/gpt-4o"},
            "key": {"a"},
            "provider": {"openai"},
            "state": {"available", "disabled"},
        },
    }
    healthy = 'sum by (model) (rate(llm_router_requests_total{outcome=~"served|failed"}[5m]))'
    assert unknown_names(healthy, page) == []
    assert unknown_names("sum(rate(llm_router_requets_total[5m]))", page) == [
        "metric llm_router_requets_total"
    ]
    # A real label, but not on this metric: route_state has no model.
    assert unknown_names('llm_router_route_state{model=~"$model"} == 1', page) == [
        "label model on llm_router_route_state"
    ]
    assert unknown_names("sum by (flavour) (llm_router_requests_total)", page) == [
        "label flavour on none of ['llm_router_requests_total']"
    ]
    assert unknown_names("label_values(llm_router_route_state, model)", page) == [
        "label model on llm_router_route_state"
    ]
    # A misspelt enum value; Grafana variables and real regexes are not checked.
    assert unknown_names('llm_router_route_state{state="availble"} == 1', page) == [
        "value state='availble' on llm_router_route_state"
    ]
    assert unknown_names('llm_router_requests_total{outcome=~"served|exausted"}', page) == [
        "value outcome='exausted' on llm_router_requests_total"
    ]
    assert unknown_names('llm_router_requests_total{model=~"$model", outcome=~".+"}', page) == []
    # A label value is not a metric name.
    assert unknown_names('llm_router_requests_total{model!="llm_router_nope"}', page) == []
    rule = {
        "expr": "max by (model) (llm_router_requests_total) == 0",
        "annotations": {
            "summary": "{{ $labels.key }}",
            "description": "{{ range query `group by (outcome) (llm_router_requests_total)` }}"
            "{{ .Labels.route }}{{ end }}",
        },
    }
    assert rule_problems(rule, page) == [
        "summary: $labels.key is not kept by the expr",
        "description: .Labels.route is kept by none of its queries",
    ]


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    assert "SUCCESS" in run_promtool("check", "rules", str(RULES))
    assert "SUCCESS" in run_promtool("test", "rules", str(DEPLOY / "prometheus" / "rules_test.yml"))


async def test_rules_fire_on_the_live_page_of_a_router_whose_keys_ran_dry(stack, tmp_path):
    """The rule expressions, fed the router's own series held for 15 minutes, page for
    gpt-4o and warn for keys a and b, and nothing else fires. Annotations are left out
    here: rules_test.yml checks their text."""
    promtool()
    text = await quota_outage_page(stack)
    bare = [{key: v for key, v in rule.items() if key != "annotations"} for rule in rules()]

    def fired(alert: str, *labels: dict[str, str]) -> dict[str, Any]:
        return {
            "eval_time": "10m",
            "alertname": alert,
            "exp_alerts": [{"exp_labels": dict(each)} for each in labels],
        }

    critical, warning = {"severity": "critical"}, {"severity": "warning"}
    quota = {"provider": "openai", "reason": "quota", **warning}
    expected = [
        fired("LLMRouterModelUnavailable", {"model": "gpt-4o", **critical}),
        fired("LLMRouterKeyQuotaExhausted", {"key": "a", **quota}, {"key": "b", **quota}),
        fired("LLMRouterKeyAuthFailed"),
        fired("LLMRouterFailoverRateHigh"),
        fired("LLMRouterErrorRatioHigh"),
        fired("LLMRouterLatencyP99High"),
        fired("LLMRouterStateStoreDegraded"),
        fired(
            "LLMRouterModelOverBudget", {"model": "gpt-4o-capped", "reason": "budget", **warning}
        ),
        fired("LLMRouterRouteModelRetiring"),  # gpt-4o retires in 2027, not at 10m (1970)
        fired("LLMRouterLogLinesDropped"),  # a test's router logs to a stream, not a sink
        fired("LLMRouterBodyRoomFull"),  # nothing was refused for want of room
    ]
    assert {case["alertname"] for case in expected} == {rule["alert"] for rule in rules()}
    await promtool_unit_test(tmp_path, bare, input_series(text, minutes=15), expected)


async def test_every_dashboard_query_returns_data_on_the_live_routers_series(stack, tmp_path):
    """Each panel target and variable query, fed the router's own series (traffic
    repeated every minute for 15 minutes), returns at least one series: a wrong label
    value or a join that matches nothing shows up as an empty panel here, not at 3 a.m."""
    promtool()
    text = await quota_outage_page(stack)
    dashboard = json.loads(DASHBOARD.read_text())
    grafana = {"$__rate_interval": "2m", "$model": ".*", "$key": ".*"}
    probes = []
    for index, (where, query) in enumerate(dashboard_queries(dashboard)):
        if values := LABEL_VALUES.fullmatch(query.strip()):
            query = f"group by ({values[2]}) ({values[1]})"
        for variable, value in grafana.items():
            query = query.replace(variable, value)
        probes.append(
            {"alert": f"empty_{index}", "expr": f"absent({query})", "labels": {"where": where}}
        )
    series = input_series(text, minutes=15, growing=True, prefixes=("llm_router_", "process_"))
    cases = [
        {"eval_time": "10m", "alertname": probe["alert"], "exp_alerts": []} for probe in probes
    ]
    await promtool_unit_test(tmp_path, probes, series, cases)


def test_every_yaml_and_json_file_under_deploy_parses():
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 12
    for path in files:
        documents = list(yaml.safe_load_all(path.read_text()))
        assert documents and all(doc is not None for doc in documents), path
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())


def test_dashboard_has_the_model_and_key_variables_and_unique_panel_ids():
    dashboard = json.loads(DASHBOARD.read_text())
    assert (dashboard["uid"], dashboard["title"]) == ("llm-router", "LLM router")
    assert dashboard["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name, query in (
        ("model", "label_values(llm_router_requests_total, model)"),
        ("key", "label_values(llm_router_route_state, key)"),
    ):
        assert variables[name]["definition"] == query
        assert variables[name]["multi"] and variables[name]["includeAll"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def kubernetes_objects() -> dict[str, dict[str, Any]]:
    objects = {}
    for path in KUBERNETES.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            objects[document["kind"]] = document
    return objects


def router_container(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    return next(c for c in containers if c["name"] == "llm-router")


def variables_in(routes_text: str) -> set[str]:
    return set(re.findall(r"\$\{(\w+)", routes_text))


def test_kubernetes_sidecar_is_probed_scraped_and_given_every_variable_its_config_uses():
    objects = kubernetes_objects()
    deployment, configmap = objects["Deployment"], objects["ConfigMap"]
    service, monitor = objects["Service"], objects["ServiceMonitor"]
    pod = deployment["spec"]["template"]
    router = router_container(deployment)
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 4000}
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 4000}
    assert router["securityContext"]["runAsNonRoot"] is True
    assert router["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"requests", "limits"} <= router["resources"].keys()
    mounts = {m["mountPath"]: m["name"] for m in router["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    routes_volume = volumes[mounts["/etc/llm-router"]]
    assert routes_volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert "/etc/llm-router/routes.yaml" in router["args"]

    routes_text = configmap["data"]["routes.yaml"]
    given = {e["name"] for e in router["env"] if "secretKeyRef" in e["valueFrom"]}
    assert variables_in(routes_text) <= given
    secret = objects["Secret"]
    assert given <= secret["stringData"].keys()
    assert all("REPLACE-ME" in value for value in secret["stringData"].values())

    app = next(c for c in pod["spec"]["containers"] if c["name"] == "app")
    app_env = {e["name"]: e for e in app["env"]}
    assert app_env["OPENAI_BASE_URL"]["value"] == "http://127.0.0.1:4000/v1"
    assert app_env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "ROUTER_CLIENT_KEY"

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "4000"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["publishNotReadyAddresses"] is True
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {4000}


def test_compose_prometheus_scrapes_the_router_and_loads_the_rules():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["router"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert "./routes.example.yaml:/etc/llm-router/routes.yaml:ro" in services["router"]["volumes"]
    assert services["router"]["env_file"] == ".env"
    assert all(
        port.startswith("127.0.0.1:") for s in services.values() for port in s.get("ports", [])
    )

    mounts = dict(volume.split(":")[:2] for volume in services["prometheus"]["volumes"])
    assert mounts["./prometheus/rules.yml"] == "/etc/prometheus/rules.yml"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert prometheus["rule_files"] == ["/etc/prometheus/rules.yml"]
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["router:4000"]
    assert prometheus["global"]["scrape_interval"] == "15s"

    grafana = dict(volume.split(":")[:2] for volume in services["grafana"]["volumes"])
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )
    assert grafana["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert grafana["./grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_replicas_profile_runs_two_routers_sharing_one_redis():
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    replicas = [services["replica-a"], services["replica-b"]]
    assert services["redis"]["profiles"] == ["replicas"] and "ports" not in services["redis"]
    for replica in replicas:
        assert replica["profiles"] == ["replicas"] and replica["depends_on"] == ["redis"]
        assert "./routes.replicas.yaml:/etc/llm-router/routes.yaml:ro" in replica["volumes"]
    assert {replica["ports"][0] for replica in replicas} == {
        "127.0.0.1:4001:4000",
        "127.0.0.1:4002:4000",
    }
    environ = {k: v for k, v in FAKE_ENV.items() if k != "REDIS_URL"}  # the default applies
    text = (DEPLOY / "routes.replicas.yaml").read_text()
    state = parse_config(text, source="routes.yaml", environ=environ).state
    assert (state.backend, state.url) == ("redis", "redis://redis:6379/0")
    assert "redis" in (DEPLOY / "Dockerfile").read_text().split("pip install", 1)[1].split("\n")[0]


def test_dockerfile_runs_the_cli_as_non_root_with_the_mounted_config():
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    instructions = [line for line in lines if line and not line.startswith(("#", " "))]

    def only(keyword: str) -> str:
        (found,) = [line for line in instructions if line.startswith(keyword + " ")]
        return found.removeprefix(keyword + " ")

    assert only("FROM") == "python:3.11-slim"
    user = only("USER").split(":")[0]
    assert user not in {"0", "root"}
    (deployment,) = yaml.safe_load_all((KUBERNETES / "deployment.yaml").read_text())
    assert router_container(deployment)["securityContext"]["runAsUser"] == int(user)
    assert json.loads(only("ENTRYPOINT")) == ["llm-router"]
    assert json.loads(only("CMD")) == [
        "serve",
        "--config",
        "/etc/llm-router/routes.yaml",
        "--host",
        "0.0.0.0",
    ]
    assert only("EXPOSE") == "4000"
    at = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK"))
    healthcheck = " ".join(lines[at : at + 2])  # the instruction and its continuation
    # GET /healthz on routes.yaml's port (router/probe.py), run against a real router in
    # tests/deploy/test_container.py.
    assert json.loads(healthcheck.split(" CMD ", 1)[1]) == ["python", "-m", "router.probe"]
    root = DEPLOY.parent
    for copy in (line for line in instructions if line.startswith("COPY ")):
        for source in copy.split()[1:-1]:
            assert (root / source).exists(), copy


@pytest.mark.parametrize(
    "routes_text",
    [
        pytest.param((DEPLOY / "routes.example.yaml").read_text(), id="compose-routes-example"),
        pytest.param((DEPLOY / "routes.replicas.yaml").read_text(), id="compose-replicas"),
        pytest.param(
            yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())["data"]["routes.yaml"],
            id="kubernetes-configmap",
        ),
    ],
)
def test_container_configs_load_listen_everywhere_and_demand_a_client_key(routes_text):
    config = parse_config(routes_text, source="routes.yaml", environ=FAKE_ENV)
    assert config.server.host == "0.0.0.0"
    assert config.server.client_keys == ("fake-client-token",)
    assert set(config.models) == {"gpt-5.4", "gpt-5.4-mini"}
    assert not config.skipped_keys
    # Without its client key the router must refuse to start, not run open.
    unset = {k: v for k, v in FAKE_ENV.items() if k != "ROUTER_CLIENT_KEY"}
    with pytest.raises(ConfigError):
        parse_config(routes_text, source="routes.yaml", environ=unset)


def test_env_example_names_every_variable_of_the_compose_config_and_holds_no_value():
    example = (DEPLOY / ".env.example").read_text()
    entries = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    assert variables_in((DEPLOY / "routes.example.yaml").read_text()) == entries.keys()
    assert set(entries.values()) == {""}
    assert not (DEPLOY / ".env").exists() or ".env" in (DEPLOY.parent / ".gitignore").read_text()


def test_grace_periods_outlast_the_routers_drain():
    """SIGKILL comes only after the router's drain: the listener's grace plus the time
    requests in flight get (README "Signals and startup")."""
    (deployment,) = [
        d for d in yaml.safe_load_all((KUBERNETES / "deployment.yaml").read_text())
        if d["kind"] == "Deployment"
    ]  # fmt: skip
    routes_text = yaml.safe_load((KUBERNETES / "configmap.yaml").read_text())["data"]["routes.yaml"]
    server = parse_config(routes_text, source="routes.yaml", environ=FAKE_ENV).server
    assert server.drain_grace >= 2  # endpoints are removed while it still accepts
    period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert period > server.drain_grace + server.drain_timeout

    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    stop_grace = compose["services"]["router"]["stop_grace_period"]
    assert stop_grace.endswith("s")
    routes_text = (DEPLOY / "routes.example.yaml").read_text()
    server = parse_config(routes_text, source="routes.yaml", environ=FAKE_ENV).server
    assert float(stop_grace.removesuffix("s")) > server.drain_grace + server.drain_timeout
