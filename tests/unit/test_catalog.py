"""swap.catalog, the torch-free list of names the spec validates against, agrees with what the
data sets and models really are.

Run: pytest tests/unit/test_catalog.py
"""

from __future__ import annotations

import torchvision.models

from swap import catalog
from swap.data import files
from swap.data.registry import DATASETS, load_splits
from swap.models.registry import BUILDERS
from swap.spec import Data


def test_every_name_has_a_builder_and_a_source():
    assert tuple(BUILDERS) == catalog.ARCHS
    assert tuple(DATASETS) == tuple(catalog.DATASETS)
    assert tuple(files.FILE_DATASETS) == catalog.FILE_DATASETS


def test_the_torchvision_list_is_this_torchvision():
    # A newer torchvision with more models fails here: add them to catalog.TORCHVISION_ARCHS.
    assert (
        set(torchvision.models.list_models(module=torchvision.models)) == catalog.TORCHVISION_ARCHS
    )


def test_a_name_missing_from_the_list_is_asked_of_torchvision(monkeypatch):
    monkeypatch.setattr(catalog, "TORCHVISION_ARCHS", frozenset())
    assert catalog.is_torchvision_arch("resnet18") and not catalog.is_torchvision_arch("resnet19")


def test_digits_has_the_sizes_and_shape_the_catalogue_says():
    facts = catalog.DATASETS["digits"]
    splits = load_splits(Data(val_fraction=0.1))
    assert len(splits.train) + len(splits.val) == facts.train_size
    assert len(splits.val) == catalog.held_out(facts.train_size, 0.1) == 144
    assert len(splits.test) == facts.test_size
    image, _ = splits.test[0]
    assert tuple(image.shape) == (facts.channels, facts.image_size, facts.image_size)
    assert splits.info.num_classes == facts.num_classes
