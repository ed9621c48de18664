"""swap: Stochastic Weight Averaging in Parallel (SWAP) on Ray, from a YAML job spec.

Run: swap run configs/quickstart.yaml   (python: swap.load_model(RUN_DIR) for the final model)
"""

from __future__ import annotations

from pathlib import Path

from swap.errors import SpecError, SwapError
from swap.spec import Spec, load_spec

__all__ = ["Spec", "SpecError", "SwapError", "build_model", "load_model", "load_spec"]


def build_model(spec: Spec):
    """The untrained model a spec describes, shaped for its data set (for imagefolder, the class
    folders are counted; a custom data set's function is called)."""
    from swap.data import dataset_info
    from swap.models import build_model as build

    return build(spec.model, dataset_info(spec.data))


def load_model(run_dir: str | Path, checkpoint: str | Path | None = None):
    """A run's model in eval mode: the final averaged one, or the weights in `checkpoint`.

    The same as `build_model(load_spec(f"{run_dir}/spec.yaml"))` followed by
    `load_state_dict(torch.load(f"{run_dir}/final/model.pt", weights_only=True))`.
    """
    from swap.checkpoints import MODEL_FILE, load_state_dict

    run_dir = Path(run_dir)
    model = build_model(load_spec(run_dir / "spec.yaml"))
    model.load_state_dict(load_state_dict(checkpoint or run_dir / "final" / MODEL_FILE))
    return model.eval()
