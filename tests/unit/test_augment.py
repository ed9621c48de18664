"""Batch augmentation on the device: each image gets what torchvision's per-image RandomCrop
(with padding) and RandomHorizontalFlip would give it, drawn reproducibly from a seed.

Run: pytest tests/unit/test_augment.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from swap.data.augment import BatchTransform, flip_half, translate


def batch(n: int = 64, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g) + 0.1  # never 0: padding is


def offsets(image: torch.Tensor, out: torch.Tensor, pad: int) -> list[tuple[int, int]]:
    """Every (dy, dx) at which `out` is a crop of `image` zero-padded by `pad`."""
    padded = F.pad(image, (pad, pad, pad, pad))
    h, w = image.shape[-2:]
    return [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
            if torch.equal(padded[:, dy:dy + h, dx:dx + w], out)]  # fmt: skip


def test_each_image_is_its_own_zero_padded_crop_and_every_offset_is_drawn():
    images = batch(400)
    out = translate(images, 2, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.is_contiguous(memory_format=torch.channels_last)
    drawn = [offsets(x, y, 2) for x, y in zip(images, out, strict=True)]
    assert all(len(found) == 1 for found in drawn)  # exactly one crop of the padded image
    assert {found[0] for found in drawn} == {(dy, dx) for dy in range(5) for dx in range(5)}


def test_about_half_the_images_are_mirrored_and_the_rest_left_alone():
    images = batch(400)
    out = flip_half(images, torch.Generator().manual_seed(2))
    mirrored = [torch.equal(y, x.flip(-1)) for x, y in zip(images, out, strict=True)]
    assert all(m or torch.equal(y, x) for m, x, y in zip(mirrored, images, out, strict=True))
    assert 160 < sum(mirrored) < 240


def test_normalization_matches_torchvisions_and_evaluation_draws_nothing():
    raw = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    transform = BatchTransform(1 / 255, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), pad=4, flip=True)
    reference = v2.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])(raw.float() / 255)
    torch.testing.assert_close(transform(raw), reference)  # no generator: no augmentation
    assert transform.augments and not BatchTransform(1.0, (0.0,), (1.0,)).augments


def test_the_same_seed_draws_the_same_batch_and_another_seed_another():
    raw = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    transform = BatchTransform(1 / 255, (0.5,) * 3, (0.25,) * 3, pad=2, flip=True)
    device = torch.device("cpu")
    a = transform.training(7, device)(raw)
    b = transform.training(7, device)(raw)
    c = transform.training(8, device)(raw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = BatchTransform(1 / 255, (0.5,) * 3, (0.25,) * 3)
    assert plain.training(7, device) is plain  # nothing to draw
