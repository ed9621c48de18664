"""On GPUs: the quickstart end to end over NCCL, mixed precision, channels-last, a killed worker,
and averaging on the device. Skipped without CUDA; `pytest -m gpu` (or bench/gpu_check.sh).

Run: pytest -m gpu tests/integration/test_gpu.py

Phase 1 runs one NCCL rank per GPU; the four phase-2 workers share the GPUs two to a GPU
(`resources.gpus_per_worker: 0.5`). No GPU has run these yet: written for the first one.
"""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rich.console import Console
from torch.optim.swa_utils import AveragedModel

from swap.averaging import average_state_dicts
from swap.driver import run_job
from swap.phases import ddp
from swap.rundir import MODEL_FILE
from swap.spec import load_spec
from swap.training import EpochStats

from ..helpers import REPO, SLOW_PHASE2, committed_epoch, results, start_driver, wait_for

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (pytest -m gpu)"),
]
GPUS = torch.cuda.device_count()


def on_gpus(*extra: str) -> list[str]:
    """Overrides that put the quickstart on every GPU of this machine, with the session's Ray
    (2 CPUs) shared by the ranks."""
    cpus = min(0.5, 2 / max(1, GPUS))
    return [
        "resources.use_gpu=true",
        "resources.gpus_per_worker=0.5",
        f"resources.cpus_per_worker={cpus}",
        f"resources.phase1_cpus_per_worker={cpus}",
        f"phase1.workers={GPUS}",
        f"phase1.batch_size={128 * GPUS}",
        "phase1.max_epochs=4",
        "phase2.epochs=2",
        *extra,
    ]


def load(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(
    "extra",
    [[], ["resources.amp=bf16", "model.channels_last=true"], ["resources.amp=fp16"]],
    ids=["float32", "bf16-channels-last", "fp16"],
)
def test_quickstart_end_to_end_on_gpus(local_ray, tmp_path, extra):
    if "resources.amp=bf16" in extra and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    overrides = [*on_gpus(*extra), f"output.dir={tmp_path}"]
    spec = load_spec(REPO / "configs" / "quickstart.yaml", overrides)
    done = run_job(spec, Console(file=io.StringIO(), width=120))
    assert done["status"] == "finished"
    assert done["phase1"]["epochs"] == 4 and done["phase3"]["averaged_workers"] == [0, 1, 2, 3]
    assert done["phase3"]["test_accuracy"] > 0.8  # chance is 0.1
    workers = [load(w["checkpoint"]) for w in done["phase2"]["workers"]]
    final = load(done["phase3"]["model"])
    for key, value in final.items():
        if value.is_floating_point() and "running" not in key:
            mean = torch.stack([w[key].double() for w in workers]).mean(0).to(value.dtype)
            torch.testing.assert_close(value, mean, rtol=0, atol=1e-6, msg=key)
    plain = torch.load(done["phase3"]["model"], weights_only=True)  # no map_location
    assert {v.device.type for v in plain.values()} == {"cpu"}  # loads without a GPU


def test_a_killed_phase2_worker_on_a_gpu_is_rerun_from_its_last_epoch(tmp_path):
    overrides = [*SLOW_PHASE2, *on_gpus("phase2.epochs=10"), f"output.dir={tmp_path}"]
    driver = start_driver(tmp_path / "driver.log", *overrides)
    try:
        run, attempts, epoch = wait_for(lambda: committed_epoch(tmp_path, 0), "epoch 1", driver)
        os.kill(attempts["pid"], signal.SIGKILL)
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]
    worker = results(run)["phase2"]["workers"][0]
    assert worker["status"] == "finished" and worker["attempts"] == 2
    assert worker["resumed_from_epoch"] >= epoch


def test_averaging_on_the_gpu_equals_swa_utils():
    def net(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).cuda()
        model(torch.randn(4, 3, 8, 8, device="cuda"))  # move the BN statistics
        return model

    models = [net(seed) for seed in range(4)]
    reference = AveragedModel(models[0], use_buffers=True)
    for model in models:
        reference.update_parameters(model)
    mean = average_state_dicts(model.state_dict() for model in models)
    for key, value in reference.module.state_dict().items():
        assert mean[key].device.type == "cuda"
        if value.is_floating_point():
            torch.testing.assert_close(mean[key], value, rtol=0, atol=1e-6, msg=key)


def _nccl_rank(rank: int, store: str) -> None:
    dist.init_process_group(ddp.GPU_BACKEND, store=dist.FileStore(store, 2), rank=rank,
                            world_size=2)  # fmt: skip
    torch.cuda.set_device(rank)
    device = torch.device("cuda", rank)
    stats = ddp.sum_over_ranks(EpochStats(rank + 1.0, rank, 2), device)
    assert (stats.loss_sum, stats.correct, stats.count) == (3.0, 1, 4)
    assert ddp.first_bad_step(None if rank == 0 else 5, device) == 5
    cpu = torch.ones(1)
    dist.all_reduce(cpu)  # the device-mapped group also reduces CPU tensors (over gloo)
    assert cpu.item() == 2.0
    bn = torch.nn.BatchNorm1d(2).to(device)
    bn.running_mean.fill_(rank)
    ddp.broadcast_buffers(bn)
    assert bn.running_mean.tolist() == [0.0, 0.0]
    dist.destroy_process_group()


@pytest.mark.skipif(GPUS < 2, reason="needs two GPUs")
def test_phase1_collectives_over_nccl(tmp_path):
    mp.spawn(_nccl_rank, args=(str(tmp_path / "store"),), nprocs=2)


def test_checkpoints_hold_cpu_tensors(local_ray, tmp_path):
    overrides = [*on_gpus("phase2.workers=2", "phase2.epochs=1"), f"output.dir={tmp_path}"]
    spec = load_spec(REPO / "configs" / "quickstart.yaml", overrides)
    done = run_job(spec, Console(file=io.StringIO(), width=120))
    phase1 = torch.load(Path(done["phase1"]["checkpoint"]) / MODEL_FILE, weights_only=True)
    assert {v.device.type for v in phase1.values()} == {"cpu"}
