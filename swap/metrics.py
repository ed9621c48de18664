"""Prometheus metrics of swap jobs: every name, label and description, and how they are recorded.

Run: python -m swap.metrics   (lists every metric as Prometheus names it)

Metrics go through `ray.util.metrics`, so they leave with Ray's own: every Ray node exports them
on its metrics port, listed in Ray's service-discovery file, and a Prometheus that scrapes the
cluster needs no target per job. Ray names every application metric `ray_<name>` on export;
`cluster/prometheus.yml` renames `ray_swap_*` back to `swap_*` and restores the `job` label (see
there). Recording never raises: a run without Ray metrics trains the same.

Where values come from: the training processes record live progress (epochs, steps, samples,
loss, accuracy, throughput, checkpoints); the driver records the phase, durations, worker
counts and evaluations. The driver lives as long as the job, and Ray flushes a process's metrics
when it exits, so a job's final values (phase 4, final accuracy) reach Prometheus.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray
from ray.util.metrics import Counter, Gauge

log = logging.getLogger(__name__)

# Label keys: a fixed, small set. Never per step or per epoch.
JOB = "job"  # the run id: <output.dir>/<name>/<run id>
NAME = "name"  # the spec's name
PHASE = "phase"  # "1", "2" or "3"
WORKER = "worker"  # phase 2: the worker index; phase 1: "all"; phase 3: "average"
RUN_LABELS = (JOB, NAME)
WORKER_LABELS = (JOB, NAME, PHASE, WORKER)
PHASE1_WORKER = "all"  # phase 1's ranks train one model; their statistics are all-reduced
AVERAGE_WORKER = "average"  # phase 3's averaged model

# Values of the phase gauge.
PENDING, DONE, FAILED, INTERRUPTED = 0, 4, -1, -2

# Ray prefixes what it exports; cluster/prometheus.yml takes the prefix off again.
RAY_EXPORT_PREFIX = "ray_"


@dataclass(frozen=True)
class Metric:
    name: str  # the Prometheus name (after cluster/prometheus.yml); Ray exports ray_<name>
    kind: Literal["gauge", "counter"]
    description: str
    labels: tuple[str, ...] = WORKER_LABELS


CURRENT_PHASE = Metric(
    "swap_phase",
    "gauge",
    "Current phase: 0 pending, 1-3 running, 4 done, -1 failed, -2 interrupted",
    RUN_LABELS,
)
EPOCHS = Metric("swap_epochs_completed", "gauge", "Training epochs completed")
STEPS = Metric("swap_optimizer_steps_total", "counter", "Optimizer steps taken")
SAMPLES = Metric("swap_samples_total", "counter", "Training examples processed")
TRAIN_LOSS = Metric("swap_train_loss", "gauge", "Mean training loss of the latest epoch")
TRAIN_ACCURACY = Metric(
    "swap_train_accuracy", "gauge", "Training accuracy of the latest epoch (0-1)"
)
SAMPLES_PER_SECOND = Metric(
    "swap_samples_per_second", "gauge", "Training examples per second in the latest epoch"
)
TEST_ACCURACY = Metric("swap_test_accuracy", "gauge", "Test accuracy of a phase's model (0-1)")
VAL_ACCURACY = Metric("swap_val_accuracy", "gauge", "Validation accuracy of a phase's model (0-1)")
CHECKPOINT_BYTES = Metric("swap_checkpoint_bytes", "gauge", "Size of the latest checkpoint")
CHECKPOINT_WRITE_SECONDS = Metric(
    "swap_checkpoint_write_seconds", "gauge", "Time to write the latest checkpoint file"
)
PHASE_DURATION = Metric(
    "swap_phase_duration_seconds",
    "gauge",
    "Wall-clock time of a finished phase",
    (JOB, NAME, PHASE),
)
PHASE2_RUNNING = Metric(
    "swap_phase2_workers_running",
    "gauge",
    "Phase-2 workers submitted and not yet ended (including those queued for resources)",
    RUN_LABELS,
)
PHASE2_FINISHED = Metric(
    "swap_phase2_workers_finished", "gauge", "Phase-2 workers finished", RUN_LABELS
)
PHASE2_FAILED = Metric("swap_phase2_workers_failed", "gauge", "Phase-2 workers failed", RUN_LABELS)
AVERAGING_SECONDS = Metric(
    "swap_averaging_seconds", "gauge", "Time to average the phase-2 weights", RUN_LABELS
)
BN_REFRESH_SECONDS = Metric(
    "swap_bn_refresh_seconds",
    "gauge",
    "Time to recompute the averaged model's BatchNorm statistics",
    RUN_LABELS,
)
FINAL_TEST_ACCURACY = Metric(
    "swap_final_test_accuracy",
    "gauge",
    "Test accuracy of the final averaged model, BatchNorm refreshed unless turned off (0-1)",
    RUN_LABELS,
)
# Phase 3's scores of every model it evaluates (worker label: "phase 1", "worker 0", ...,
# "uniform average", "greedy soup", "ensemble"), on the test set.
MODEL_NLL = Metric("swap_model_test_nll", "gauge", "Test negative log-likelihood of a model")
MODEL_ECE = Metric(
    "swap_model_test_ece", "gauge", "Test expected calibration error of a model (15 bins, 0-1)"
)
MODEL_BRIER = Metric("swap_model_test_brier", "gauge", "Test Brier score of a model (0-2)")

METRICS = (
    CURRENT_PHASE,
    EPOCHS,
    STEPS,
    SAMPLES,
    TRAIN_LOSS,
    TRAIN_ACCURACY,
    SAMPLES_PER_SECOND,
    TEST_ACCURACY,
    VAL_ACCURACY,
    CHECKPOINT_BYTES,
    CHECKPOINT_WRITE_SECONDS,
    PHASE_DURATION,
    PHASE2_RUNNING,
    PHASE2_FINISHED,
    PHASE2_FAILED,
    AVERAGING_SECONDS,
    BN_REFRESH_SECONDS,
    FINAL_TEST_ACCURACY,
    MODEL_NLL,
    MODEL_ECE,
    MODEL_BRIER,
)


@dataclass(frozen=True)
class Labels:
    """Which series a value belongs to: one run, and for per-worker metrics a phase and worker."""

    job: str
    name: str
    phase: str = ""
    worker: str = ""

    @classmethod
    def of_run(cls, name: str, run_dir: str | Path) -> Labels:
        """The run id is the run directory's last part (a path or a storage URI)."""
        return cls(job=str(run_dir).rstrip("/").rpartition("/")[2], name=name)

    def at(self, phase: int, worker: int | str) -> Labels:
        return dataclasses.replace(self, phase=str(phase), worker=str(worker))

    def tags(self, keys: tuple[str, ...]) -> dict[str, str]:
        values = {JOB: self.job, NAME: self.name, PHASE: self.phase, WORKER: self.worker}
        return {key: values[key] for key in keys}


