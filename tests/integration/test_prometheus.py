"""Metrics end to end: a Ray head, a real Prometheus configured from cluster/prometheus.yml, a job.

Run: pytest tests/integration/test_prometheus.py   (needs: apt-get install prometheus)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from swap import metrics

from ..helpers import REPO, tiny_spec
from ..ray_cluster import free_port, start, stop
from ..unit.test_metrics import panel_queries  # the dashboard the unit tests check

# Ray's export interval, for the head and the driver: 1 s instead of 10 s keeps the test short.
FAST_EXPORT = {"RAY_metrics_report_interval_ms": "1000"}
# Token auth is tested in test_submit.py; here it would only add a token to pass around.
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}
# On SIGTERM a node waits up to 30 s for its idle workers' leases to drain; skip that wait.
NO_DRAIN = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


@pytest.fixture(scope="module", autouse=True)
def prometheus_binary() -> str:
    """Checked before any Ray starts. CI must run this test: there, no binary is a failure."""
    path = shutil.which("prometheus", path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/bin")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("prometheus is not installed; .ci/run installs it (apt-get install prometheus)")
    pytest.skip("prometheus is not installed (apt-get install prometheus); CI runs this test")


def wait_for(what: str, check, seconds: float, interval: float = 0.25):
    """Poll `check()` until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(interval)


