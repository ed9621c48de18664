"""The job spec: YAML sections, their fields (with units), validation and `key=value` overrides.

Run: swap validate configs/quickstart.yaml phase2.workers=8
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from swap.errors import SpecError


def _number(value: Any) -> float:
    """A real number: YAML ints/floats, or strings like "5e-4" (which YAML 1.1 leaves as text)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    if not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return float(value)


Number = Annotated[float, BeforeValidator(_number)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
PositiveNumber = Annotated[Number, Field(gt=0)]
NonNegativeNumber = Annotated[Number, Field(ge=0)]
Fraction = Annotated[Number, Field(ge=0, lt=1)]  # in [0, 1)
Accuracy = Annotated[Number, Field(gt=0, le=1)]  # in (0, 1]

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _one_of(value: str, registry: dict[str, Any], what: str) -> str:
    if value not in registry:
        raise ValueError(f"unknown {what}; choose one of {', '.join(sorted(registry))}")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Data(Section):
    dataset: StrictStr = "digits"  # a name in swap.data.DATASETS
    root: StrictStr | None = None  # folder holding the data set's files, for file-backed sets
    augment: StrictBool = True  # the data set's standard training augmentation
    val_fraction: Fraction = 0.1  # share of the training set held out (never the test set)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from swap.data import DATASETS

        return _one_of(value, DATASETS, "data set")


class Model(Section):
    arch: StrictStr = "small_cnn"  # a name in swap.models.ARCHS

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        from swap.models import ARCHS

        return _one_of(value, ARCHS, "architecture")


class Phase1(Section):
    workers: PositiveInt = 2  # Ray Train workers (DDP ranks)
    batch_size: PositiveInt = 512  # global examples per step, split evenly over the workers
    lr: PositiveNumber = 0.4  # peak learning rate for the global batch, reached after warm-up
    momentum: Fraction = 0.9  # SGD momentum
    weight_decay: NonNegativeNumber = 5e-4  # L2 penalty coefficient
    warmup_epochs: NonNegativeInt = 1  # epochs of linear warm-up from 0 to lr
    max_epochs: PositiveInt = 20  # hard stop; the LR decays linearly to 0 at this epoch
    stop_train_accuracy: Accuracy | None = None  # stop once an epoch's train accuracy reaches it

    @field_validator("batch_size")
    @classmethod
    def _divisible(cls, value: int, info: ValidationInfo) -> int:
        workers = info.data.get("workers")
        if workers and value % workers:
            raise ValueError(f"must be divisible by phase1.workers ({workers})")
        return value

    @field_validator("max_epochs")
    @classmethod
    def _after_warmup(cls, value: int, info: ValidationInfo) -> int:
        warmup = info.data.get("warmup_epochs")
        if warmup is not None and value <= warmup:
            raise ValueError(f"must be greater than phase1.warmup_epochs ({warmup})")
        return value


class Phase2(Section):
    workers: PositiveInt = 4  # independent small-batch workers (Ray tasks); they queue for CPUs
    batch_size: PositiveInt = 32  # examples per step, per worker
    lr: PositiveNumber = 0.02  # learning rate at the start of phase 2, per worker
    momentum: Fraction | None = None  # null: phase1.momentum
    weight_decay: NonNegativeNumber | None = None  # null: phase1.weight_decay
    epochs: PositiveInt = 5  # epochs each worker trains
    schedule: Literal["cosine", "constant"] = "cosine"  # LR over a worker's epochs


class Phase3(Section):
    bn_refresh: StrictBool = True  # recompute BatchNorm statistics of the averaged model
    bn_batches: PositiveInt | None = None  # batches for the refresh; null: the whole training set
    batch_size: PositiveInt = 256  # examples per batch for the BN refresh and evaluation


class Resources(Section):
    use_gpu: StrictBool = False  # one GPU per worker; DDP over NCCL instead of gloo
    cpus_per_worker: PositiveNumber = 1  # Ray CPUs per worker, in every phase (fractions allowed)


class Output(Section):
    dir: StrictStr = "runs"  # runs land in <dir>/<name>/<run-id>/


class Spec(Section):
    name: StrictStr  # run name; a safe file name
    seed: NonNegativeInt = 0  # phase 1 uses it; phase-2 worker i uses seed + 1 + i
    data: Data = Data()
    model: Model = Model()
    phase1: Phase1 = Phase1()
    phase2: Phase2 = Phase2()
    phase3: Phase3 = Phase3()
    resources: Resources = Resources()
    output: Output = Output()

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not SAFE_NAME.fullmatch(value):
            raise ValueError(
                "must be a safe file name: letters, digits, '.', '_', '-', "
                "starting with a letter or digit, at most 100 characters"
            )
        return value

    @property
    def phase2_momentum(self) -> float:
        return self.phase1.momentum if self.phase2.momentum is None else self.phase2.momentum

    @property
    def phase2_weight_decay(self) -> float:
        wd = self.phase2.weight_decay
        return self.phase1.weight_decay if wd is None else wd

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read, override and validate a spec file; every problem is reported at once."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SpecError([f"{source}: cannot read the spec: {exc.strerror or exc}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{source}: invalid YAML{at}: {problem}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise SpecError([f"{source}: a spec is a mapping of sections, not a {kind}"])
    return spec_from_dict(apply_overrides(raw, overrides, source), source)


def spec_from_dict(raw: dict[str, Any], source: str = "<spec>") -> Spec:
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_describe(source, error) for error in exc.errors()]) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str):
    """Return a copy of `raw` with each dotted `key=value` set; values are parsed as YAML."""
    result = _deep_copy(raw)
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"{source}: override {item!r}: expected dotted.key=value")
            continue
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        node = result
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                section = ".".join(parents[: depth + 1])
                problems.append(f"{source}: override {item!r}: {section} is not a section")
                break
            node = child
        else:
            node[leaf] = value
    if problems:
        raise SpecError(problems)
    return result


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    return value


def _describe(source: str, error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        return f"{source}: {field}: required field is missing"
    if kind == "extra_forbidden":
        return f"{source}: {field}: unknown field (got {error['input']!r})"
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if kind == "model_type" or kind == "model_attributes_type":
        message = "must be a section (a mapping of fields)"
    return f"{source}: {field}: {message} (got {error['input']!r})"
