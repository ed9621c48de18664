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
from pydantic_core import PydanticCustomError

from swap.catalog import DATASET_FACTS, held_out
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


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Data(Section):
    # digits, cifar10, cifar100, mnist, fashion_mnist, svhn, imagefolder (swap.data.DATASETS),
    # or "package.module:function" returning (train, test) datasets.
    dataset: StrictStr = "digits"
    # Folder of a torchvision data set's files, in torchvision's layout (null: ./data); also
    # passed to a custom function that takes `root`. Relative to where `swap run` runs.
    root: StrictStr | None = None
    download: StrictBool = False  # fetch missing files into root (torchvision's sets; internet)
    train_dir: StrictStr | None = None  # imagefolder: training images, a sub-folder per class
    test_dir: StrictStr | None = None  # imagefolder: test images, the same class sub-folders
    augment: StrictBool = True  # the data set's standard training augmentation
    val_fraction: Fraction = 0.1  # share of the training set held out (never the test set)
    image_size: PositiveInt | None = None  # imagefolder: side of the square crop, px; null: 224
    resize: PositiveInt | None = None  # imagefolder: side before test crop; null: 8/7 x image_size
    mean: list[Number] | None = None  # per-channel mean, pixels in [0, 1]; null: the data set's
    std: list[PositiveNumber] | None = None  # per-channel std, same units; null: the data set's
    loader_workers: NonNegativeInt = 0  # loader processes per training process; 0: in-process

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        from swap.data import check_dataset_name

        check_dataset_name(value)
        return value

    @field_validator("root")
    @classmethod
    def _default_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        from swap.datasets.files import FILE_DATASETS

        return "data" if value is None and info.data.get("dataset") in FILE_DATASETS else value

    @field_validator("download")
    @classmethod
    def _downloadable(cls, value: bool, info: ValidationInfo) -> bool:
        from swap.datasets.files import FILE_DATASETS

        dataset = info.data.get("dataset")
        if value and dataset is not None and dataset not in FILE_DATASETS:
            names = ", ".join(FILE_DATASETS)
            raise ValueError(f"only torchvision's data sets download ({names}), not {dataset}")
        return value

    @field_validator("augment")
    @classmethod
    def _plain_view_reachable(cls, value: bool, info: ValidationInfo) -> bool:
        from swap.user_code import accepts, import_function, is_reference

        dataset = info.data.get("dataset")
        custom = value and dataset is not None and is_reference(dataset)
        if custom and not accepts(import_function(dataset), "augment"):
            raise ValueError(
                f"{dataset} takes no `augment` argument, so swap cannot get the examples "
                "without augmentation that it validates on and refreshes BatchNorm with: "
                "give it an `augment` parameter (swap calls it with augment=False for "
                "those), or set data.augment: false if its examples are not augmented"
            )
        return value

    @field_validator("train_dir", "test_dir", "image_size", "resize")
    @classmethod
    def _imagefolder_only(cls, value: Any, info: ValidationInfo) -> Any:
        dataset = info.data.get("dataset")
        if dataset is None:
            return value
        if value is None and dataset == "imagefolder" and info.field_name.endswith("_dir"):
            raise ValueError("required for data.dataset: imagefolder")
        if value is not None and dataset != "imagefolder":
            raise ValueError(f"only for data.dataset: imagefolder (not {dataset})")
        if info.field_name == "resize" and value is not None:
            from swap.datasets.folder import IMAGE_SIZE

            size = info.data.get("image_size") or IMAGE_SIZE
            if value < size:
                raise ValueError(f"must be at least the crop, data.image_size ({size})")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _one_per_channel(cls, value: list[float] | None, info: ValidationInfo):
        from swap.data import builtin_channels

        dataset = info.data.get("dataset")
        if value is None or dataset is None:
            return value
        channels = builtin_channels(dataset)
        if channels is None:
            raise ValueError("a custom data set normalizes its own examples")
        if len(value) != channels:
            raise ValueError(f"expected {channels} value(s), one per channel of {dataset}")
        return value


