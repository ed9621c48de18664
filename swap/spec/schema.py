"""The job spec's sections and fields: types, defaults, units (each field's description), and the
checks between fields. No torch: names and shapes come from swap.catalog.

Run: swap validate --defaults   (prints every field, its default and its description)
"""

from __future__ import annotations

import math
import re
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
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from swap.catalog import (
    ARCHS,
    DATASETS,
    FILE_DATASETS,
    IMAGEFOLDER_SIZE,
    is_torchvision_arch,
)
from swap.user_code import accepts, import_function, is_reference


def is_uri(value: str) -> bool:
    return "://" in value


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

# Data fields that only some data sets take.
FIELD_DATASETS = {
    "train_dir": ("imagefolder", "images", "parquet"),
    "test_dir": ("imagefolder", "images", "parquet"),
    "image_size": ("imagefolder", "images"),
    "resize": ("imagefolder",),
    "image_column": ("parquet",),
    "label_column": ("parquet",),
    "num_classes": ("parquet",),
    "augmentation": ("images", "parquet"),
    "decode_cpus": ("images", "parquet"),
}
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
DATASET_NAMES = ", ".join(DATASETS)


def field(default: Any, description: str) -> Any:
    return Field(default, description=description)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Data(Section):
    """the examples: a built-in set, an image folder, or your own function"""

    dataset: StrictStr = field(
        "digits", 'a built-in one (python -m swap.catalog) or "package.module:function"'
    )
    root: StrictStr | None = field(
        None, "torchvision sets: folder of their files, relative to where swap runs (null: ./data)"
    )
    download: StrictBool = field(
        False, "torchvision sets: fetch missing files into root (internet)"
    )
    train_dir: StrictStr | None = field(
        None,
        "imagefolder, images: a folder per class; parquet: its shards (images, parquet: URIs too)",
    )
    test_dir: StrictStr | None = field(None, "the test set, as train_dir (the same class folders)")
    image_column: StrictStr = field("image", "parquet: encoded images (PNG, JPEG) or pixel arrays")
    label_column: StrictStr = field("label", "parquet: class indices, 0 to classes - 1")
    num_classes: PositiveInt | None = field(None, "parquet: classes (null: the largest label + 1)")
    augmentation: Literal["none", "crop", "crop_flip"] = field(
        "none", "images, parquet: pad-and-crop by side/8 (crop), and flips (crop_flip)"
    )
    decode_cpus: NonNegativeNumber = field(
        0, "images, parquet: Ray CPUs per read-and-decode task (0: beside training; 1: free CPUs)"
    )
    augment: StrictBool = field(True, "the data set's standard training augmentation")
    val_fraction: Fraction = field(0.1, "share of the training set held out (never the test set)")
    image_size: PositiveInt | None = field(
        None, f"imagefolder: square crop, pixels (null: {IMAGEFOLDER_SIZE}); images: resized to it"
    )
    resize: PositiveInt | None = field(
        None, "imagefolder: shorter side before the test crop, pixels (null: 8/7 x image_size)"
    )
    mean: list[Number] | None = field(
        None, "per-channel mean, pixels in [0, 1] (null: the data set's published one)"
    )
    std: list[PositiveNumber] | None = field(
        None, "per-channel standard deviation, same units (null: the data set's published one)"
    )
    loader_workers: NonNegativeInt = field(
        0, "DataLoader processes per training process (0: load in the process itself)"
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if is_reference(value):
            import_function(value)  # ValueError says why not
        elif value not in DATASETS:
            raise ValueError(
                f"unknown data set; choose one of {DATASET_NAMES}, "
                f"or 'package.module:function' returning (train, test) datasets"
            )
        return value

    @field_validator("root")
    @classmethod
    def _default_root(cls, value: str | None, info: ValidationInfo) -> str | None:
        return "data" if value is None and info.data.get("dataset") in FILE_DATASETS else value

    @field_validator("download")
    @classmethod
    def _downloadable(cls, value: bool, info: ValidationInfo) -> bool:
        dataset = info.data.get("dataset")
        if value and dataset is not None and dataset not in FILE_DATASETS:
            names = ", ".join(FILE_DATASETS)
            raise ValueError(f"only torchvision's data sets download ({names}), not {dataset}")
        return value

    @field_validator("augment")
    @classmethod
    def _plain_view_reachable(cls, value: bool, info: ValidationInfo) -> bool:
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
    def _folders_only(cls, value: Any, info: ValidationInfo) -> Any:
        dataset = info.data.get("dataset")
        if dataset is None:
            return value
        takes = FIELD_DATASETS[info.field_name]
        if value is None and dataset in takes and info.field_name.endswith("_dir"):
            raise ValueError(f"required for data.dataset: {dataset}")
        if value is not None and dataset not in takes:
            raise ValueError(f"only for data.dataset: {' or '.join(takes)} (not {dataset})")
        uri = isinstance(value, str) and is_uri(value)
        if uri and dataset == "imagefolder":
            raise ValueError("imagefolder reads local or shared folders; for s3://, gs:// "
                             "use data.dataset: images (streamed with Ray Data)")  # fmt: skip
        if info.field_name == "resize" and value is not None:
            size = info.data.get("image_size") or IMAGEFOLDER_SIZE
            if value < size:
                raise ValueError(f"must be at least the crop, data.image_size ({size})")
        return value

    @field_validator("image_column", "label_column", "num_classes", "augmentation", "decode_cpus")
    @classmethod
    def _streamed_only(cls, value: Any, info: ValidationInfo) -> Any:
        dataset = info.data.get("dataset")
        takes = FIELD_DATASETS[info.field_name]
        default = cls.model_fields[info.field_name].default
        if dataset is not None and value != default and dataset not in takes:
            raise ValueError(f"only for data.dataset: {' or '.join(takes)} (not {dataset})")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _one_per_channel(cls, value: list[float] | None, info: ValidationInfo):
        dataset = info.data.get("dataset")
        if value is None or dataset is None:
            return value
        if is_reference(dataset):
            raise ValueError("a custom data set normalizes its own examples")
        channels = DATASETS[dataset].channels
        if channels is None:  # a streamed set's: checked against its images (prepare_data)
            return value
        if len(value) != channels:
            raise ValueError(f"expected {channels} value(s), one per channel of {dataset}")
        return value


class Model(Section):
    """the network"""

    arch: StrictStr = field(
        "small_cnn",
        "swap's (python -m swap.catalog), torchvision's, or \"package.module:function\"",
    )
    depth: PositiveInt | None = field(None, "wide_resnet: layers, 6n + 4 (null: 28)")
    width: PositiveInt | None = field(None, "wide_resnet: widening factor k (null: 10)")
    channels_last: StrictBool = field(False, "NHWC memory format (faster on tensor-core GPUs)")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        # swap's own names win: vgg16_bn is the CIFAR net ("torchvision.models:vgg16_bn" is not).
        if is_reference(value):
            import_function(value)  # ValueError says why not
        elif value not in ARCHS and not is_torchvision_arch(value):
            raise ValueError(
                f"unknown architecture; choose one of {', '.join(ARCHS)}, a torchvision "
                f"classification model (resnet18, resnet50, ...), or 'package.module:function'"
            )
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
    """large-batch synchronous data-parallel SGD (Ray Train, DDP)"""

    workers: PositiveInt = field(2, "DDP ranks (Ray Train workers)")
    batch_size: PositiveInt = field(512, "global examples per step, split evenly over the ranks")
    lr: PositiveNumber = field(0.4, "peak learning rate for the global batch, after warm-up")
    momentum: Fraction = field(0.9, "SGD momentum")
    weight_decay: NonNegativeNumber = field(5e-4, "L2 penalty coefficient")
    warmup_epochs: NonNegativeInt = field(1, "epochs of linear warm-up from lr/steps to lr")
    max_epochs: PositiveInt = field(20, "hard stop; the LR decays linearly to 0 at this epoch")
    stop_train_accuracy: Accuracy | None = field(
        None, "e.g. 0.95: go to phase 2 once an epoch's training accuracy reaches it"
    )
    max_failures: NonNegativeInt = field(1, "restarts of the group (from its last checkpoint)")
    checkpoint_every: PositiveInt | None = field(
        None,
        "epochs between checkpoints, and the last; null: by time, at most 2% of phase 1",
    )

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
    """independent small-batch workers forked from phase 1's weights"""

    workers: PositiveInt = field(4, "independent workers (Ray tasks); they queue for resources")
    batch_size: PositiveInt = field(32, "examples per step, per worker")
    lr: PositiveNumber = field(0.02, "learning rate at the start of phase 2, per worker")
    momentum: Fraction | None = field(None, "null: phase1.momentum")
    weight_decay: NonNegativeNumber | None = field(None, "null: phase1.weight_decay")
    epochs: PositiveInt = field(5, "epochs each worker trains")
    schedule: Literal["cosine", "constant", "swa"] = field(
        "cosine", "LR over a worker's steps: cosine (to 0), constant, or swa"
    )
    swa_lr: PositiveNumber | None = field(
        None, "swa: cosine from lr down to this LR by swag_start, then constant"
    )
    max_retries: NonNegativeInt = field(2, "reruns of a worker whose process or node died")
    min_workers: PositiveInt = field(1, "phase 3 needs at least this many finished workers")
    swag_rank: NonNegativeInt = field(
        0, "SWAG: 0 off, or K >= 2 deviations kept ((K + 2) x model memory)"
    )
    swag_every: PositiveInt | None = field(None, "steps between SWAG snapshots (null: each epoch)")
    swag_start: Fraction = field(0.0, "share of a worker's steps before SWAG's first snapshot")

    @field_validator("swag_rank")
    @classmethod
    def _rank_off_or_two(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (off) or at least 2: the low-rank covariance needs two")
        return value

    @field_validator("swa_lr")
    @classmethod
    def _swa_schedule_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        schedule = info.data.get("schedule")
        if value is None and schedule == "swa":
            raise ValueError("required by phase2.schedule: swa (the LR of its constant tail)")
        if value is not None and schedule not in (None, "swa"):
            raise ValueError(f"only for phase2.schedule: swa (not {schedule})")
        return value

    @field_validator("swag_start")
    @classmethod
    def _starts_something(cls, value: float, info: ValidationInfo) -> float:
        rank, schedule = info.data.get("swag_rank"), info.data.get("schedule")
        if value and rank == 0 and schedule not in (None, "swa"):
            raise ValueError(
                "starts SWAG's snapshots (phase2.swag_rank is 0) or the swa schedule's tail "
                f"(phase2.schedule is {schedule}): it would change nothing"
            )
        return value

    @field_validator("min_workers")
    @classmethod
    def _at_most_workers(cls, value: int, info: ValidationInfo) -> int:
        workers = info.data.get("workers")
        if workers is not None and value > workers:
            raise ValueError(f"must be at most phase2.workers ({workers})")
        return value


class Phase3(Section):
    """average the workers, refresh BatchNorm statistics, evaluate"""

    bn_refresh: StrictBool = field(True, "recompute BatchNorm statistics of the averaged model")
    bn_batches: PositiveInt | None = field(None, "batches for the refresh (null: every example)")
    batch_size: PositiveInt = field(256, "examples per batch for the BN refresh and evaluation")
    combine: Literal["uniform", "greedy"] = field(
        "uniform", "uniform: average every finished worker; greedy: a greedy soup on validation"
    )
    ensemble: StrictBool = field(False, "also evaluate the workers' averaged predictions")
    swag_samples: NonNegativeInt = field(
        0, "draws from each worker's SWAG posterior (needs phase2.swag_rank)"
    )


class Resources(Section):
    """what each worker asks Ray for, and where workers go"""

    use_gpu: StrictBool = field(False, "a GPU per worker; DDP over NCCL instead of gloo")
    cpus_per_worker: PositiveNumber = field(1, "Ray CPUs per worker, every phase (fractions too)")
    phase1_cpus_per_worker: PositiveNumber | None = field(
        None, "Ray CPUs per phase-1 rank (its torch threads); null: cpus_per_worker"
    )
    gpus_per_worker: PositiveNumber = field(
        1, "phase 2-3 GPUs per worker, at most 1 (fractions share); a phase-1 rank takes 1"
    )
    custom: dict[StrictStr, NonNegativeNumber] = field({}, "other Ray resources: {name: amount}")
    phase1_placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = field(
        "PACK", "placement-group strategy of the ranks (PACK keeps DDP traffic local)"
    )
    phase2_scheduling: Literal["SPREAD", "DEFAULT"] = field(
        "SPREAD", "SPREAD: workers over as many nodes as possible; DEFAULT: Ray packs them"
    )
    amp: Literal["none", "bf16", "fp16"] = field(
        "none", "autocast of forward passes: none, bf16, or fp16 (GPU only; adds loss scaling)"
    )

    @property
    def phase1_cpus(self) -> float:
        return self.phase1_cpus_per_worker or self.cpus_per_worker

    @property
    def phase1_cpus_field(self) -> str:
        """The field `phase1_cpus` comes from, for messages."""
        return "phase1_cpus_per_worker" if self.phase1_cpus_per_worker else "cpus_per_worker"

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
    """where runs land"""

    dir: StrictStr = field(
        "runs", "runs go to <dir>/<name>/<run-id>/: a path, shared path or URI (s3://, gs://)"
    )


class RuntimeEnv(Section):
    """for `swap submit`: Ray's runtime environment of the job; swap adds its own"""

    pip: list[StrictStr] | None = field(None, 'packages for the job, e.g. ["swap==0.2.0"]')
    env_vars: dict[StrictStr, StrictStr] = field({}, "environment variables of every process")
    working_dir: StrictStr | None = field(None, "a local folder (uploaded) or a remote URI")
    py_modules: list[StrictStr] | None = field(None, "local module folders or URIs to ship")


class Spec(Section):
    """one SWAP job"""

    name: StrictStr = Field(description="run name; a safe file name (required)")
    seed: NonNegativeInt = field(0, "every random stream of the job is split from it")
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
        data = info.data.get("data")
        if data is None or is_reference(data.dataset) or value.arch in ARCHS:
            return value
        channels = DATASETS[data.dataset].channels
        if is_reference(value.arch) or channels in (3, None):
            return value
        raise PydanticCustomError(
            "cross_field",
            f"arch {value.arch!r} (torchvision) takes 3-channel images; data set "
            f"{data.dataset} has {channels}: choose one of swap's nets ({', '.join(ARCHS)})",
        )

    @field_validator("phase3")
    @classmethod
    def _greedy_needs_validation(cls, value: Phase3, info: ValidationInfo) -> Phase3:
        data = info.data.get("data")
        if value.combine == "greedy" and data is not None and data.val_fraction == 0:
            raise PydanticCustomError(
                "cross_field",
                "combine: greedy chooses workers by validation accuracy, and data.val_fraction "
                "is 0 (no validation split; the test set is never used to choose)",
            )
        return value

    @field_validator("phase3")
    @classmethod
    def _swag_samples_need_statistics(cls, value: Phase3, info: ValidationInfo) -> Phase3:
        phase2 = info.data.get("phase2")
        if value.swag_samples and phase2 is not None and phase2.swag_rank == 0:
            raise PydanticCustomError(
                "cross_field",
                f"swag_samples {value.swag_samples} draws from the workers' SWAG statistics, "
                "and phase2.swag_rank is 0 (none collected): set phase2.swag_rank, e.g. 20",
            )
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
