"""A run's directory: its id, its files (weights, spec, results, manifest, each worker's resume
point and attempts), written atomically and checked by SHA-256 when read.

Run: python -c "from swap.rundir import load_state_dict; help(load_state_dict)"
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import secrets
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple

import torch

from swap import storage
from swap.errors import SpecError, SwapError, first_line
from swap.spec import Spec, parse_spec
from swap.storage import join

MODEL_FILE = "model.pt"
SWAG_FILE = "swag.pt"  # a phase-2 worker's SWAG statistics (swap.swag), beside its model
RESUME_POINT = "resume.json"  # in a phase-2 worker's directory: its last committed epoch
ATTEMPTS = "attempts.json"  # ... how many times it was started, and where it runs now
RESULT = "result.json"  # ... written when it finished: a resumed job does not rerun it
FAILURE = "failure.json"  # ... written by the driver when it failed for good (until a rerun)


def new_run_dir(output_dir: str, name: str) -> str:
    """A fresh `<output_dir>/<name>/<run-id>`; an existing run directory is never reused."""
    parent = storage.join(storage.absolute(output_dir), name)
    for _ in range(10):
        run_dir = storage.join(parent, f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
        try:
            if storage.exists(run_dir):
                continue
            storage.make_dir(run_dir)
        except OSError as exc:
            raise SwapError(f"output.dir: cannot create {run_dir}: {exc}") from None
        return run_dir
    raise SwapError(f"output.dir: could not find an unused run id under {parent}")


def phase2_dir(run_dir: str, index: int) -> str:
    return storage.join(run_dir, "phase2", f"worker-{index}")


class Saved(NamedTuple):
    location: str
    sha256: str
    size: int  # bytes


def save_state_dict(state: Mapping[str, Any], location: storage.Location) -> Saved:
    """Write `state` atomically, its tensors on the CPU (so that plain `torch.load` reads it
    on a machine without the GPU it was trained on); return where, its SHA-256 and its size,
    for the manifest."""
    buffer = io.BytesIO()
    torch.save(_on_cpu(dict(state)), buffer)
    data = buffer.getvalue()
    return Saved(os.fspath(location), storage.write_bytes(location, data), len(data))


def _on_cpu(value: Any) -> Any:
    """`value` with every tensor in it moved to the CPU (CPU tensors are not copied)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: _on_cpu(item) for key, item in value.items()}
    if type(value) in (list, tuple):  # not a NamedTuple, which takes its fields by name
        return type(value)(_on_cpu(item) for item in value)
    return value


