"""The job spec: its schema (`schema.py`), reading and checking it (`parse.py`), and the
commented default spec (`defaults.py`, what `swap validate --defaults` prints).

Run: swap validate configs/quickstart.yaml --show
"""

from swap.spec.parse import (
    apply_overrides,
    check_batch_sizes,
    load_spec,
    parse_spec,
    spec_from_dict,
)
from swap.spec.schema import Data, Model, Output, Phase1, Phase2, Phase3, Resources, Spec

__all__ = [
    "Data",
    "Model",
    "Output",
    "Phase1",
    "Phase2",
    "Phase3",
    "Resources",
    "Spec",
    "apply_overrides",
    "check_batch_sizes",
    "load_spec",
    "parse_spec",
    "spec_from_dict",
]
