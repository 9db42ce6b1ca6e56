"""The documented Python API answers a hostile argument with medtl's own one-line error naming the
argument (a bare ValueError, IndexError or TypeError before; still one of those, for callers that caught
them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtl import explain, models
from medtl.errors import ArgumentError, ArgumentIndexError, ArgumentTypeError, ConfigError, MedtlError

from .conftest import REPO, write_untrained_run


@pytest.fixture(scope="module")
def net():
    return models.create("resnet18", weights=None, in_channels=1, num_classes=2)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from medtl.infer import Predictor

    return Predictor.from_run(write_untrained_run(tmp_path_factory.mktemp("api") / "run"), device="cpu")


def test_models_create_freeze_and_param_groups(net):
    with pytest.raises(ConfigError, match=r"^num_classes=-1: give the number of classes \(2 or more"):
        models.create("resnet18", weights=None, num_classes=-1)  # was torch's RuntimeError
    with pytest.raises(ConfigError, match=r"^num_classes='2': give the number of classes"):
        models.create("resnet18", weights=None, num_classes="2")  # was a TypeError from torch.empty
    with pytest.raises(ConfigError, match=r"^num_classes=0: "):
        models.create("resnet18", weights=None, num_classes=0)  # was a model with an empty head
    with pytest.raises(ArgumentError, match=r"^unknown stage 'layer9'; stages are \['stem', 'layer1'"):
        models.freeze(net, until="layer9")
    with pytest.raises(ArgumentError, match=r"^lr must be a number, got 'x'$"):
        models.param_groups(net, lr="x")  # was "'>' not supported between instances of 'str' and 'int'"
    with pytest.raises(ArgumentError, match=r"^lr must be positive, got 0$"):
        models.param_groups(net, lr=0)
    with pytest.raises(ArgumentError, match=r"^resnet18 expects \(B, 1, H, W\) input, got shape \(1, 3, 5, 5\)"):
        net(torch.zeros(1, 3, 5, 5))


def test_explain(net):
    x = torch.zeros(1, 32, 32)
    with pytest.raises(ArgumentError, match=r"^unknown saliency method 'bogus'; choose one of hirescam"):
        explain.saliency(net, x, method="bogus")
    with pytest.raises(ArgumentError, match=r"^target=9 is not a class of this model \(0\.\.1\)$"):
        explain.saliency(net, x, target=9)
    with pytest.raises(ArgumentError, match=r"^target='x' is not a class of this model \(0\.\.1\)$"):
        explain.saliency(net, x, target="x")  # was "invalid literal for int() with base 10: 'x'"
    with pytest.raises(ArgumentError, match=r"^x must be one network input \(C, H, W\) without a batch axis"):
        explain.saliency(net, x[None])
    with pytest.raises(ArgumentTypeError, match=r"^x must be a torch.Tensor"):
        explain.saliency(net, np.zeros((1, 32, 32)))
    with pytest.raises(ArgumentIndexError, match=r"^axial slice 999 is outside 0\.\.3$"):
        explain.display_slice(np.zeros((8, 8, 4)), 999)
    with pytest.raises(ArgumentError, match=r"^plane must be one of axial, coronal, sagittal, got 'bogus'$"):
        explain.display_slice(np.zeros((8, 8, 4)), 1, plane="bogus")
    with pytest.raises(ArgumentError, match=r"^saliency shape \(4, 4\) does not match the image \(8, 8\)$"):
        explain.heatmap_overlay(np.zeros((8, 8)), np.zeros((4, 4)))


def test_predictor(predictor):
    from medtl.io import load_scan

    scan = load_scan(REPO / "sample_data" / "ct2d" / "P0001_1.dcm")
    with pytest.raises(ArgumentError, match=r"^unknown saliency method 'bogus'"):
        predictor.predict(scan, saliency="bogus")
    with pytest.raises(ArgumentError, match=r"^target=5 is not a class of this model \(0\.\.1\)$"):
        predictor.saliency(scan, "gradcam", target=5)
    with pytest.raises(ArgumentError, match=r"^score_batch got no inputs"):
        predictor.score_batch([])  # was numpy's "need at least one array to stack"
    with pytest.raises(ArgumentError, match=r"^probs of shape \(3,\): give one probability per class of this "
                                            r"model \(2: a, b\)$"):
        predictor.decide([0.2, 0.3, 0.5])  # was an IndexError


def test_the_new_errors_are_still_what_callers_caught():
    assert issubclass(ArgumentError, ValueError) and issubclass(ArgumentIndexError, IndexError)
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, MedtlError)


def test_a_scan_error_too_long_for_one_line_keeps_its_reason_and_fix_and_shortens_the_path():
    from medtl.errors import NotAnImageError, one_line

    uids = "/".join("1.2.826.0.1.3680043.8.498." + str(10**37 + i) for i in range(3))
    path = f"/tmp/pytest-of-root/popen-gw0/work/incoming/{uids}.dcm"
    exc = NotAnImageError(path, "DICOM Basic Text SR Storage (SR) holds no image to classify",
                          "score the image series it refers to")
    line = one_line(exc)
    assert len(str(exc)) > 300 and len(line) <= 300
    assert line.startswith("/tmp/pytest-of-root/") and f"{10**37 + 2}.dcm: DICOM Basic Text SR Storage (SR) holds " \
        "no image to classify (score the image series it refers to)" in line
    plain = MedtlError(f"{path}: the scored study is no longer in the work folder (pull it again)")  # medtl's own
    assert one_line(plain).endswith(".dcm: the scored study is no longer in the work folder (pull it again)")
    assert len(one_line(plain)) <= 300
    short = NotAnImageError("/x.dcm", "holds no image", "fix")
    assert one_line(short) == str(short)
    assert one_line(NotAnImageError("/x.dcm", "r" * 400)).endswith("r...")  # no path to shorten: the end goes
