"""What the three phases' placements share: the job's data in Ray's object store, what a worker
of each phase asks Ray for, the one builder of phase-2 and phase-3 tasks, and the GPU check.

Run: python -c "from swap.phases.placement import worker_resources; help(worker_resources)"
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import ray
from ray.remote_function import RemoteFunction
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rich.console import Console

from swap.data.common import Splits
from swap.errors import SwapError
from swap.ray_session import starts_local_ray
from swap.spec import Spec


def share_data(splits: Splits) -> ray.ObjectRef:
    """The job's data, put once into Ray's object store. Its arrays reach every process of a
    node without a copy (numpy arrays, read-only), and each node at most once."""
    try:
        return ray.put(splits)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise SwapError(
            f"data.dataset: its data sets cannot be sent to Ray's workers ({exc}); return "
            "data sets that pickle (tensors, arrays, file paths; not open files or locks)"
        ) from None


def worker_resources(spec: Spec, phase: int = 2) -> dict[str, float]:
    """What one worker of a phase asks Ray for: CPUs, GPUs when used, custom resources.

    A phase-1 rank takes a whole GPU, whatever `gpus_per_worker` says: NCCL cannot run two ranks
    of one group on one GPU. Phase-2 workers and the coordinator may share GPUs (fractions).
    """
    r = spec.resources
    gpu = {"GPU": 1.0 if phase == 1 else r.gpus_per_worker} if r.use_gpu else {}
    return {"CPU": r.phase1_cpus if phase == 1 else r.cpus_per_worker, **gpu, **r.custom}


def remote_task(function: Callable[..., Any], spec: Spec, **options: Any) -> RemoteFunction:
    """`function` as a Ray task that asks for what a phase-2 worker or the coordinator needs
    (`worker_resources`), with `options` (scheduling, retries; none by default): the one place
    every phase-2 and phase-3 task is built.

    A GPU task runs in a process of its own that exits after it (`max_calls=1`). CUDA binds a
    process to the devices in its CUDA_VISIBLE_DEVICES when it first initializes, and keeps its
    context and cached memory until the process exits: a task leased GPU 1 in a process that
    first ran on GPU 0 would train on GPU 0, beside another worker. Ray makes GPU tasks
    single-use only when `num_gpus` is given to `ray.remote` itself, not to `.options()`
    (ray-project/ray#29624), so both are given here, together.
    """
    resources = worker_resources(spec)
    settings = {
        "max_retries": 0,
        "num_cpus": resources.pop("CPU"),
        "num_gpus": resources.pop("GPU", 0),
        "resources": resources,
        **options,
    }
    if settings["num_gpus"]:
        settings["max_calls"] = 1
    return ray.remote(**settings)(function)


def check_gpus(spec: Spec, console: Console) -> None:
    """With `resources.use_gpu`, check on every node that advertises GPUs to Ray that torch
    there can use them, before any work is placed: a node whose torch sees no CUDA device (a
    CPU build of torch, no driver) or fewer devices than Ray hands out is a SwapError naming
    `resources.use_gpu` and the node, and so is a local Ray without GPUs. A cluster (RAY_ADDRESS)
    with no GPU node yet is only warned about: an autoscaler may add them, and Ray queues the
    work until it does."""
    if not spec.resources.use_gpu:
        return
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0]
    if not nodes and starts_local_ray():
        raise SwapError(
            "resources.use_gpu: this machine has no GPU Ray can use (set resources.use_gpu: "
            "false, or run on a cluster with GPUs: RAY_ADDRESS)"
        )
    if not nodes:
        console.print(
            "[yellow]resources.use_gpu: no node of this Ray cluster has a GPU now; the work "
            "waits until one joins[/]",
            soft_wrap=True,
        )
        return
    probe = ray.remote(num_cpus=0, max_calls=1)(cuda_devices)
    pending = {
        probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(): node
        for node in nodes
    }
    ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=GPU_CHECK_SECONDS)
    problems = [
        f"resources.use_gpu: node {_node(pending[ref])} did not answer within "
        f"{GPU_CHECK_SECONDS} s whether torch sees its GPUs"
        for ref in late
    ]
    for ref in ready:
        node, seen = pending[ref], ray.get(ref)
        advertised = int(node["Resources"]["GPU"])
        if seen < advertised:
            what = "no CUDA device" if seen == 0 else f"only {seen} CUDA device(s)"
            problems.append(
                f"resources.use_gpu: node {_node(node)} offers Ray {advertised} GPU(s), but "
                f"torch there sees {what} (a CPU build of torch, or no NVIDIA driver?)"
            )
    if problems:
        raise SwapError("\n".join(problems))


def check_phase1_fits(spec: Spec, console: Console) -> None:
    """Ray Train places each phase-1 rank whole on one node, and waits for ever while no node
    can hold one: no live node with a rank's CPUs is a SwapError naming the field on a local
    Ray, and a warning on a cluster (RAY_ADDRESS), whose autoscaler may add one."""
    cpus = spec.resources.phase1_cpus
    alive = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
    largest = max(alive, default=0)
    if largest >= cpus:
        return
    field = spec.resources.phase1_cpus_field
    problem = (
        f"resources.{field}: a phase-1 rank asks for {cpus:g} CPUs, and the largest node of "
        f"this Ray has {largest:g}"
    )
    if starts_local_ray():
        raise SwapError(f"{problem}: lower resources.{field} to this machine's CPUs")
    console.print(f"[yellow]{problem}; phase 1 waits until such a node joins[/]", soft_wrap=True)


STREAM_CPUS = 1  # what Ray Data's own tasks (listing, reading) ask for beside phase 1


def phase1_cpus_held(spec: Spec) -> float:
    """The CPUs phase 1's ranks hold for the whole phase."""
    return spec.phase1.workers * spec.resources.phase1_cpus


def check_stream_cpus(spec: Spec) -> None:
    """A streamed data set needs a CPU of the cluster that phase 1's ranks leave free: Ray
    Data's own tasks (listing, reading) ask for one, and Ray Train's ranks hold theirs for the
    whole phase, so with none left phase 1 would wait forever. A SwapError naming the field."""
    total = ray.cluster_resources().get("CPU", 0)
    cpus, held = spec.resources.phase1_cpus, phase1_cpus_held(spec)
    field = spec.resources.phase1_cpus_field
    if total - held < STREAM_CPUS:
        raise SwapError(
            f"resources.{field}: phase 1's {spec.phase1.workers} ranks x {cpus:g} CPUs hold "
            f"{held:g} of the cluster's {total:g} CPUs, and data.dataset {spec.data.dataset} is "
            "streamed by Ray Data, whose tasks need one free: lower resources."
            f"{field} or phase1.workers, or add CPUs"
        )


GPU_CHECK_SECONDS = 120  # a fresh process on each GPU node importing torch


def cuda_devices() -> int:
    """How many CUDA devices torch sees in this process (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _node(node: dict[str, Any]) -> str:
    return f"{node['NodeManagerAddress']} ({node['NodeID'][:12]})"


def concurrent_slots(spec: Spec, wanted: int, total: dict[str, float]) -> int:
    """How many of `wanted` phase-2 workers a cluster of these resources (`total`) can run at
    once (at least one)."""
    needs = worker_resources(spec).items()
    fits = [total.get(name, 0) / amount for name, amount in needs if amount]
    return max(1, min(wanted, int(min(fits, default=wanted))))


def throughput(history: list[dict[str, Any]]) -> float:
    """Samples per second of training, over all epochs (evaluation and start-up excluded)."""
    seconds = sum(h["seconds"] for h in history)
    return sum(h["samples"] for h in history) / seconds if seconds else 0.0