def discovery_targets(path: Path) -> list[str]:
    try:
        return [t for group in json.loads(path.read_text()) for t in group["targets"]]
    except (OSError, ValueError):  # not written yet, or caught between writes
        return []


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A Ray head with a fixed metrics export port; yields (address, discovery file, env)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rm", dir="/tmp"))  # short: Ray's socket paths
    env = {**os.environ, **FAST_EXPORT, **NO_AUTH, **NO_DRAIN}
    env.pop("RAY_ADDRESS", None)
    gcs_port, metrics_port = free_port(), free_port()
    process = start(
        [
            "--head",
            f"--port={gcs_port}",
            f"--metrics-export-port={metrics_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
        ],
        env,
        temp_dir / "ray-start.log",
    )
    discovery = temp_dir / "prom_metrics_service_discovery.json"
    try:
        target = wait_for(
            "the head in Ray's service-discovery file",
            lambda: [t for t in discovery_targets(discovery) if t.endswith(f":{metrics_port}")],
            seconds=60,
        )[0]
        node_ip = target.rpartition(":")[0]
        yield f"{node_ip}:{gcs_port}", discovery.resolve(), env
    finally:
        stop_head(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_head(process: subprocess.Popen) -> None:
    """Stop the head's processes, and only them, before its temp dir goes."""
    process.terminate()  # `ray start --block` stops its own processes on SIGTERM
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    stop(process)  # whatever is left of its process group

    def group_gone() -> bool:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for("the Ray head's processes to exit", group_gone, seconds=30)


@pytest.fixture(scope="module")
def prometheus(prometheus_binary, ray_cluster, tmp_path_factory) -> Iterator[str]:
    """Prometheus on 127.0.0.1, with cluster/prometheus.yml pointed at the test head."""
    _, discovery, _ = ray_cluster
    config = yaml.safe_load((REPO / "cluster" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    [scrape] = config["scrape_configs"]
    scrape["file_sd_configs"] = [{"files": [str(discovery)], "refresh_interval": "1s"}]
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = work / "prometheus.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_for("Prometheus to be ready", lambda: _ready(url, process, log), 30)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str, process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"prometheus exited with {process.returncode}: {log.read_text()[-2000:]}")
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def query(url: str, promql: str, **params: str) -> list[dict]:
    """An instant query through Prometheus's HTTP API (`/api/v1/query_range` if given `step`)."""
    endpoint = "query_range" if "step" in params else "query"
    arguments = urllib.parse.urlencode({"query": promql, **params})
    with urllib.request.urlopen(f"{url}/api/v1/{endpoint}?{arguments}", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="module")
def scraped_job(ray_cluster, prometheus, tmp_path_factory):
    """`swap run` of a tiny spec on the head; returns (results.json, stdout, Prometheus URL)."""
    address, _, env = ray_cluster
    out = tmp_path_factory.mktemp("runs")
    spec_file = out / "tiny.yaml"
    spec = tiny_spec(out, phase1={"max_epochs": 2}, phase2={"workers": 2})
    spec_file.write_text(spec.to_yaml())
    run = subprocess.run(
        [sys.executable, "-m", "swap", "run", str(spec_file)],
        env={**env, "RAY_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [results_file] = out.glob("tiny/*/results.json")
    results = json.loads(results_file.read_text())
    final = f'last_over_time(swap_final_test_accuracy{{job="{results["run_id"]}"}}[10m])'
    wait_for("the final accuracy in Prometheus", lambda: query(prometheus, final), 30)
    return results, run.stdout, prometheus


def series(url: str, promql: str) -> dict[tuple[str, str], float]:
    """{(phase, worker): value} of `max by (phase, worker) (promql)`.

    Ray adds labels of its own (the reporting process's WorkerId, ...); this drops them.
    """
    return {
        (r["metric"].get("phase", ""), r["metric"].get("worker", "")): float(r["value"][1])
        for r in query(url, f"max by (phase, worker) ({promql})")
    }


def test_swap_run_says_where_metrics_are_scraped(scraped_job):
    results, stdout, _ = scraped_job
    assert f"metrics: job={results['run_id']}, served by this node at http://" in stdout
    assert "prom_metrics_service_discovery.json" in stdout


def test_every_metric_reaches_prometheus_with_its_labels(scraped_job):
    results, _, url = scraped_job
    job = results["run_id"]
    found = query(url, f'last_over_time({{__name__=~"swap_.+", job="{job}"}}[10m])')
    assert {r["metric"]["__name__"] for r in found} == {m.name for m in metrics.METRICS}
    by_name = {m.name: m for m in metrics.METRICS}
    for r in found:
        labels = r["metric"]
        assert labels["name"] == "tiny" and "exported_job" not in labels
        assert set(metrics.WORKER_LABELS) & set(labels) == set(by_name[labels["__name__"]].labels)
    tested = series(url, f'last_over_time(swap_test_accuracy{{job="{job}"}}[10m])')
    scored = {("3", "phase 1"), ("3", "uniform average")}  # phase 3's scores of each model
    assert set(tested) == {("1", "all"), ("2", "0"), ("2", "1"), ("3", "average")} | scored
    for name in ("swap_model_test_nll", "swap_model_test_ece", "swap_model_test_brier"):
        assert set(series(url, f'last_over_time({name}{{job="{job}"}}[10m])')) == scored, name


def test_values_match_the_run(scraped_job):
    results, _, url = scraped_job
    job = f'job="{results["run_id"]}"'
    # Every sample of the phase, in time order: it only moves forward, and ends done. Ray
    # exports every 10 s, so a short phase (and on a loaded machine even phase 1) may fall
    # between two exports; at least one running phase must be seen.
    [phase] = query(url, f"swap_phase{{{job}}}[10m]")
    values = [float(v) for _, v in phase["values"]]
    assert values == sorted(values) and set(values) <= {0, 1, 2, 3, 4}
    assert set(values) & {1, 2, 3}
    assert values[-1] == metrics.DONE
    [final] = query(url, f"last_over_time(swap_final_test_accuracy{{{job}}}[10m])")
    assert float(final["value"][1]) == pytest.approx(results["phase3"]["test_accuracy"], abs=1e-12)

    speed = series(url, f"max_over_time(swap_samples_per_second{{{job}}}[10m])")
    assert set(speed) == {("1", "all"), ("2", "0"), ("2", "1")}
    assert all(value > 0 for value in speed.values())
    samples = series(url, f"last_over_time(swap_samples_total{{{job}}}[10m])")
    assert samples[("1", "all")] == sum(h["samples"] for h in results["phase1"]["history"])
    for worker in results["phase2"]["workers"]:
        assert samples[("2", str(worker["index"]))] == sum(h["samples"] for h in worker["history"])
    epochs = series(url, f"last_over_time(swap_epochs_completed{{{job}}}[10m])")
    assert epochs == {("1", "all"): 2, ("2", "0"): 1, ("2", "1"): 1}

    counts = {
        name: series(url, f"last_over_time(swap_phase2_workers_{name}{{{job}}}[10m])")
        for name in ("running", "finished", "failed")
    }
    assert counts == {"running": {("", ""): 0}, "finished": {("", ""): 2}, "failed": {("", ""): 0}}
    seconds = series(url, f"last_over_time(swap_phase_duration_seconds{{{job}}}[10m])")
    assert seconds[("1", "")] == pytest.approx(results["phase1"]["seconds"])
    assert seconds[("3", "")] == pytest.approx(results["phase3"]["seconds"])


def test_every_dashboard_panel_has_data_for_the_job(scraped_job):
    results, _, url = scraped_job
    run_id = results["run_id"]
    window = {"start": str(time.time() - 600), "end": str(time.time()), "step": "1s"}
    for expr in panel_queries():
        assert query(url, expr.replace("$job", run_id), **window), expr
    # The dashboard's `job` variable: label_values(swap_phase, job).
    listed = f"{url}/api/v1/label/job/values?{urllib.parse.urlencode({'match[]': 'swap_phase'})}"
    with urllib.request.urlopen(listed, timeout=10) as response:
        assert run_id in json.loads(response.read())["data"]
