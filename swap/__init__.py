"""swap: Stochastic Weight Averaging in Parallel (SWAP) on Ray, from a YAML job spec.

Run: swap run configs/quickstart.yaml   (python: swap.load_model(RUN_DIR) for the final model)
"""

from __future__ import annotations

from typing import Any

from swap.errors import SpecError, SwapError
from swap.ray_session import apply_ray_defaults
from swap.spec import Spec, load_spec

# Before any swap module imports Ray (swap.metrics, the phases), which reads some of them then.
apply_ray_defaults()

__all__ = ["Spec", "SpecError", "SwapError", "build_model", "load_model", "load_spec"]


def __getattr__(name: str) -> Any:
    """`swap.build_model(spec)` and `swap.load_model(run_dir)`, imported when first used: they
    need torch, which `import swap` (and so `swap --help`) does not load."""
    if name in ("build_model", "load_model"):
        from swap.models import loading  # torch: only for those who ask for a model

        return loading.model_for if name == "build_model" else loading.load_model
    raise AttributeError(f"module 'swap' has no attribute {name!r}")
