"""A user's own data sets and models, named in specs as "tests.custom_code:<function>".

Run: imported by the tests through `data.dataset` / `model.arch`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

CALLS: list[dict] = []  # the keywords each data set function was called with


def tensor_sets(root=None, augment=True):
    """24 training and 8 test 2x6x6 images of 3 classes; augmentation adds 100 to the input."""
    CALLS.append({"root": root, "augment": augment})
    images = torch.arange(24 * 2 * 36, dtype=torch.float32).reshape(24, 2, 6, 6)
    labels = torch.arange(24) % 3
    train_images = images + 100 if augment else images
    return TensorDataset(train_images, labels), TensorDataset(images[:8], labels[:8])


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