def load_state_dict(location: storage.Location, sha256: str | None = None) -> dict[str, Any]:
    """Tensors only (`weights_only=True`); a local file is memory-mapped, read as it is used.

    With `sha256`, the file is checked first: a truncated or corrupted checkpoint is an error
    naming it, never weights loaded silently. A remote file is fetched once, checked and loaded
    from the same bytes.
    """
    if sha256 is not None and not storage.is_uri(location):
        verify(location, sha256)
    try:
        if storage.is_uri(location):
            data = storage.read_bytes(location)
            if sha256 is not None:
                _check_digest(location, hashlib.sha256(data).hexdigest(), sha256)
            return torch.load(io.BytesIO(data), weights_only=True)
        return torch.load(location, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise SwapError(f"{location}: checkpoint not found") from None
    except SwapError:
        raise
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError on bad files
        raise SwapError(
            f"{location}: not a readable checkpoint ({exc.__class__.__name__})"
        ) from None


def verify(location: storage.Location, sha256: str) -> None:
    _check_digest(location, storage.sha256(location), sha256)


def _check_digest(location: storage.Location, actual: str, sha256: str) -> None:
    if actual != sha256:
        raise SwapError(
            f"{os.fspath(location)}: checksum mismatch, the file is truncated or corrupted "
            f"(sha256 {actual[:12]}..., expected {sha256[:12]}...)"
        )


def save_resume_point(directory: str, epoch: int, state: Mapping[str, Any]) -> Saved:
    """A worker's resumable state after `epoch`: written under a new name, then committed by
    rewriting the small pointer file, so a crash at any moment leaves a complete one.

    The pointer lists the last KEPT_RESUME_POINTS epochs, newest first: if the newest file is
    damaged later, the worker resumes from the one before instead of starting over."""
    saved = save_state_dict(state, storage.join(directory, _resume_file(epoch)))
    kept = [{"epoch": epoch, "sha256": saved.sha256, "file": _resume_file(epoch)}]
    try:
        earlier = _resume_points(directory)
    except SwapError:  # a damaged pointer, already skipped by load_resume_point: rewritten now
        earlier = []
    kept += [p for p in earlier if p["epoch"] < epoch][: KEPT_RESUME_POINTS - 1]
    write_json(storage.join(directory, RESUME_POINT), {**kept[0], "kept": kept})
    # A worker commits its epochs in order (a rerun resumes after the last commit), so the
    # files older than the kept ones are at most one, this epoch less KEPT_RESUME_POINTS.
    storage.delete(storage.join(directory, _resume_file(epoch - KEPT_RESUME_POINTS)))
    return saved


KEPT_RESUME_POINTS = 2


def _resume_file(epoch: int) -> str:
    return f"resume-epoch{epoch}.pt"


def _resume_points(directory: str) -> list[dict[str, Any]]:
    """The committed resume points listed in `directory`'s pointer file, newest first."""
    location = storage.join(directory, RESUME_POINT)
    if not storage.exists(location):
        return []
    pointer = read_json(location)
    return pointer.get("kept", [pointer])


def load_resume_point(directory: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The newest resume point `save_resume_point` committed in `directory` that is intact
    (its SHA-256 checked), and what was skipped on the way, one line each (a file that is
    missing or fails its checksum; a damaged pointer file). (None, ...) when none is left:
    the worker starts again from the phase-1 weights."""
    try:
        points = _resume_points(directory)
    except SwapError as exc:  # the pointer itself is damaged: nothing to trust in it
        return None, [str(exc)]
    skipped = []
    for point in points:
        try:
            state = load_state_dict(storage.join(directory, point["file"]), point["sha256"])
        except SwapError as exc:
            skipped.append(str(exc))
            continue
        return state, skipped
    return None, skipped


def record_attempt(directory: str, pid: int, node_id: str) -> dict[str, Any]:
    """Count one more run of a phase-2 worker, with where it runs now (pid, node) and the nodes
    of every run so far; return that record.

    Runs of one worker never overlap (Ray reruns a task only after it failed), so a plain
    read-then-write is safe here.
    """
    before = attempts_record(directory)
    record = {
        **before,
        "attempts": before["attempts"] + 1,
        "pid": pid,
        "node_id": node_id,
        "nodes": [*before["nodes"], node_id],
    }
    write_json(storage.join(directory, ATTEMPTS), record)
    storage.delete(storage.join(directory, FAILURE))  # running again: not failed any more
    return record


def record_error(directory: str, error: BaseException) -> None:
    """Note in attempts.json why the current attempt failed, for the one after it (a retry)
    and for `swap status`."""
    record = attempts_record(directory)
    record["last_error"] = first_line(error)
    write_json(storage.join(directory, ATTEMPTS), record)


def record_fallback(directory: str, skipped: list[str], resumed_after: int) -> None:
    """Note in attempts.json that this attempt skipped damaged resume points (`skipped`, one
    line each) and resumed after epoch `resumed_after` (0: from the phase-1 weights)."""
    record = attempts_record(directory)
    fallback = {"attempt": record["attempts"], "skipped": skipped, "resumed_after": resumed_after}
    record.setdefault("fallbacks", []).append(fallback)
    write_json(storage.join(directory, ATTEMPTS), record)


def attempts_record(directory: str) -> dict[str, Any]:
    recorded = read_json(storage.join(directory, ATTEMPTS), missing_ok=True)
    return recorded if recorded is not None else {"attempts": 0, "nodes": []}


def read_json(location: str, missing_ok: bool = False) -> Any:
    """A JSON file of the run; a truncated or damaged one is a SwapError naming it, and so is
    a missing one unless `missing_ok` (then None: not written yet)."""
    data = storage.read_bytes(location, missing_ok)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise SwapError(
            f"{location}: not valid JSON{where}: the file is truncated or damaged"
        ) from None


def write_text(location: str, text: str) -> str:
    storage.write_bytes(location, text.encode())
    return location


def write_json(location: str, data: Any) -> str:
    return write_text(location, json.dumps(data, indent=2) + "\n")


def open_run(spec: Spec, resume: str | None) -> tuple[str, dict[str, Any]]:
    """A new run directory with the spec saved, or the one to resume with what it recorded."""
    if resume is None:
        run_dir = new_run_dir(spec.output.dir, spec.name)
        write_text(join(run_dir, "spec.yaml"), spec.to_yaml())
        results = {
            "name": spec.name,
            "run_id": run_dir.rpartition("/")[2],
            "run_dir": run_dir,
            "status": "running",
            "started_at": time.time(),  # Unix seconds: the job's timeline starts here
            "spec": spec.to_dict(),
            "versions": versions(),
        }
        # Recorded at once: a driver killed at any moment later (SIGKILL, out of memory)
        # leaves a run that --resume continues.
        save_results(run_dir, results)
        return run_dir, results
    run_dir, results = resumable(spec, resume)
    results.update(status="running", resumed=results.get("resumed", 0) + 1)
    for stale in ("error", "interrupted_in_phase"):
        results.pop(stale, None)
    return run_dir, results


def resumable(spec: Spec, resume: str) -> tuple[str, dict[str, Any]]:
    """The run directory `resume` and its results, if `spec` may continue it: the same spec,
    written by this swap version; a SwapError (or SpecError) naming what differs otherwise."""
    run_dir = storage.absolute(resume)
    saved_spec = join(run_dir, "spec.yaml")
    saved = read_run_spec(run_dir, "--resume: ")
    differing = changed_fields(saved.to_dict(), spec.to_dict())
    if differing:
        raise SpecError(
            [f"--resume: the spec differs from {saved_spec} at {field}" for field in differing]
        )
    location = join(run_dir, "results.json")
    if not storage.exists(location):
        raise SwapError(f"--resume: {run_dir} has no results.json: not a run swap started")
    results = read_json(location)
    written_by, here = results.get("versions", {}).get("swap"), versions()["swap"]
    if written_by != here:  # its checkpoints and records may mean other things to this swap
        raise SwapError(
            f"--resume: {run_dir} was written by swap {written_by}, this is swap {here}; "
            "start a new run (swap resumes only its own version's runs)"
        )
    return run_dir, results


def finished_and_intact(spec: Spec, resume: str) -> dict[str, Any] | None:
    """The results of run `resume` if it finished and every file in its manifest is there with
    its SHA-256 (then --resume has nothing to do); None if there is work left, or if `spec`
    differs from the run's before its data paths are made absolute (prepare_data)."""
    try:
        run_dir, results = resumable(spec, resume)
    except SpecError:
        return None
    if results.get("status") != "finished":
        return None
    for path, digest in manifest(run_dir, results).items():
        try:
            verify(path if path.startswith("/") or storage.is_uri(path) else join(run_dir, path),
                   digest)  # fmt: skip
        except SwapError:
            return None
    return results


def read_run_spec(run_dir: str, context: str = "") -> Spec:
    """The resolved spec a run directory (a path or URI) keeps in spec.yaml."""
    run_dir = storage.absolute(run_dir)
    location = join(run_dir, "spec.yaml")
    if not storage.exists(location):
        raise SwapError(f"{context}{run_dir}: not a run directory (it has no spec.yaml)")
    return parse_spec(storage.read_bytes(location).decode(), location)


def changed_fields(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    fields = []
    for key in sorted(a.keys() | b.keys()):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            fields += changed_fields(left, right, f"{prefix}{key}.")
        elif left != right:
            fields.append(f"{prefix}{key} ({left!r} there, {right!r} here)")
    return fields


def save_results(run_dir: str, results: dict[str, Any]) -> None:
    """results.json and manifest.json (the SHA-256 of every checkpoint), both atomic."""
    write_json(join(run_dir, "results.json"), results)
    write_json(join(run_dir, "manifest.json"), manifest(run_dir, results))


def manifest(run_dir: str, results: dict[str, Any]) -> dict[str, str]:
    files = {}
    if "phase1" in results:
        files[join(results["phase1"]["checkpoint"], MODEL_FILE)] = results["phase1"]["sha256"]
    for worker in results.get("phase2", {}).get("workers", []):
        if "sha256" in worker:
            files[worker["checkpoint"]] = worker["sha256"]
        if "swag_sha256" in worker:
            files[worker["swag"]] = worker["swag_sha256"]
    if "phase3" in results:
        files[results["phase3"]["model"]] = results["phase3"]["sha256"]
    prefix = run_dir.rstrip("/") + "/"
    return {path.removeprefix(prefix): digest for path, digest in sorted(files.items())}


def versions() -> dict[str, str]:
    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "torch": installed("torch"),
        "ray": installed("ray"),
        "swap": installed("swap"),
    }
