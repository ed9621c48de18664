"""Whole batches made ready on the training device: raw pixels to normalized floats, and the
standard augmentations (random translation by pad-and-crop, horizontal flips) drawn per image.

Run: python -c "from swap.data.augment import BatchTransform as B; help(B)"

The fastest CIFAR trainers augment this way: one gather per batch on the device instead of a
Python call per image in a loader process. The draws come from a torch.Generator the caller
seeds (once per epoch, from the worker's stream), so they are reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class BatchTransform:
    """Raw pixels -> `(pixels * scale - mean) / std` per channel; for training batches, first a
    random shift of up to `pad` pixels each way (torchvision's RandomCrop(size, padding=pad):
    zero padding, in [0, 1] units) and, with `flip`, a horizontal flip with probability 1/2."""

    scale: float  # raw pixel -> [0, 1]: 1/255 for uint8 images, 1/16 for the 8x8 digits
    mean: tuple[float, ...]  # per channel, [0, 1] units
    std: tuple[float, ...]
    pad: int = 0  # pixels of random translation for training batches (0: none)
    flip: bool = False

    @property
    def augments(self) -> bool:
        return self.pad > 0 or self.flip

    def training(self, seed: int, device: torch.device) -> Callable[[Tensor], Tensor]:
        """This transform for one epoch's training batches, its draws from a generator on
        `device` seeded with `seed`."""
        if not self.augments:
            return self
        return partial(self, generator=torch.Generator(device=device).manual_seed(seed))

    def __call__(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """`raw` (N x C x H x W, on the training device) ready for the model; augmented when a
        `generator` is given (training) and the data set has an augmentation."""
        images = raw.float() * self.scale
        if generator is not None and self.pad:
            images = translate(images, self.pad, generator)
        if generator is not None and self.flip:
            images = flip_half(images, generator)
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std


def translate(images: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Each image zero-padded by `pad` and cropped back at a random offset in [0, 2 pad]^2, all
    in one gather. The result is NHWC in memory (channels-last), which convolutions like."""
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # N x H' x W' x C
    dy = torch.randint(0, 2 * pad + 1, (n,), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=device, generator=generator)
    rows = dy[:, None] + torch.arange(h, device=device)  # N x H
    cols = dx[:, None] + torch.arange(w, device=device)  # N x W
    which = torch.arange(n, device=device)[:, None, None]
    return padded[which, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def flip_half(images: Tensor, generator: torch.Generator) -> Tensor:
    """Each image mirrored left-right with probability 1/2."""
    mirrored = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return torch.where(mirrored[:, None, None, None], images.flip(3), images)
