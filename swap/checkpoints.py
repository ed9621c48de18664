"""Where a run's files live, and how weights and results are written (atomically) and read.

Run: python -c "from swap.checkpoints import load_state_dict; help(load_state_dict)"
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from swap.errors import SwapError

MODEL_FILE = "model.pt"


def new_run_dir(output_dir: str | Path, name: str) -> Path:
    """A fresh `<output_dir>/<name>/<run-id>/`; an existing run directory is never reused."""
    parent = Path(output_dir).expanduser().resolve() / name
    for _ in range(10):
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        try:
            (parent / run_id).mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        except OSError as exc:
            reason = exc.strerror or exc
            raise SwapError(f"output.dir: cannot create {parent / run_id}: {reason}") from None
        return parent / run_id
    raise SwapError(f"output.dir: could not find an unused run id under {parent}")


def phase2_dir(run_dir: str | Path, index: int) -> Path:
    return Path(run_dir) / "phase2" / f"worker-{index}"


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    A reader sees the old file or the whole new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(dict(state), tmp))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors only (`weights_only=True`), memory-mapped so a large file is read as it is used."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise SwapError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError on bad files
        raise SwapError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None


def write_json(path: str | Path, data: Any) -> Path:
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))
