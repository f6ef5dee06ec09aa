"""deploy/: each part checked with the real tool it feeds (no Docker engine, no Grafana here).

* Prometheus config and rules: promtool check config / check rules / test rules.
* Alertmanager config: amtool check-config.
* Compose file: docker-compose's own parser (`docker-compose config`).
* Grafana provisioning and dashboards: structural checks (datasource uid, variables, query rules).
* Kubernetes manifests: kubernetes-validate against the Kubernetes schemas; the Prometheus
  Operator resources against the rule files and the Deployment they select.

The live evaluation of every dashboard query is in tests/test_dashboards_live.py.
With CI=true a missing tool fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
RULE_FILES = [PROM / "rules" / "mcp-recording.yml", PROM / "rules" / "mcp-alerts.yml"]
DASHBOARD_FILES = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
K8S = DEPLOY / "kubernetes"
DATASOURCE_UID = "mcp-prometheus"
RUNBOOK = "https://github.com/OWNER/mcp-metrics-middleware#runbook-"
GRAFANA_BUILTINS = {
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__all",
}
EXPECTED_ALERTS = {
    "McpTargetDown",
    "McpTargetsAbsent",
    "McpMetricsAbsent",
    "McpMetricsMissingOnTarget",
    "McpTrafficStopped",
    "McpRequestsRejected",
    "McpSessionStartFailing",
    "McpPathNotMatched",
    "McpToolErrorRatioHigh",
    "McpToolLatencyP95High",
    "McpUnknownToolCallsSpike",
    "McpMethodErrorRatioHigh",
    "McpOperationsInFlightHigh",
    "McpSessionsNearLimit",
    "McpMetricsLabelOverflow",
    "McpMetricsParseErrors",
    "McpToolSloFastBurn",
    "McpToolSloSlowBurn",
}
# The outages the transport alert must catch, each a promtool case (issue 14).
REJECTION_CASES = {"421", "406", "415", "404", "500", "503"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} is missing (apt-get install prometheus prometheus-alertmanager docker-compose)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def assert_config_ok(out: str) -> None:
    """promtool check config output: the config and every rule file it loads pass."""
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in out, out
    assert "is valid prometheus config file syntax" in out, out
    for path in RULE_FILES:
        count = len([r for g in load_yaml(path)["groups"] for r in g["rules"]])
        assert re.search(rf"Checking \S*/{path.name}\n\s+SUCCESS: {count} rules found", out), out
    assert out.count("SUCCESS: ") == 2 + len(RULE_FILES), out


def test_rule_files_are_the_two_known_ones() -> None:
    assert sorted((PROM / "rules").glob("*.yml")) == sorted(RULE_FILES)


def all_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in all_rules() if "alert" in rule}


# --------------------------------------------------------------------------- Prometheus


def test_promtool_check_config_of_the_deployed_config() -> None:
    result = run(tool("promtool"), "check", "config", PROM / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: " in result.stdout + result.stderr


def test_promtool_check_config_with_the_rule_files_loaded(tmp_path: Path) -> None:
    """The deployed config points at /etc/prometheus/rules (the container path); resolve it to
    the repository's rules so the config check also loads and checks them."""
    config = load_yaml(PROM / "prometheus.yml")
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(PROM / "rules" / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run(tool("promtool"), "check", "config", path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert_config_ok(out)


def test_prometheus_discovers_the_replicas_by_dns_on_the_compose_service() -> None:
    config = load_yaml(PROM / "prometheus.yml")
    (mcp,) = [job for job in config["scrape_configs"] if job["job_name"] == "mcp"]
    assert mcp["dns_sd_configs"] == [
        {"names": ["cat"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]
    assert "static_configs" not in mcp
    assert mcp["metrics_path"] == "/metrics"
    assert config["alerting"]["alertmanagers"] == [
        {"static_configs": [{"targets": ["alertmanager:9093"]}]}
    ]
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    assert compose["services"]["cat"]["environment"]["DEMO_PORT"] == "8000"


def test_promtool_check_rules() -> None:
    result = run(tool("promtool"), "check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = dict(re.findall(r"Checking (\S+)\n\s+SUCCESS: (\d+) rules found", result.stdout))
    assert counts == {str(p): str(len(_rules_in(p))) for p in RULE_FILES}, result.stdout


def _rules_in(path: Path) -> list[Any]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def test_promtool_unit_tests_pass() -> None:
    result = run(tool("promtool"), "test", "rules", "tests/mcp-alerts.test.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("SUCCESS"), result.stdout


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    suite = load_yaml(PROM / "tests" / "mcp-alerts.test.yml")
    assert suite["rule_files"] == [f"../rules/{p.name}" for p in RULE_FILES]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
        for check in case.get("promql_expr_test", []):
            m = re.fullmatch(r'ALERTS\{alertname="(\w+)"\}', check["expr"].strip())
            if m and check["exp_samples"]:
                firing.add(m.group(1))
    assert set(alerts()) == EXPECTED_ALERTS
    assert firing == EXPECTED_ALERTS
    assert silent == EXPECTED_ALERTS


def test_alerts_follow_the_awesome_prometheus_alerts_style() -> None:
    for name, rule in alerts().items():
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]*)+", name), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, name
        assert annotations["runbook_url"] == RUNBOOK + name.lower(), name
        assert "{{ $labels" in annotations["summary"] + annotations["description"], name
        assert "{{ $value" in annotations["description"] or name == "McpMetricsMissingOnTarget"


def test_rules_aggregate_replicas_and_never_average_quantiles() -> None:
    for rule in all_rules():
        expr = rule["expr"]
        name = rule.get("alert") or rule["record"]
        # avg_over_time of a recorded rate is fine; averaging across series (quantiles!) is not
        assert not re.search(r"\bavg\s*(\(|by|without)", expr), name
        for m in re.finditer(r"histogram_quantile\(\s*[\d.]+,\s*sum by \(([^)]*)\)", expr):
            assert "le" in [s.strip() for s in m.group(1).split(",")], name
            assert "instance" not in m.group(1), name
        assert expr.count("histogram_quantile") == len(
            re.findall(r"histogram_quantile\(\s*[\d.]+,\s*sum by", expr)
        ), name
        # every rate/increase is wrapped in a sum by (...) without instance
        for m in re.finditer(r"sum by \(([^)]*)\)", expr):
            assert "instance" not in m.group(1), name


def test_error_ratio_counts_only_server_side_errors_with_a_traffic_floor() -> None:
    recording = {r["record"]: r["expr"] for r in all_rules() if "record" in r}
    # Per-tool and per-method failures leave transport rejections (4xx) to McpRequestsRejected.
    for name in ("job_tool:mcp_tool_call_errors:rate5m", "job_method:mcp_request_errors:rate5m"):
        assert 'error_type!=""' in recording[name]
        assert 'error_type!~"4[0-9][0-9]"' in recording[name]
    rule = alerts()["McpToolErrorRatioHigh"]
    assert "job_tool:mcp_tool_calls:rate5m > 0.05" in rule["expr"]
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        expr = recording[f"job:mcp_tool_call_errors:ratio_rate{window}"]
        assert expr == (
            f"job:mcp_tool_call_errors:rate{window} / job:mcp_tool_calls:rate{window}"
        ), window
    for window in ("5m", "30m", "1h"):
        calls = recording[f"job:mcp_tool_calls:rate{window}"]
        errors = recording[f"job:mcp_tool_call_errors:rate{window}"]
        assert calls.count(f"[{window}]") == errors.count(f"[{window}]") == 1
        assert 'gen_ai_tool_name!="_OTHER"' in calls and 'gen_ai_tool_name!="_OTHER"' in errors
        assert 'error_type!=""' in errors and "error_type" not in calls


def test_long_windows_are_derived_from_recorded_5m_rates() -> None:
    """No rule reads days of raw samples: the 2h..3d windows average the recorded 5m rates."""
    recording = {r["record"]: r["expr"].strip() for r in all_rules() if "record" in r}
    for window in ("2h", "6h", "1d", "3d"):
        for kind in ("calls", "call_errors"):
            assert recording[f"job:mcp_tool_{kind}:rate{window}"] == (
                f"avg_over_time(job:mcp_tool_{kind}:rate5m[{window}])"
            )
    for rule in all_rules():
        for m in re.finditer(r"\b(rate|increase)\((\w+)\{[^}]*\}\[(\w+)\]", rule["expr"]):
            assert m.group(3) in {"5m", "10m", "15m", "30m", "1h"}, (rule, m.group(0))


def test_burn_alerts_have_a_minimum_failure_guard() -> None:
    for name, windows in (
        ("McpToolSloFastBurn", ("1h", "6h")),
        ("McpToolSloSlowBurn", ("1d", "3d")),
    ):
        expr = alerts()[name]["expr"]
        for window in windows:
            assert f"job:mcp_tool_call_errors:increase{window} >= 5" in expr, (name, window)


def test_every_rejection_outage_is_a_promtool_case() -> None:
    suite = load_yaml(PROM / "tests" / "mcp-alerts.test.yml")
    fired = {
        alert["exp_labels"]["code"]
        for case in suite["tests"]
        for check in case.get("alert_rule_test", [])
        if check["alertname"] == "McpRequestsRejected"
        for alert in check["exp_alerts"]
    }
    assert fired == REJECTION_CASES


def test_alertmanager_config() -> None:
    result = run(tool("amtool"), "check-config", DEPLOY / "alertmanager" / "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --------------------------------------------------------------------------- compose


def compose_config() -> dict[str, Any]:
    result = run(tool("docker-compose"), "-f", DEPLOY / "docker-compose.yml", "config")
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(yaml.safe_load(result.stdout))


def test_compose_file_parses_with_docker_compose() -> None:
    config = compose_config()
    assert set(config["services"]) == {"cat", "traffic", "prometheus", "alertmanager", "grafana"}
    assert set(config["volumes"]) == {"prometheus-data", "alertmanager-data", "grafana-data"}


def test_compose_services() -> None:
    services = compose_config()["services"]
    cat = services["cat"]
    assert cat["build"] == {"context": str(ROOT), "dockerfile": "demo/Dockerfile"}
    assert cat["deploy"]["replicas"] >= 2
    assert "ports" not in cat  # replicas are reached by DNS, not through the host
    assert cat["environment"]["DEMO_HOST"] == "0.0.0.0"
    assert services["traffic"]["depends_on"] == {"cat": {"condition": "service_healthy"}}
    assert "demo.traffic" in services["traffic"]["command"][0]
    for name, service in services.items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), (name, image)
        assert not image.endswith(":latest"), (name, image)
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published == {
        "prometheus": ["127.0.0.1:9090:9090/tcp"],
        "alertmanager": ["127.0.0.1:9093:9093/tcp"],
        "grafana": ["127.0.0.1:3000:3000/tcp"],
    }
    mounts = {name: s.get("volumes", []) for name, s in services.items()}
    assert f"{PROM}/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts["prometheus"]
    assert f"{PROM}/rules:/etc/prometheus/rules:ro" in mounts["prometheus"]
    assert "prometheus-data:/prometheus:rw" in mounts["prometheus"]
    assert "alertmanager-data:/alertmanager:rw" in mounts["alertmanager"]
    assert "grafana-data:/var/lib/grafana:rw" in mounts["grafana"]
    grafana = DEPLOY / "grafana"
    assert f"{grafana}/provisioning:/etc/grafana/provisioning:ro" in mounts["grafana"]
    assert f"{grafana}/dashboards:/etc/grafana/dashboards:ro" in mounts["grafana"]
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (grafana / "dashboards" / Path(home).name).exists()


def test_demo_dockerfile() -> None:
    text = (ROOT / "demo" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)$", text, re.M)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base)
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
    assert 'CMD ["python", "-m", "demo.server"]' in text
    assert "EXPOSE 8000" in text and "DEMO_PORT=8000" in text
    assert "USER 10001" in text
    ignore = (ROOT / "demo" / "Dockerfile.dockerignore").read_text().split()
    assert ignore[0] == "*" or "*" in ignore


# --------------------------------------------------------------------------- Grafana


def test_grafana_provisioning() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = load_yaml(provisioning / "datasources" / "datasources.yml")
    assert datasources["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    prom = by_uid[DATASOURCE_UID]
    assert prom["type"] == "prometheus"
    assert prom["url"] == "http://prometheus:9090"
    assert prom["isDefault"] is True
    scrape = load_yaml(PROM / "prometheus.yml")["global"]["scrape_interval"]
    assert prom["jsonData"]["timeInterval"] == scrape
    assert by_uid["mcp-alertmanager"]["url"] == "http://alertmanager:9093"
    providers = load_yaml(provisioning / "dashboards" / "dashboards.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in DASHBOARD_FILES}


def walk_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_dashboards_are_generated_from_the_script() -> None:
    result = run(sys.executable, DEPLOY / "grafana" / "generate_dashboards.py", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_structure() -> None:
    boards = dashboards()
    assert set(boards) == {"mcp-server", "mcp-http"}
    assert {b["uid"] for b in boards.values()} == {"mcp-server", "mcp-http"}
    assert boards["mcp-server"]["title"] == "MCP server"
    assert boards["mcp-http"]["title"] == "MCP HTTP transport"
    variables = {n: [v["name"] for v in b["templating"]["list"]] for n, b in boards.items()}
    assert variables == {
        "mcp-server": ["datasource", "job", "instance", "method", "tool"],
        "mcp-http": ["datasource", "job", "instance"],
    }
    rows = {n: [p["title"] for p in b["panels"] if p["type"] == "row"] for n, b in boards.items()}
    assert rows["mcp-server"] == [
        "Overview",
        "Tools",
        "Clients",
        "Errors",
        "Methods and protocol versions",
        "Payload sizes",
        "Notifications and progress",
        "Middleware health",
        "Business metrics (evil cat)",
    ]
    assert rows["mcp-http"] == [
        "Requests",
        "Rejected requests",
        "Long-lived streams",
    ]
    overview = [p["title"] for p in boards["mcp-server"]["panels"][1:7]]
    assert overview == [
        "Calls / s",
        "Error %",
        "p95 latency",
        "In flight",
        "Active sessions",
        "Unknown-tool calls",
    ]
    assert all(p["type"] == "stat" for p in boards["mcp-server"]["panels"][1:7])
    for name, board in boards.items():
        panels = walk_panels(board)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), name
        for p in panels:
            pos = p["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, (name, p["title"])
    business = json.dumps(boards["mcp-server"])
    assert "cat_claw_level_bucket" in business and "cat_sofa_scratches_total" in business
    assert any(p["type"] == "heatmap" for p in walk_panels(boards["mcp-server"]))


def test_every_panel_queries_the_datasource_variable() -> None:
    """No hard-coded uid: a `datasource` variable, defaulting to the provisioned Prometheus."""
    for name, board in dashboards().items():
        (ds_var,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert ds_var["name"] == "datasource" and ds_var["query"] == "prometheus"
        assert ds_var["current"]["value"] == DATASOURCE_UID
        assert DATASOURCE_UID not in json.dumps(board).replace(json.dumps(ds_var), "")
        for panel in walk_panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], (name, panel["title"])
            for t in panel["targets"]:
                assert t["datasource"]["uid"] == "${datasource}", (name, panel["title"])
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                assert var["datasource"]["uid"] == "${datasource}"


def test_overview_counts_requests_not_notifications() -> None:
    panels = {p["title"]: p for p in walk_panels(dashboards()["mcp-server"])}
    for title in ("Calls / s", "Error %", "p95 latency"):
        expr = panels[title]["targets"][0]["expr"]
        selectors = re.findall(r"\{([^}]*)\}", expr)
        assert selectors and all('mcp_method_name!~"notifications/.*"' in s for s in selectors)


def test_latency_panels_show_exemplars_and_the_client_row_reads_issue_13s_metric() -> None:
    panels = {p["title"]: p for p in walk_panels(dashboards()["mcp-server"])}
    for title in ("Latency (all operations)", "Tool latency p95", "p95 latency by method"):
        assert all(t.get("exemplar") is True for t in panels[title]["targets"]), title
    for title in ("Calls / s by client", "Error ratio by client", "p95 latency by client"):
        expr = panels[title]["targets"][0]["expr"]
        assert "mcp_server_client_operation_duration_seconds" in expr, title
        assert "mcp_client_name" in expr, title


def used_variables(text: str) -> set[str]:
    return {
        a or b or c for a, b, c in re.findall(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", text)
    }


def test_every_variable_used_is_defined() -> None:
    for name, board in dashboards().items():
        defined = {v["name"] for v in board["templating"]["list"]}
        texts = [t["expr"] for p in walk_panels(board) for t in p.get("targets", [])]
        texts += [
            t.get("legendFormat", "") for p in walk_panels(board) for t in p.get("targets", [])
        ]
        texts += [p["title"] for p in walk_panels(board)]
        texts += [p["datasource"]["uid"] for p in walk_panels(board) if "datasource" in p]
        for i, var in enumerate(board["templating"]["list"]):
            if var["type"] != "query":
                continue
            texts.append(var["query"]["query"])
            # a variable may only refer to the ones defined before it
            assert used_variables(var["query"]["query"]) <= (
                {v["name"] for v in board["templating"]["list"][:i]} | GRAFANA_BUILTINS
            ), (name, var["name"])
        used = set().union(*(used_variables(t) for t in texts))
        assert used - GRAFANA_BUILTINS <= defined, (name, used - GRAFANA_BUILTINS - defined)
        assert defined <= used, (name, "defined but unused", defined - used)


COUNTER_OR_HISTOGRAM = re.compile(r"\b(\w+(?:_total|_count|_sum|_bucket))\{")


def test_queries_rate_counters_sum_before_quantiles_and_total_with_range() -> None:
    for name, board in dashboards().items():
        for panel in walk_panels(board):
            for t in panel.get("targets", []):
                expr = t["expr"]
                where = (name, panel["title"], expr)
                # No raw counter: every counter/histogram series sits inside rate()/increase().
                for m in COUNTER_OR_HISTOGRAM.finditer(expr):
                    before = expr[: m.start()]
                    assert before.endswith(("rate(", "increase(")), where
                # Quantiles over merged buckets only.
                for m in re.finditer(r"histogram_quantile\(([\d.]+), (\w+)", expr):
                    assert m.group(2) == "sum", where
                assert len(re.findall(r"histogram_quantile\([\d.]+, sum by \(le\b", expr)) == (
                    expr.count("histogram_quantile")
                ), where
                assert "avg" not in expr, where
                # Windows: $__rate_interval for rates, $__range for totals.
                for m in re.finditer(r"\b(rate|increase)\(\w+\{[^}]*\}\[([^\]]+)\]\)", expr):
                    expected = "$__rate_interval" if m.group(1) == "rate" else "$__range"
                    assert m.group(2) == expected, where
                if "in the time range" in panel["title"] or "in range" in panel["title"]:
                    assert "[$__range]" in expr, where
                if "by (" in expr:
                    assert not re.search(r"by \([^)]*\binstance\b", expr), where


# --------------------------------------------------------------------------- Kubernetes


def k8s_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    validator = Path(sys.executable).parent / "kubernetes-validate"
    if not validator.exists():
        message = "kubernetes-validate is missing (pip install -e '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = run(validator, "--strict", K8S / "deployment.yaml", K8S / "service.yaml")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert out.count(" passed for resource ") == 2, out
    assert "passed for resource deployment/mcp-cat" in out
    assert "passed for resource service/mcp-cat" in out


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = k8s_docs("kustomization.yaml")
    assert kustomization["resources"] == [
        "deployment.yaml",
        "service.yaml",
        "podmonitor.yaml",
        "prometheusrule.yaml",
    ]


def test_operator_resources_select_the_deployment() -> None:
    (deployment,) = k8s_docs("deployment.yaml")
    (service,) = k8s_docs("service.yaml")
    (podmonitor,) = k8s_docs("podmonitor.yaml")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert podmonitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert podmonitor["kind"] == "PodMonitor"
    assert podmonitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    (endpoint,) = podmonitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == port["name"] == "http"
    assert endpoint["path"] == "/metrics"
    assert {"action": "replace", "targetLabel": "job", "replacement": "mcp"} in endpoint[
        "relabelings"
    ]
    annotations = pod["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port["containerPort"]),
        "prometheus.io/path": "/metrics",
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"DEMO_HOST": "0.0.0.0", "DEMO_PORT": str(port["containerPort"])}
    assert service["spec"]["sessionAffinity"] == "ClientIP"


def test_prometheusrule_is_generated_from_the_rule_files() -> None:
    script = K8S / "generate_prometheusrule.py"
    result = run(sys.executable, script, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (K8S / "prometheusrule.yaml").read_text().startswith("# GENERATED by ")


def test_probes_and_healthchecks_never_scrape_metrics() -> None:
    """A scrape is not a health check, and a metrics token would make it fail."""
    (deployment,) = k8s_docs("deployment.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "http"}, probe
        assert "httpGet" not in container[probe], probe
    healthcheck = load_yaml(DEPLOY / "docker-compose.yml")["services"]["cat"]["healthcheck"]
    assert "/metrics" not in " ".join(healthcheck["test"])
    assert "create_connection(('127.0.0.1', 8000)" in " ".join(healthcheck["test"])


def test_compose_pins_current_major_versions() -> None:
    services = load_yaml(DEPLOY / "docker-compose.yml")["services"]
    images = {name: s["image"] for name, s in services.items()}
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", images["prometheus"])
    assert re.fullmatch(r"prom/alertmanager:v0\.(2[89]|[3-9]\d)\.\d+", images["alertmanager"])
    assert re.fullmatch(r"grafana/grafana-oss:12\.\d+\.\d+", images["grafana"])


def test_prometheusrule_carries_exactly_the_rule_files(tmp_path: Path) -> None:
    (rule,) = k8s_docs("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    groups = [g for path in RULE_FILES for g in load_yaml(path)["groups"]]
    assert rule["spec"]["groups"] == groups
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = run(tool("promtool"), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_plain_prometheus_kubernetes_scrape_config(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery, so the pod discovery block is
    swapped for a static target; everything else (relabelling regexes, rule files) is checked."""
    config = load_yaml(K8S / "prometheus-kubernetes-sd.yml")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mcp"
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["10.0.0.1:8000"]}]
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in RULE_FILES:
        shutil.copy(path, rules / path.name)
    assert config["rule_files"] == ["rules/*.yml"]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = run(tool("promtool"), "check", "config", path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert_config_ok(out)
    relabel = {tuple(r["source_labels"]): r for r in job["relabel_configs"]}
    address = relabel[("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port")]
    assert re.sub(address["regex"], "\\1:\\2", "10.1.2.3:9999;8000") == "10.1.2.3:8000"


# --------------------------------------------------------------------------- README runbook


def test_every_runbook_url_has_its_section_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = re.findall(r"^#+ Runbook: (\w+)\s*$", readme, re.M)
    assert sorted(headings) == sorted(EXPECTED_ALERTS)


def test_make_targets_bring_the_stack_up_and_down() -> None:
    makefile = (ROOT / "Makefile").read_text()
    # A recipe is the tab-indented lines under its target.
    recipes = dict(re.findall(r"^([\w-]+):.*\n((?:\t.*\n)+)", makefile, re.M))
    assert "\tcd deploy && docker compose up -d --build\n" in recipes["stack-up"]
    assert "\tcd deploy && docker compose down\n" in recipes["stack-down"]
