"""Metric definitions and recording without Ray, and the shipped dashboard and scrape config.

Run: pytest tests/unit/test_metrics.py
"""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
import yaml
from ray.util.metrics import Counter, Gauge
from rich.console import Console

from swap import driver, metrics, ray_session
from swap.cli import main
from swap.errors import SwapError

from ..helpers import REPO, tiny_spec

DASHBOARD = REPO / "cluster" / "grafana" / "swap-dashboard.json"
PROMETHEUS_YML = REPO / "cluster" / "prometheus.yml"
DEFINED = {m.name for m in metrics.METRICS}

# PromQL words that look like metric names but are not.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's `$var`s left in place)."""
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", expr):
        followed_by_call = expr[match.end() :].lstrip().startswith("(")
        if not followed_by_call and match.group().lower() not in KEYWORDS:
            names.add(match.group())
    return names


def panel_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def variable_queries() -> list[str]:
    """The metric selectors of the dashboard's query variables (the `job` list)."""
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    queries = [v["query"]["query"] for v in variables if v["type"] == "query"]
    # Grafana's label_values(metric, label) names a metric as its first argument.
    return [re.sub(r"^label_values\((.+),\s*\w+\)$", r"\1", q) for q in queries]


def dashboard_queries() -> list[str]:
    return panel_queries() + variable_queries()


def test_metric_names_finds_every_selected_metric():
    expr = (
        'sum by (phase) (rate(swap_a_total{job=~"$job", x="by(y)"}[1m])) / on(job) '
        'group_left max(swap_b) * 2e3 + {__name__="swap_c"} and bool swap_d offset 5m'
    )
    assert metric_names(expr) == {"swap_a_total", "swap_b", "swap_c", "swap_d"}


def test_every_dashboard_query_names_only_exported_metrics():
    queries = dashboard_queries()
    assert len(queries) > 15
    for expr in queries:
        names = metric_names(expr)
        assert names, expr
        assert names <= DEFINED, f"{expr}: not in swap/metrics.py: {names - DEFINED}"


def test_the_dashboard_shows_every_metric_and_is_templated_on_job():
    assert set().union(*map(metric_names, dashboard_queries())) == DEFINED
    assert variable_queries() == ["swap_phase"]
    for expr in panel_queries():
        assert 'job=~"$job"' in expr, expr
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("phase timeline", "loss", "accuracy", "throughput", "failures", "final"):
        assert topic in titles


def test_metric_definitions_follow_prometheus_naming():
    assert len(DEFINED) == len(metrics.METRICS)
    for metric in metrics.METRICS:
        assert re.fullmatch(r"swap_[a-z0-9_]+", metric.name), metric.name
        assert metric.name.endswith("_total") == (metric.kind == "counter"), metric.name
        assert set(metric.labels) <= set(metrics.WORKER_LABELS)
        assert metric.labels[:2] == (metrics.JOB, metrics.NAME)
        assert metric.description


