"""Strict mapping of torchvision / lukemelas checkpoints onto MONAI-based backbones."""

from __future__ import annotations

import pytest
import torch

from medtl import models
from medtl.errors import WeightsError
from medtl.models._torchvision_keys import checkpoint_shapes
from medtl.models.keymap import checkpoint_convention, to_medtl_names

from .conftest import ARCHS, fake


@pytest.mark.parametrize("arch", ARCHS)
def test_every_backbone_tensor_is_filled_from_the_checkpoint(arch):
    legacy = arch == "densenet121"
    sd = fake(arch, legacy=legacy)
    model = models.create(arch)  # 1000-class head: the classifier is kept too
    info = models.load_pretrained(model, sd)
    assert info["head"] == "imagenet"
    mapped = to_medtl_names(model, sd, info["format"])
    target = model.state_dict()
    assert set(mapped) == {k for k in target if k != "gray_offset"} - {
        k for k in target if k.endswith("num_batches_tracked") and k not in mapped
    }
    for key, value in mapped.items():
        assert torch.equal(target[key], value.to(target[key].dtype)), key
    # every parameter and buffer (bar num_batches_tracked absent from legacy files) came from the file
    unfilled = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    assert unfilled == []


def test_checkpoint_convention_reads_the_key_names():
    assert checkpoint_convention(fake("resnet18")) == "torchvision"
    assert checkpoint_convention(fake("efficientnet_lite0")) == "lukemelas"
    assert checkpoint_convention(models.create("resnet18").state_dict()) == "medtl"


def test_densenet_accepts_both_legacy_and_current_names():
    a, b = models.create("densenet121"), models.create("densenet121")
    models.load_pretrained(a, fake("densenet121", legacy=True))
    models.load_pretrained(b, fake("densenet121", legacy=False))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(va, vb), k
    assert any(".norm.1." in k for k in checkpoint_shapes("densenet121", legacy=True))


@pytest.mark.parametrize("arch", ARCHS)
def test_missing_key_raises(arch):
    sd = dict(fake(arch))
    victim = next(k for k in sd if k.endswith("running_var"))
    del sd[victim]
    with pytest.raises(WeightsError, match="missing"):
        models.load_pretrained(models.create(arch, num_classes=2), sd)


@pytest.mark.parametrize("arch", ARCHS)
def test_extra_key_raises(arch):
    sd = dict(fake(arch))
    sd["layer9.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="layer9"):
        models.load_pretrained(models.create(arch, num_classes=2), sd)


def test_wrong_architecture_raises():
    with pytest.raises(WeightsError):
        models.load_pretrained(models.create("resnet34"), fake("resnet18"))
    with pytest.raises(WeightsError, match="shape"):
        sd = dict(fake("resnet18"))
        sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
        models.load_pretrained(models.create("resnet18"), sd)


def test_missing_num_batches_tracked_is_allowed():
    sd = {k: v for k, v in fake("resnet18").items() if not k.endswith("num_batches_tracked")}
    models.load_pretrained(models.create("resnet18"), sd)


def test_new_head_when_num_classes_differs_or_none():
    sd = fake("resnet18")
    m = models.create("resnet18", num_classes=3)
    before = m.head.weight.clone()
    info = models.load_pretrained(m, sd)
    assert info["head"] == "new" and torch.equal(m.head.weight, before)
    f = models.create("resnet18", num_classes=None)
    assert models.load_pretrained(f, sd)["head"] is None
    assert f.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 512)
