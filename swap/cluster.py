"""Reaching Ray: the cluster in RAY_ADDRESS, or a local one started for this job.

Run: imported by swap.cli and swap.job; import Ray only inside functions, after the defaults.
"""

from __future__ import annotations

import os

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
}


def apply_ray_defaults() -> None:
    for key, value in RAY_DEFAULTS.items():
        os.environ.setdefault(key, value)


def connect_ray() -> None:
    """Join the Ray cluster in RAY_ADDRESS, or start a local one sized to this machine."""
    apply_ray_defaults()
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        from swap.metrics import metrics_export_port

        ray.init(num_cpus=os.cpu_count(), _metrics_export_port=metrics_export_port())