class Model(Section):
    # small_cnn, resnet20/32/44/56/110, preresnet164, wide_resnet, vgg16_bn (CIFAR-style nets,
    # swap.models.ARCHS), a torchvision classification model by name (resnet18, resnet50, ...),
    # or "package.module:function" taking num_classes and returning an nn.Module.
    arch: StrictStr = "small_cnn"
    depth: PositiveInt | None = None  # wide_resnet: layers, 6n + 4 (WRN-28-10: 28); null: 28
    width: PositiveInt | None = None  # wide_resnet: widening factor k (WRN-28-10: 10); null: 10
    channels_last: StrictBool = False  # NHWC memory format (faster convolutions on tensor cores)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        from swap.models import check_arch_name

        check_arch_name(value)
        return value

    @field_validator("depth", "width")
    @classmethod
    def _wide_resnet_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        arch = info.data.get("arch")
        if value is not None and arch is not None and arch != "wide_resnet":
            raise ValueError(f"only for model.arch: wide_resnet (not {arch})")
        if info.field_name == "depth" and value is not None and (value < 10 or (value - 4) % 6):
            raise ValueError("must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...)")
        return value


class Phase1(Section):
    workers: PositiveInt = 2  # Ray Train workers (DDP ranks)
    batch_size: PositiveInt = 512  # global examples per step, split evenly over the workers
    lr: PositiveNumber = 0.4  # peak learning rate for the global batch, reached after warm-up
    momentum: Fraction = 0.9  # SGD momentum
    weight_decay: NonNegativeNumber = 5e-4  # L2 penalty coefficient
    warmup_epochs: NonNegativeInt = 1  # epochs of linear warm-up from 0 to lr
    max_epochs: PositiveInt = 20  # hard stop; the LR decays linearly to 0 at this epoch
    stop_train_accuracy: Accuracy | None = None  # stop once an epoch's train accuracy reaches it
    max_failures: NonNegativeInt = 1  # group restarts (from the last epoch) after a worker dies

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
    max_retries: NonNegativeInt = 2  # reruns of a worker whose process or node died (resumes)
    min_workers: PositiveInt = 1  # phase 3 needs at least this many finished workers

    @field_validator("min_workers")
    @classmethod
    def _at_most_workers(cls, value: int, info: ValidationInfo) -> int:
        workers = info.data.get("workers")
        if workers is not None and value > workers:
            raise ValueError(f"must be at most phase2.workers ({workers})")
        return value


class Phase3(Section):
    bn_refresh: StrictBool = True  # recompute BatchNorm statistics of the averaged model
    bn_batches: PositiveInt | None = None  # batches for the refresh; null: the whole training set
    batch_size: PositiveInt = 256  # examples per batch for the BN refresh and evaluation


class Resources(Section):
    use_gpu: StrictBool = False  # one GPU per worker; DDP over NCCL instead of gloo
    cpus_per_worker: PositiveNumber = 1  # Ray CPUs per worker, in every phase (fractions allowed)
    # Ray GPUs per phase-2 worker and for the coordinator when use_gpu; a fraction shares a GPU.
    # A phase-1 rank always takes one whole GPU: NCCL cannot run two ranks on one GPU.
    gpus_per_worker: PositiveNumber = 1
    custom: dict[
        StrictStr, NonNegativeNumber
    ] = {}  # other Ray resources per worker: {name: amount}
    # How phase-1 ranks are placed (a Ray placement-group strategy): PACK keeps DDP traffic local.
    phase1_placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    # How phase-2 workers are scheduled: SPREAD puts them on as many nodes as it can, so one
    # node lost costs the fewest workers; DEFAULT lets Ray pack them.
    phase2_scheduling: Literal["SPREAD", "DEFAULT"] = "SPREAD"
    # Autocast dtype of forward passes: none (float32), bf16, or fp16 (GPU only; adds loss
    # scaling). Training, evaluation and the BN refresh all run under it.
    amp: Literal["none", "bf16", "fp16"] = "none"

    @field_validator("gpus_per_worker")
    @classmethod
    def _at_most_one(cls, value: float) -> float:
        if value > 1:
            raise ValueError("must be at most 1: a worker trains on one GPU (fractions share one)")
        return value

    @field_validator("amp")
    @classmethod
    def _fp16_on_gpu(cls, value: str, info: ValidationInfo) -> str:
        if value == "fp16" and info.data.get("use_gpu") is False:
            raise ValueError("fp16 needs resources.use_gpu: true (on CPU use bf16 or none)")
        return value