_warned = False


def best_effort(record_values: Callable[..., None]) -> Callable[..., None]:
    """Never let recording raise: metrics must not fail a run. The first error is logged."""

    @functools.wraps(record_values)
    def guarded(*args: Any, **kwargs: Any) -> None:
        global _warned
        try:
            record_values(*args, **kwargs)
        except Exception as exc:
            if not _warned:
                _warned = True
                log.warning("swap metrics: not recorded (%s: %s)", type(exc).__name__, exc)

    return guarded


@best_effort
def set_phase(labels: Labels, phase: int) -> None:
    record(CURRENT_PHASE, phase, labels)


@best_effort
def record_epoch(labels: Labels, epoch: dict[str, Any], steps: int) -> None:
    """One finished training epoch, as `swap.training.epoch_record` describes it."""
    record(EPOCHS, epoch["epoch"], labels)
    record(STEPS, steps, labels)
    record(SAMPLES, epoch["samples"], labels)
    record(TRAIN_LOSS, epoch["train_loss"], labels)
    record(TRAIN_ACCURACY, epoch["train_accuracy"], labels)
    if epoch["seconds"] > 0:
        record(SAMPLES_PER_SECOND, epoch["samples"] / epoch["seconds"], labels)


@best_effort
def record_checkpoint(labels: Labels, saved: Any, seconds: float) -> None:
    """A checkpoint written in `seconds`: what `save_state_dict` returned, or a local path."""
    record(CHECKPOINT_WRITE_SECONDS, seconds, labels)
    size = getattr(saved, "size", None)
    if size is None:
        with contextlib.suppress(OSError):  # not a local file (remote storage): no size
            size = os.path.getsize(saved)
    if size is not None:
        record(CHECKPOINT_BYTES, size, labels)