def test_prometheus_yml_renames_what_ray_exports_to_the_defined_names():
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    [scrape] = config["scrape_configs"]
    assert scrape["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    rename = scrape["metric_relabel_configs"][0]
    assert rename["source_labels"] == ["__name__"] and rename["target_label"] == "__name__"
    for metric in metrics.METRICS:
        exported = metrics.exported_name(metric)
        assert exported == "ray_" + metric.name
        renamed = re.fullmatch(rename["regex"], exported).expand(
            rename["replacement"].replace("$", "\\")
        )
        assert renamed == metric.name
    assert re.fullmatch(rename["regex"], "ray_node_cpu_utilization") is None  # Ray's own stay


@pytest.fixture
def recorded(monkeypatch) -> dict[tuple[str, tuple[str, ...]], float]:
    """Stands in for ray.util.metrics: {(name, label values): value} as it would be exported."""
    values: dict[tuple[str, tuple[str, ...]], float] = {}

    class Instrument:
        def __init__(self, metric: metrics.Metric):
            self.metric = metric

        def set(self, value, tags):
            assert tuple(tags) == self.metric.labels
            values[(self.metric.name, tuple(tags.values()))] = value

        def inc(self, value, tags):
            assert value > 0 and tuple(tags) == self.metric.labels
            key = (self.metric.name, tuple(tags.values()))
            values[key] = values.get(key, 0) + value

    monkeypatch.setattr(metrics, "_instrument", Instrument)
    return values


def test_epochs_count_up_and_keep_the_latest_values(recorded):
    worker = metrics.Labels("run-1", "tiny").at(2, 3)
    tags = ("run-1", "tiny", "2", "3")
    epoch = {"epoch": 1, "samples": 100, "seconds": 4.0, "train_loss": 0.5, "train_accuracy": 0.8}
    metrics.record_epoch(worker, epoch, steps=7)
    metrics.record_epoch(worker, {**epoch, "epoch": 2, "train_loss": 0.25, "seconds": 2.0}, 7)
    assert recorded == {
        ("swap_epochs_completed", tags): 2,
        ("swap_optimizer_steps_total", tags): 14,
        ("swap_samples_total", tags): 200,
        ("swap_train_loss", tags): 0.25,
        ("swap_train_accuracy", tags): 0.8,
        ("swap_samples_per_second", tags): 50.0,
    }


def test_driver_records_phase_workers_and_the_final_model(recorded, tmp_path):
    run = metrics.Labels.of_run("tiny", "s3://bucket/runs/tiny/run-7/")
    assert run == metrics.Labels("run-7", "tiny")
    metrics.set_phase(run, 2)
    ended = [{"status": "finished"}, {"status": "failed"}, {"status": "finished"}]
    metrics.record_phase2_workers(run, 1, ended)
    model = tmp_path / "model.pt"
    model.write_bytes(b"x" * 1234)
    metrics.record_phase3(
        run,
        {
            "seconds": 9.0,
            "average_seconds": 1.5,
            "bn_refresh_seconds": 2.5,
            "test_accuracy": 0.93,
            "val_accuracy": None,
            "model": str(model),
            "model_write_seconds": 0.01,
        },
    )
    metrics.set_phase(run, metrics.DONE)
    average = ("run-7", "tiny", "3", "average")
    assert recorded == {
        ("swap_phase", ("run-7", "tiny")): 4,
        ("swap_phase2_workers_running", ("run-7", "tiny")): 1,
        ("swap_phase2_workers_finished", ("run-7", "tiny")): 2,
        ("swap_phase2_workers_failed", ("run-7", "tiny")): 1,
        ("swap_phase_duration_seconds", ("run-7", "tiny", "3")): 9.0,
        ("swap_averaging_seconds", ("run-7", "tiny")): 1.5,
        ("swap_bn_refresh_seconds", ("run-7", "tiny")): 2.5,
        ("swap_test_accuracy", average): 0.93,
        ("swap_checkpoint_write_seconds", average): 0.01,
        ("swap_checkpoint_bytes", average): 1234,
        ("swap_final_test_accuracy", ("run-7", "tiny")): 0.93,
    }


def test_checkpoint_size_from_what_was_saved_or_from_a_local_file(recorded, tmp_path):
    where = metrics.Labels("run-1", "tiny").at(2, 0)
    metrics.record_checkpoint(where, SimpleNamespace(location="s3://b/m.pt", size=4321), 0.5)
    assert recorded[("swap_checkpoint_bytes", ("run-1", "tiny", "2", "0"))] == 4321
    (tmp_path / "model.pt").write_bytes(b"x" * 99)
    metrics.record_checkpoint(where, str(tmp_path / "model.pt"), 0.25)
    assert recorded[("swap_checkpoint_bytes", ("run-1", "tiny", "2", "0"))] == 99
    assert recorded[("swap_checkpoint_write_seconds", ("run-1", "tiny", "2", "0"))] == 0.25


def test_the_driver_marks_a_failed_job(recorded, monkeypatch, tmp_path):
    def phase1_fails(spec, run_dir, data, stream):
        raise RuntimeError("no GPU today")

    monkeypatch.setattr(driver, "connect_ray", lambda log_to_driver: None)
    monkeypatch.setattr(driver, "share_data", lambda splits: "the data")
    monkeypatch.setattr(driver, "start_phase2_processes", lambda spec, data, beside_phase1: [])
    monkeypatch.setattr(driver, "check_phase1_fits", lambda spec, console: None)
    monkeypatch.setattr(driver.metrics, "scrape_hint", lambda labels: f"metrics: job={labels.job}")
    monkeypatch.setattr(driver, "run_phase1", phase1_fails)
    out = io.StringIO()
    with pytest.raises(RuntimeError, match="no GPU today"):
        driver.run_job(tiny_spec(tmp_path), Console(file=out))
    [run_id] = [p.name for p in (tmp_path / "tiny").iterdir()]
    assert recorded == {("swap_phase", (run_id, "tiny")): metrics.FAILED}
    assert f"metrics: job={run_id}" in out.getvalue()


def test_recording_never_fails_a_run(monkeypatch, caplog):
    def broken(metric):
        raise RuntimeError("no metrics agent")

    monkeypatch.setattr(metrics, "_instrument", broken)
    monkeypatch.setattr(metrics, "_warned", False)
    metrics.set_phase(metrics.Labels("r", "n"), 1)
    metrics.record_checkpoint(metrics.Labels("r", "n").at(1, "all"), "s3://nowhere/model.pt", 1.0)
    metrics.record_epoch(metrics.Labels("r", "n").at(2, 0), {"epoch": 1})  # missing fields
    assert caplog.text.count("swap metrics: not recorded (RuntimeError: no metrics agent)") == 1


def test_ray_metrics_accept_every_definition(monkeypatch):
    """Through the real ray.util.metrics (no cluster needed): nothing is rejected."""
    monkeypatch.setattr(metrics, "_instruments", {})
    monkeypatch.setattr(metrics, "_warned", False)
    labels = metrics.Labels("r", "n").at(1, "all")
    for metric in metrics.METRICS:
        metrics.record(metric, 1.0, labels)
    metrics.record(metrics.STEPS, 0, labels)  # Ray rejects a 0 increment; record skips it
    assert not metrics._warned
    kinds = {name: type(i) for name, i in metrics._instruments.items()}
    assert kinds == {m.name: Counter if m.kind == "counter" else Gauge for m in metrics.METRICS}


@pytest.mark.parametrize(("value", "port"), [("", None), ("8080", 8080), (" 9100 ", 9100)])
def test_metrics_export_port_from_the_environment(monkeypatch, value, port):
    monkeypatch.setenv(ray_session.METRICS_PORT_ENV, value)
    assert ray_session.metrics_export_port() == port


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1"])
def test_a_bad_metrics_export_port_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(ray_session.METRICS_PORT_ENV, value)
    with pytest.raises(SwapError, match=f"SWAP_METRICS_EXPORT_PORT: .*{value!r}"):
        ray_session.metrics_export_port()


def test_swap_run_rejects_a_bad_metrics_port_before_starting(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(ray_session.METRICS_PORT_ENV, "http")
    config = REPO / "configs" / "quickstart.yaml"
    assert main(["run", str(config), f"output.dir={tmp_path}"]) == 2
    assert "swap: error: SWAP_METRICS_EXPORT_PORT" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # no run directory