class Output(Section):
    # Runs land in <dir>/<name>/<run-id>/. A local path, a shared file system path, or a URI
    # that pyarrow.fs understands (s3://, gs://, ...). On a multi-node cluster it must be
    # storage every node reaches: workers write their checkpoints there, not to the driver.
    dir: StrictStr = "runs"


class RuntimeEnv(Section):
    """Ray runtime environment for `swap submit` (see Ray's RuntimeEnv); swap adds its own."""

    pip: list[StrictStr] | None = None  # packages to install for the job, e.g. ["swap==0.1.0"]
    env_vars: dict[StrictStr, StrictStr] = {}  # environment variables for every process
    working_dir: StrictStr | None = None  # a local folder (uploaded) or a remote URI
    py_modules: list[StrictStr] | None = None  # local module folders or URIs to ship


class Spec(Section):
    name: StrictStr  # run name; a safe file name
    seed: NonNegativeInt = 0  # every random stream of the job is split from it (swap.seeds)
    data: Data = Data()
    model: Model = Model()
    phase1: Phase1 = Phase1()
    phase2: Phase2 = Phase2()
    phase3: Phase3 = Phase3()
    resources: Resources = Resources()
    output: Output = Output()
    runtime_env: RuntimeEnv = RuntimeEnv()

    @field_validator("model")
    @classmethod
    def _model_fits_data(cls, value: Model, info: ValidationInfo) -> Model:
        from swap.models import channel_mismatch

        data = info.data.get("data")
        problem = data is not None and channel_mismatch(value.arch, data.dataset)
        if problem:
            raise PydanticCustomError("cross_field", problem)
        return value

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
    except UnicodeDecodeError:
        raise SpecError([f"{source}: cannot read the spec: not UTF-8 text"]) from None
    return parse_spec(text, source, overrides)


def parse_spec(text: str, source: str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Validate spec YAML `text`; `source` names it in error messages."""
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
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_describe(source, error) for error in exc.errors()]) from None
    facts = DATASET_FACTS.get(spec.data.dataset)
    if facts is not None:  # a built-in set: its published size is known before reading it
        check_batch_sizes(spec, facts.train_size, source)
    return spec


def check_batch_sizes(spec: Spec, train_size: int, source: str) -> None:
    """Raise a SpecError if a phase's batch is larger than the training examples left after
    the validation split (out of `train_size`): training drops a partial last batch, so such
    an epoch would have no step at all."""
    held = held_out(train_size, spec.data.val_fraction)
    examples = train_size - held
    of = f"{spec.data.dataset}: {train_size:,}" + (
        f" less {held:,} held out by data.val_fraction" if held else ""
    )
    problems = [
        f"{source}: {field}: {size:,} examples per step is more than the {examples:,} training "
        f"examples ({of}), so an epoch would have no full batch; use at most {examples:,}"
        for field, size in (
            ("phase1.batch_size", spec.phase1.batch_size),
            ("phase2.batch_size", spec.phase2.batch_size),
        )
        if size > examples
    ]
    if problems:
        raise SpecError(problems)


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
    if kind == "cross_field":  # the input is a whole section: the message says what is wrong
        return f"{source}: {field}: {error['msg']}"
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if kind == "model_type" or kind == "model_attributes_type":
        message = "must be a section (a mapping of fields)"
    return f"{source}: {field}: {message} (got {error['input']!r})"
