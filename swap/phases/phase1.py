"""Phase 1 on Ray: one Ray Train run of `phase1_worker` over `phase1.workers` DDP ranks.

Run: called by swap.driver.run_job; the ranks' loop is swap/phases/phase1_worker.py.
"""

from __future__ import annotations

import time
from typing import Any

from ray import ObjectRef
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from swap import metrics
from swap.data.stream import Stream
from swap.errors import JobFailed
from swap.interrupts import in_thread
from swap.phases import ddp
from swap.phases.phase1_worker import phase1_worker
from swap.phases.placement import throughput, worker_resources
from swap.spec import Spec
from swap.storage import join


def run_phase1(
    spec: Spec, run_dir: str, data: ObjectRef, stream: Stream | None = None
) -> dict[str, Any]:
    """Phase 1 as one Ray Train run on the job's `data` (swap.phases.placement.share_data); its
    checkpoints go to `<run_dir>/phase1/`. Returns rank 0's summary, with `checkpoint`: the
    directory of the last epoch's `model.pt`. A streamed set (`stream`) is handed to Ray Train,
    which splits one Ray Data pipeline of its training rows over the ranks, equal in rows.

    Ray Train restarts the group from the last epoch's checkpoint after a worker dies (up to
    `phase1.max_failures` times), and a rerun into the same run directory resumes there too.
    """
    started, started_at = time.perf_counter(), time.time()
    labels = metrics.Labels.of_run(spec.name, run_dir)
    metrics.set_phase(labels, 1)
    gpu = spec.resources.use_gpu
    trainer = TorchTrainer(
        phase1_worker,
        train_loop_config={"spec": spec, "run_id": labels.job, "data": data, "run_dir": run_dir},
        datasets={"train": stream.rows("train")} if stream is not None else None,
        torch_config=TorchConfig(backend=ddp.backend(gpu)),
        scaling_config=ScalingConfig(
            num_workers=spec.phase1.workers,
            use_gpu=gpu,
            resources_per_worker=worker_resources(spec, phase=1),
            placement_strategy=spec.resources.phase1_placement,
        ),
        run_config=RunConfig(
            name="phase1",
            storage_path=run_dir,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=spec.phase1.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    # In a thread: Ray Train installs a SIGINT handler of its own only when fit() runs in the
    # main thread, and never restores the one before it (swap.interrupts).
    result = in_thread(trainer.fit, "phase1")  # raises if training failed
    summary = dict(result.return_value)
    if "diverged" in summary:
        raise JobFailed(
            f"phase 1 diverged: {summary['diverged']} "
            "(lower phase1.lr or raise phase1.warmup_epochs)"
        )
    summary.update(seconds=time.perf_counter() - started, started_at=started_at)
    summary["samples_per_second"] = throughput(summary["history"])
    # Ray gives the path inside its file system; record where a user finds it.
    summary["checkpoint"] = join(run_dir, "phase1", result.checkpoint.path.rpartition("/")[2])
    metrics.record_phase1(labels, summary)
    return summary
