"""`swap average`: average checkpoints after the fact as phase 3 does, with a spec's model and data.

Run: swap average RUN_DIR                              (phase 3 again: final/model.pt, bit for bit)
     swap average --spec S.yaml a.pt b.pt -o out.pt    (any checkpoints of the spec's architecture)

No Ray: the data is prepared here (as `swap run` does before Ray starts) and the average, its BN
refresh and evaluation run in this process, with as many torch threads as phase 3's task had
(`resources.cpus_per_worker`), so that a run's own average is reproduced exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

from swap import storage
from swap.data.registry import prepare_data
from swap.errors import SwapError
from swap.phases.phase3_coordinator import combine
from swap.rundir import MODEL_FILE, read_json, read_run_spec, verify
from swap.spec import Spec
from swap.training import use_cpus

AVERAGE_DIR = "average"  # swap average RUN_DIR writes RUN_DIR/average/model.pt by default


def average_run(
    run_dir: str, out: str | None, warn: Callable[[str], None] = print
) -> dict[str, Any]:
    """Phase 3 of a finished run again, on the workers it averaged (their SHA-256 checked):
    the result's `same_as_final` says whether it equals the run's final/model.pt."""
    run_dir = storage.absolute(run_dir)
    spec = read_run_spec(run_dir)
    results_file = storage.join(run_dir, "results.json")
    if not storage.exists(results_file):
        raise SwapError(f"{run_dir}: not a run directory (it has no results.json)")
    results = read_json(results_file)
    if "phase3" not in results:
        raise SwapError(f"{run_dir}: phase 3 has not run there; nothing to average again")
    p3 = results["phase3"]
    candidates = p3.get("candidates", p3["averaged_workers"])  # what phase 3 chose from
    records = {w["index"]: w for w in results["phase2"]["workers"]}
    for index in candidates:
        checkpoint = records[index]["checkpoint"]
        if not storage.exists(checkpoint):
            raise SwapError(f"{checkpoint}: checkpoint not found (worker {index})")
        verify(checkpoint, records[index]["sha256"])  # a changed file: named, exit 2
    out = out or storage.join(run_dir, AVERAGE_DIR, MODEL_FILE)
    checkpoints = {i: records[i]["checkpoint"] for i in candidates}
    phase1 = storage.join(results["phase1"]["checkpoint"], MODEL_FILE)
    result = average_checkpoints(spec, checkpoints, out, phase1, warn)
    result["same_as_final"] = result["sha256"] == p3["sha256"]
    return result


def average_checkpoints(
    spec: Spec,
    checkpoints: dict[int, str],
    out: str,
    phase1: str | None = None,
    warn: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`checkpoints` (index -> path or URI) combined for `spec`'s model as phase 3 does
    (`phase3.combine`, `bn_refresh`, `ensemble`), evaluated on its data, saved to `out`.
    Checkpoints that are missing, unreadable, of another layout or architecture are errors
    naming them."""
    if not checkpoints:
        raise SwapError("swap average: no checkpoints to average")
    if storage.absolute(out) in {storage.absolute(c) for c in checkpoints.values()}:
        raise SwapError(f"-o {out}: is one of the checkpoints; it would be overwritten")
    spec, splits = prepare_data(spec)
    spec = on_this_machine(spec, warn)
    use_cpus(spec.resources.cpus_per_worker)  # as phase 3's task
    try:
        return combine(spec, splits, checkpoints, out, phase1)
    except ValueError as exc:  # swap.averaging: "state dict <n>: ..." (1-based)
        raise SwapError(_name_checkpoint(str(exc), list(checkpoints.values()))) from None
    except RuntimeError as exc:  # load_state_dict: keys or shapes of another model
        first = str(exc).splitlines()[0].rstrip(":")
        raise SwapError(f"checkpoints do not fit model.arch {spec.model.arch}: {first}") from None


def on_this_machine(spec: Spec, warn: Callable[[str], None]) -> Spec:
    """`spec` to evaluate here: a run made on GPUs (resources.use_gpu) is averaged on the CPU,
    in float32, when this machine has no GPU torch can use, and `warn` says so in one line."""
    if not spec.resources.use_gpu or torch.cuda.is_available():
        return spec
    warn(
        "swap average: the run trained on GPUs (resources.use_gpu) and torch sees none here: "
        "averaging on the CPU in float32; the result may differ from the run's in the last bits"
    )
    resources = spec.resources.model_copy(update={"use_gpu": False, "amp": "none"})
    return spec.model_copy(update={"resources": resources})


def _name_checkpoint(message: str, checkpoints: list[str]) -> str:
    """swap.averaging's message with its "state dict <n>" and "the first" named by file."""
    found = re.match(r"state dict (\d+)(.*)", message)
    if not found or not 1 <= int(found[1]) <= len(checkpoints):
        return message
    rest = found[2].replace("the first", checkpoints[0])
    return f"{checkpoints[int(found[1]) - 1]}{rest}"
