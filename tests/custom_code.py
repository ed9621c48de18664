"""A user's own data sets and models, named in specs as "tests.custom_code:<function>".

Run: imported by the tests through `data.dataset` / `model.arch`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from swap.data.registry import load_splits
from swap.spec import Data

CALLS: list[dict] = []  # the keywords each data set function was called with


def tensor_sets(root=None, augment=True):
    """24 training and 8 test 2x6x6 images of 3 classes; augmentation adds 100 to the input."""
    CALLS.append({"root": root, "augment": augment})
    images = torch.arange(24 * 2 * 36, dtype=torch.float32).reshape(24, 2, 6, 6)
    labels = torch.arange(24) % 3
    train_images = images + 100 if augment else images
    return TensorDataset(train_images, labels), TensorDataset(images[:8], labels[:8])


FETCHED: list[tuple[int, float]] = []  # (index, noise drawn) per training example fetched


class NoisyDigits(Dataset):
    """Examples of `images` with Gaussian noise of a random scale drawn per example from torch's
    RNG (a per-example random augmentation); each fetch is logged in FETCHED when `record`."""

    def __init__(self, images, labels, noise: bool, record: bool):
        self.images, self.labels, self.noise, self.record = images, labels, noise, record

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        scale = torch.rand(()).item() if self.noise else 0.0
        if self.record:
            FETCHED.append((index, scale))
        return image + scale * torch.randn_like(image), self.labels[index]


def noisy_digits(augment=True, record=False):
    """scikit-learn's digits (1,437 training, 360 test images, as swap splits them), normalized,
    with random noise as the augmentation."""
    splits = load_splits(Data(augment=False, val_fraction=0))

    def ready(images):  # raw pixels as the model sees them: swap's batch transform, here
        return splits.batch_transform(torch.from_numpy(images))

    train, test = splits.train, splits.test
    return (
        NoisyDigits(ready(train.images), torch.from_numpy(train.labels), augment, record),
        NoisyDigits(ready(test.images), torch.from_numpy(test.labels), False, False),
    )


def recorded_noisy_digits(augment=True):
    return noisy_digits(augment, record=augment)


def no_keywords():
    """Takes nothing: swap passes it nothing."""
    images = torch.zeros(10, 1, 4, 4)
    return TensorDataset(images, torch.arange(10) % 5), TensorDataset(
        images[:2], torch.zeros(2, dtype=torch.long)
    )


def returns_one_set():
    return TensorDataset(torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.long))


def returns_flat_examples():
    flat = TensorDataset(torch.zeros(4, 16), torch.zeros(4, dtype=torch.long))
    return flat, flat


def tiny_net(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


def not_a_module(num_classes: int):
    return {"classes": num_classes}


NOT_CALLABLE = 3


def cifar_shaped(augment=True, train=5000, test=1000):
    """CIFAR-shaped synthetic data (3 x 32 x 32, 10 classes, normalized noise around a class
    mean), for GPU checks and throughput: no download. Fixed seed; nothing to augment."""
    generator = torch.Generator().manual_seed(0)
    means = torch.randn(10, 3, 1, 1, generator=generator)

    def make(n: int) -> TensorDataset:
        labels = torch.randint(0, 10, (n,), generator=generator)
        images = means[labels] + torch.randn(n, 3, 32, 32, generator=generator)
        return TensorDataset(images, labels)

    return make(train), make(test)


class Labeled(TensorDataset):
    """A TensorDataset that says how many classes it has, as torchvision's data sets do."""

    def __init__(self, images, labels, classes: int = 10):
        super().__init__(images, labels)
        self.classes = [str(c) for c in range(classes)]


def _digits_like(n: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(n)
    return torch.randn(n, 1, size, size, generator=generator), torch.arange(n) % 10


def broken_data(augment=True):
    raise ValueError("no such bucket: s3://team/digits")


def labels_outside_the_classes(augment=True):
    images, labels = _digits_like(200)
    labels[7], labels[11], labels[40] = 12, -1, 12
    test_images, test_labels = _digits_like(50)
    return Labeled(images, labels), Labeled(test_images, test_labels)


def test_labels_outside_the_classes(augment=True):
    images, labels = _digits_like(200)
    test_images, test_labels = _digits_like(50)
    test_labels[3] = 10
    return Labeled(images, labels), Labeled(test_images, test_labels)


def nan_in_training_images(augment=True):
    images, labels = _digits_like(200)
    images[5, 0, 2, 2] = float("nan")
    images[9, 0, 0, 1] = float("inf")
    return Labeled(images, labels), Labeled(*_digits_like(50))


def nan_in_test_images(augment=True):
    test_images, test_labels = _digits_like(50)
    test_images[20] = float("nan")
    return Labeled(*_digits_like(200)), Labeled(test_images, test_labels)


def test_images_of_another_shape(augment=True):
    return Labeled(*_digits_like(200)), Labeled(*_digits_like(50, size=6))
