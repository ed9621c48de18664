"""Reaching Ray: the cluster in RAY_ADDRESS, or a local one started for this job, with swap's
Ray settings applied first.

Run: imported by swap.driver and by `import swap` itself, which applies swap's Ray settings at
once: Ray reads some of them from the environment when it is first imported, and every swap
module that imports Ray (swap.metrics, the phases) comes after `swap/__init__.py`.
"""

from __future__ import annotations

import os

from swap.errors import SwapError

# Fix the metrics port of a local Ray that `swap run` starts (a cluster sets its own).
METRICS_PORT_ENV = "SWAP_METRICS_EXPORT_PORT"

# Ray settings read from the environment, some when `ray` is first imported: apply them
# before that. A user's own values win.
RAY_DEFAULTS = {
    # Ray Train's controller polls its workers every 2 s by default, collecting one report per
    # worker per poll, and `ray.train.report` waits until the previous one was collected: with
    # epochs shorter than the interval, the poll, not training, would set the pace of phase 1.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    # Print progress lines once, as printed, rather than also through Ray Train's logger.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # Phase-2 workers print look-alike lines at once; Ray would fold them into "[repeated 3x]".
    "RAY_DEDUP_LOGS": "0",
    # Keep idle worker processes of a local Ray (Ray's default reaps those beyond one per CPU,
    # counting phase 1's ranks): phase 2 starts in processes warmed during phase 1.
    "RAY_num_workers_soft_limit": "64",
    # Ray Data's progress bars would write over swap's output from every process that streams.
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
}


def apply_ray_defaults() -> None:
    for key, value in RAY_DEFAULTS.items():
        os.environ.setdefault(key, value)


def starts_local_ray() -> bool:
    """Whether this job starts a Ray of its own on this machine (no RAY_ADDRESS) rather than
    joining a cluster: no autoscaler, so a node no live one can stand in for never comes."""
    return not os.environ.get("RAY_ADDRESS")


def connect_ray(log_to_driver: bool = True) -> None:
    """Join the Ray cluster in RAY_ADDRESS, or start a local one sized to this machine. Without
    `log_to_driver`, the processes' output stays in their logs (Ray's session logs, and the run
    directory's log.txt files) instead of being forwarded here with Ray's prefix."""
    import logging

    import ray  # lazily: `swap --help` and `swap validate` never pay for it

    if ray.is_initialized():
        return
    # Ray's own start-up lines at INFO ("Started a local Ray instance") only when verbose.
    quiet = {} if log_to_driver else {"logging_level": logging.WARNING}
    if starts_local_ray():
        ray.init(num_cpus=os.cpu_count(), _metrics_export_port=metrics_export_port(),
                 log_to_driver=log_to_driver, **quiet)  # fmt: skip
    else:
        ray.init(log_to_driver=log_to_driver, **quiet)
    if not log_to_driver:
        keep_system_errors_in_logs()


def keep_system_errors_in_logs() -> None:
    """Ray's system errors ("(raylet) A worker died ...", "Task ... will be retried") reach the
    driver by a path of their own that `log_to_driver` does not close: a thread that prints
    each to stderr with its coloured prefix, into the live view and into plain output. Ray
    keeps them in its session logs (raylet.out), and the view says which worker is retrying and
    why, so here they go to the `ray` logger at DEBUG instead. Ray has no setting for this:
    its module function is replaced (checked to exist, so a Ray without it prints as before)."""
    import logging

    from ray._private import worker

    if callable(getattr(worker, "print_to_stdstream", None)):
        logger = logging.getLogger("ray")

        def to_debug_log(data: dict, ignore_prefix: bool) -> None:
            for line in data.get("lines", []):
                logger.debug("(%s) %s", data.get("pid"), line)

        worker.print_to_stdstream = to_debug_log


def metrics_export_port() -> int | None:
    """The port from SWAP_METRICS_EXPORT_PORT for a local Ray, or None to let Ray pick one."""
    value = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SwapError(f"{METRICS_PORT_ENV}: expected a port number (got {value!r})")
    return int(value)
