"""A run's directory and files: model weights, the spec, results; written atomically.

Run: python -c "from swap.checkpoints import load_state_dict; help(load_state_dict)"
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch

from swap import storage
from swap.errors import SwapError

MODEL_FILE = "model.pt"
PROGRESS = "progress.json"  # in a phase-2 worker's directory: its last committed epoch
ATTEMPTS = "attempts.json"  # ... how many times it was started, and where it runs now
RESULT = "result.json"  # ... written when it finished: a resumed job does not rerun it


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


def save_progress(directory: str, epoch: int, state: Mapping[str, Any]) -> Saved:
    """A worker's resumable state after `epoch`: written under a new name, then committed by
    rewriting the small pointer file, so a crash at any moment leaves a complete checkpoint."""
    saved = save_state_dict(state, storage.join(directory, _progress_file(epoch)))
    write_json(
        storage.join(directory, PROGRESS),
        {"epoch": epoch, "sha256": saved.sha256, "file": _progress_file(epoch)},
    )
    # A worker commits its epochs in order (a rerun resumes after the last commit), so the
    # one committed before is always the previous epoch's, if there was one.
    storage.delete(storage.join(directory, _progress_file(epoch - 1)))
    return saved


def _progress_file(epoch: int) -> str:
    return f"progress-epoch{epoch}.pt"


def load_progress(directory: str) -> dict[str, Any] | None:
    """The state `save_progress` last committed in `directory`, checked; None if there is none."""
    pointer = read_progress_pointer(directory)
    if pointer is None:
        return None
    return load_state_dict(storage.join(directory, pointer["file"]), sha256=pointer["sha256"])


def read_progress_pointer(directory: str) -> dict[str, Any] | None:
    location = storage.join(directory, PROGRESS)
    if not storage.exists(location):
        return None
    return read_json(location)


def record_attempt(directory: str, pid: int, node_id: str) -> dict[str, Any]:
    """Count one more run of a phase-2 worker, with where it runs now (pid, node) and the nodes
    of every run so far; return that record.

    Runs of one worker never overlap (Ray reruns a task only after it failed), so a plain
    read-then-write is safe here.
    """
    before = attempts_record(directory)
    record = {
        "attempts": before["attempts"] + 1,
        "pid": pid,
        "node_id": node_id,
        "nodes": [*before["nodes"], node_id],
    }
    write_json(storage.join(directory, ATTEMPTS), record)
    return record


def attempts_record(directory: str) -> dict[str, Any]:
    location = storage.join(directory, ATTEMPTS)
    if not storage.exists(location):
        return {"attempts": 0, "nodes": []}
    return read_json(location)


def read_json(location: str) -> Any:
    return json.loads(storage.read_bytes(location))


def write_text(location: str, text: str) -> str:
    storage.write_bytes(location, text.encode())
    return location


def write_json(location: str, data: Any) -> str:
    return write_text(location, json.dumps(data, indent=2) + "\n")