@best_effort
def record_evaluation(labels: Labels, result: dict[str, Any]) -> None:
    """A model's test (and, if held out, validation) accuracy from a phase's result."""
    record(TEST_ACCURACY, result["test_accuracy"], labels)
    if result.get("val_accuracy") is not None:
        record(VAL_ACCURACY, result["val_accuracy"], labels)


@best_effort
def record_phase_seconds(labels: Labels, phase: int, seconds: float) -> None:
    record(PHASE_DURATION, seconds, labels.at(phase, ""))


@best_effort
def record_phase1(labels: Labels, summary: dict[str, Any]) -> None:
    record_phase_seconds(labels, 1, summary["seconds"])
    record_evaluation(labels.at(1, PHASE1_WORKER), summary)


@best_effort
def record_phase2_workers(labels: Labels, running: int, ended: Iterable[dict[str, Any]]) -> None:
    """How many workers are running, and how the `ended` ones (their results) ended."""
    statuses = [worker["status"] for worker in ended]
    record(PHASE2_RUNNING, running, labels)
    record(PHASE2_FINISHED, statuses.count("finished"), labels)
    record(PHASE2_FAILED, statuses.count("failed"), labels)


@best_effort
def record_phase3(labels: Labels, result: dict[str, Any]) -> None:
    """The coordinator's result: timings, the averaged model's accuracies and its file."""
    record_phase_seconds(labels, 3, result["seconds"])
    record(AVERAGING_SECONDS, result["average_seconds"], labels)
    record(BN_REFRESH_SECONDS, result["bn_refresh_seconds"], labels)
    average = labels.at(3, AVERAGE_WORKER)
    record_evaluation(average, result)
    if "model_write_seconds" in result:
        record_checkpoint(average, result["model"], result["model_write_seconds"])
    record(FINAL_TEST_ACCURACY, result["test_accuracy"], labels)
    for model in result.get("models", []):
        test, scored = model["test"], labels.at(3, model["model"])
        if test.get("count"):
            record(TEST_ACCURACY, test["accuracy"], scored)
            record(MODEL_NLL, test["nll"], scored)
            record(MODEL_ECE, test["ece"], scored)
            record(MODEL_BRIER, test["brier"], scored)


@dataclass(frozen=True)
class WorkerMetrics:
    """The `WorkerEvents` of swap.phases.phase2_worker that record one worker's metrics."""

    labels: Labels

    def epoch(self, record: dict[str, Any], steps: int) -> None:
        record_epoch(self.labels, record, steps)

    def checkpoint(self, saved: Any, seconds: float) -> None:
        record_checkpoint(self.labels, saved, seconds)


_instruments: dict[str, Any] = {}


@best_effort
def record(metric: Metric, value: float, labels: Labels) -> None:
    """Set a gauge or add to a counter."""
    instrument = _instrument(metric)
    tags = labels.tags(metric.labels)
    if metric.kind == "counter":
        if value > 0:  # Ray counters reject increments of 0
            instrument.inc(float(value), tags=tags)
    else:
        instrument.set(float(value), tags=tags)


def _instrument(metric: Metric) -> Any:
    if metric.name not in _instruments:
        kind = Counter if metric.kind == "counter" else Gauge
        _instruments[metric.name] = kind(metric.name, metric.description, metric.labels)
    return _instruments[metric.name]


def exported_name(metric: Metric) -> str:
    """The name Ray's metrics endpoint serves (before cluster/prometheus.yml renames it)."""
    return RAY_EXPORT_PREFIX + metric.name


def scrape_hint(labels: Labels) -> str:
    """Where this driver's node serves metrics, and the service-discovery file listing all nodes.

    Call after connecting to Ray. The file is written on the head node, in its session dir.
    """
    try:
        node_id = ray.get_runtime_context().get_node_id()
        node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
        address = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        session = ray._private.worker.global_worker.node.get_session_dir_path()
    except Exception as exc:  # e.g. Ray Client: no local node
        return f"metrics: job={labels.job}; no local Ray node to name ({type(exc).__name__})"
    discovery = Path(session) / "prom_metrics_service_discovery.json"
    return (
        f"metrics: job={labels.job}, served by this node at {address} (as ray_swap_*); "
        f"Prometheus finds every node in {discovery} on the head node (cluster/prometheus.yml)"
    )


def main() -> None:
    for metric in METRICS:
        print(f"{metric.name:<32} {metric.kind:<8} {','.join(metric.labels):<22} ", end="")
        print(metric.description)


if __name__ == "__main__":
    main()
