"""The model a spec describes, untrained or with a run's weights: what a user loads afterwards.

Run: python -c "import swap; print(swap.load_model('runs/digits-quickstart/<run-id>'))"
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from swap import storage
from swap.catalog import STREAMED_DATASETS
from swap.data.common import DatasetInfo
from swap.data.registry import dataset_info
from swap.models.registry import build_model
from swap.rundir import MODEL_FILE, load_state_dict, read_json, read_run_spec
from swap.spec import Spec


def model_for(spec: Spec) -> nn.Module:
    """The untrained model a spec describes, shaped for its data set (for imagefolder, the class
    folders are counted; a custom data set's function is called)."""
    return build_model(spec.model, dataset_info(spec.data))


def load_model(run_dir: str | Path, checkpoint: str | Path | None = None) -> nn.Module:
    """A run's model in eval mode: the final averaged one, or the weights in `checkpoint`.
    `run_dir` is a path or a storage URI (s3://..., gs://...), as `output.dir` may be.

    The same as `model_for(load_spec(f"{run_dir}/spec.yaml"))` followed by
    `load_state_dict(torch.load(f"{run_dir}/final/model.pt", weights_only=True))`.
    """
    run_dir = str(run_dir)
    spec = read_run_spec(run_dir)
    if spec.data.dataset in STREAMED_DATASETS:  # its shape as the run recorded it: no reading
        data = read_json(storage.join(run_dir, "results.json"))["data"]
        channels, size, _ = data["image_shape"]
        model = build_model(spec.model, DatasetInfo(data["classes"], channels, size))
    else:
        model = model_for(spec)
    model.load_state_dict(
        load_state_dict(str(checkpoint or storage.join(run_dir, "final", MODEL_FILE)))
    )
    return model.eval()
