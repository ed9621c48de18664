"""What swap knows of its data sets and architectures by name, without importing torch.

Run: python -m swap.catalog   (lists them)

The spec validates against this alone, so `swap validate` and `swap --help` answer at once;
swap/data/ and swap/models/ build from the same entries (one source for every name and shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Augmentation = Literal["shift1", "crop_flip", "crop", "none", "resized_crop_flip"]


@dataclass(frozen=True)
class DatasetFacts:
    """A built-in data set: its classes, image shape, published sizes and standard augmentation.
    Sizes are None where they depend on the user's files (imagefolder)."""

    name: str
    num_classes: int | None  # None: counted from the class folders or the labels
    channels: int | None  # None: read from the images (streamed sets)
    image_size: int | None  # side of the square images, pixels; None: set by data.image_size
    train_size: int | None  # examples in its training set (before data.val_fraction is held out)
    test_size: int | None
    augmentation: Augmentation
    torchvision_files: bool = False  # torchvision's file layout under data.root; downloadable


DATASETS: dict[str, DatasetFacts] = {
    facts.name: facts
    for facts in (
        # scikit-learn's 1,797 digits: swap keeps a fixed stratified 20% (360) as the test set.
        DatasetFacts("digits", 10, 1, 8, 1437, 360, "shift1"),
        DatasetFacts("cifar10", 10, 3, 32, 50_000, 10_000, "crop_flip", torchvision_files=True),
        DatasetFacts("cifar100", 100, 3, 32, 50_000, 10_000, "crop_flip", torchvision_files=True),
        DatasetFacts("mnist", 10, 1, 28, 60_000, 10_000, "none", torchvision_files=True),
        DatasetFacts("fashion_mnist", 10, 1, 28, 60_000, 10_000, "none", torchvision_files=True),
        # SVHN's digits are not mirror-symmetric: crop, no flip.
        DatasetFacts("svhn", 10, 3, 32, 73_257, 26_032, "crop", torchvision_files=True),
        DatasetFacts("imagefolder", None, 3, None, None, None, "resized_crop_flip"),
        # Streamed with Ray Data from where they are kept (swap/data/stream.py): their shape,
        # classes and augmentation come from the data and the spec.
        DatasetFacts("parquet", None, None, None, None, None, "none"),
        DatasetFacts("images", None, None, None, None, None, "none"),
    )
}
FILE_DATASETS = tuple(name for name, facts in DATASETS.items() if facts.torchvision_files)
STREAMED_DATASETS = ("parquet", "images")
IMAGEFOLDER_SIZE = 224  # imagefolder: side of the square crop the model sees, pixels
IMAGEFOLDER_RESIZE_RATIO = 256 / 224  # shorter side before the test-time centre crop, per crop

# swap's own networks (swap/models/): the CIFAR-style nets keep a 32-pixel image large enough.
ARCHS = (
    "small_cnn",
    "mlp",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "preresnet164",
    "wide_resnet",
    "vgg16_bn",
)
# torchvision's classification models (torchvision.models.list_models, 0.29), so a spec names
# one without importing torchvision; a name not here is looked up in torchvision itself.
TORCHVISION_ARCHS = frozenset(
    [
        "alexnet",
        "convnext_base",
        "convnext_large",
        "convnext_small",
        "convnext_tiny",
        "densenet121",
        "densenet161",
        "densenet169",
        "densenet201",
        "efficientnet_b0",
        "efficientnet_b1",
        "efficientnet_b2",
        "efficientnet_b3",
        "efficientnet_b4",
        "efficientnet_b5",
        "efficientnet_b6",
        "efficientnet_b7",
        "efficientnet_v2_l",
        "efficientnet_v2_m",
        "efficientnet_v2_s",
        "googlenet",
        "inception_v3",
        "maxvit_t",
        "mnasnet0_5",
        "mnasnet0_75",
        "mnasnet1_0",
        "mnasnet1_3",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "regnet_x_16gf",
        "regnet_x_1_6gf",
        "regnet_x_32gf",
        "regnet_x_3_2gf",
        "regnet_x_400mf",
        "regnet_x_800mf",
        "regnet_x_8gf",
        "regnet_y_128gf",
        "regnet_y_16gf",
        "regnet_y_1_6gf",
        "regnet_y_32gf",
        "regnet_y_3_2gf",
        "regnet_y_400mf",
        "regnet_y_800mf",
        "regnet_y_8gf",
        "resnet101",
        "resnet152",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "resnext50_32x4d",
        "shufflenet_v2_x0_5",
        "shufflenet_v2_x1_0",
        "shufflenet_v2_x1_5",
        "shufflenet_v2_x2_0",
        "squeezenet1_0",
        "squeezenet1_1",
        "swin_b",
        "swin_s",
        "swin_t",
        "swin_v2_b",
        "swin_v2_s",
        "swin_v2_t",
        "vgg11",
        "vgg11_bn",
        "vgg13",
        "vgg13_bn",
        "vgg16",
        "vgg16_bn",
        "vgg19",
        "vgg19_bn",
        "vit_b_16",
        "vit_b_32",
        "vit_h_14",
        "vit_l_16",
        "vit_l_32",
        "wide_resnet101_2",
        "wide_resnet50_2",
    ]
)


def is_torchvision_arch(name: str) -> bool:
    """A torchvision classification model's name. Names in the list above answer at once; any
    other imports torchvision (and torch) to ask it: a newer torchvision may have more."""
    if name in TORCHVISION_ARCHS:
        return True
    import torchvision.models

    return name in torchvision.models.list_models(module=torchvision.models)


def held_out(examples: int, val_fraction: float) -> int:
    """How many of `examples` the validation split takes: scikit-learn's train_test_split, which
    swap holds out with, rounds the held-out count up."""
    return math.ceil(val_fraction * examples) if val_fraction > 0 else 0


def main() -> None:
    for f in DATASETS.values():
        shape = f"{f.channels} x {f.image_size} x {f.image_size}" if f.image_size else "any"
        shape = shape if f.channels else "from the data"
        sizes = f"train {f.train_size:>6,}  test {f.test_size:>6,}" if f.train_size else ""
        print(f"{f.name:<14} {f.num_classes or '?':>4} classes  {shape:<12} {sizes}")
    print("architectures:", ", ".join(ARCHS), "and torchvision's:", len(TORCHVISION_ARCHS))


if __name__ == "__main__":
    main()
