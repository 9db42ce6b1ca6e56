import math

import numpy as np
import pytest
import torch
from torch import nn

from medtl.train.config import TrainConfig
from medtl.train.lr_finder import find_lr, valley


class _Tiny(nn.Module):
    """A two-stage model with medtl's ``stages`` (what the strategy and optimiser groups use), 8 features in."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 2)

    @property
    def stages(self):
        return [("body", self.body), ("head", self.head)]

    def forward(self, x):
        return self.head(self.body(x))


def _loader(n=256, batch=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return [{"image": x[i:i + batch], "label": y[i:i + batch]} for i in range(0, n, batch)]


def test_valley_picks_the_middle_of_the_longest_descent():
    lrs = np.logspace(-6, 0, 13).tolist()
    losses = [1.0, 1.0, 0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.45, 0.9, 2.0, 5.0]
    # longest decreasing run: indices 0, 2, 3, ..., 8 (length 8, so start = 8 - 8 = 0);
    # fastai's pick: 0 + int(8/3) + int(8/3/2) = 2 + 1 = 3
    assert valley(lrs, losses) == pytest.approx(lrs[3])
    with pytest.raises(ValueError):
        valley([], [])


def test_find_lr_suggests_a_rate_inside_the_sweep_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = _Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = find_lr(model, _loader(), TrainConfig(strategy="full", lr=1e-3), "cpu", start=1e-5, end=10.0, steps=60)
    assert 1e-5 <= result.suggestion <= 10.0
    assert len(result.lrs) == len(result.losses) >= 5
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))  # exponential sweep
    assert math.isclose(result.lrs[1] / result.lrs[0], (10.0 / 1e-5) ** (1 / 59), rel_tol=1e-9)
    # the loss fell somewhere before the suggestion, and the copy, not the model, trained
    assert min(result.losses) < result.losses[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_find_lr_stops_when_the_loss_diverges():
    torch.manual_seed(0)
    result = find_lr(_Tiny(), _loader(), TrainConfig(strategy="full"), "cpu", start=1e-4, end=1e6, steps=80)
    assert result.stopped_early and len(result.lrs) < 80
    assert result.suggestion < 1e6


def test_find_lr_refuses_a_bad_range():
    with pytest.raises(ValueError, match="start < end"):
        find_lr(_Tiny(), _loader(), TrainConfig(), start=1.0, end=1e-3)


class _TinyBN(_Tiny):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Sequential(nn.BatchNorm1d(16), nn.Linear(16, 2))


def test_find_lr_sweeps_the_model_as_fit_trains_it_with_frozen_batchnorm_kept(monkeypatch):
    """``linear``: the sweep trains the head; the frozen body's BatchNorm statistics stay
    ImageNet's (eval mode), as in ``fit``, while the head's move. Seen on the swept network itself."""
    import copy

    torch.manual_seed(0)
    model = _TinyBN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(copy, "deepcopy", lambda m: m)  # sweep the model itself, to look at it afterwards
    find_lr(model, _loader(), TrainConfig(strategy="linear", lr=1e-3), "cpu",
            start=1e-5, end=1e-2, steps=10)
    after = model.state_dict()
    assert torch.equal(after["body.1.running_mean"], before["body.1.running_mean"])
    assert torch.equal(after["body.0.weight"], before["body.0.weight"])
    assert not torch.equal(after["head.0.running_mean"], before["head.0.running_mean"])
    assert not torch.equal(after["head.1.weight"], before["head.1.weight"])


def test_a_range_test_whose_loss_is_not_a_number_says_so_in_one_line():
    from medtl.errors import MedtlError

    batches = _loader()
    batches[0]["image"][0, 0] = float("nan")  # an image with a NaN voxel: the first step's loss is NaN
    with pytest.raises(MedtlError, match=r"^the learning-rate range test's training loss was not a number after 1 "
                                         r"steps from lr 1e-06: check that no image holds NaN or inf values"):
        find_lr(_Tiny(), batches, TrainConfig(strategy="full"), "cpu", steps=20)


def test_find_lr_mixes_images_as_training_does(monkeypatch):
    """``train.mixup`` shapes the sweep's loss through ``fit``'s own step: one mix per step, and
    a different loss curve from the unmixed sweep of the same seed."""
    from medtl.train import engine

    calls = []
    real = engine.mixup
    monkeypatch.setattr(engine, "mixup", lambda x, a: calls.append(a) or real(x, a))
    curves = {}
    for alpha in (0.0, 0.4):
        torch.manual_seed(0)
        curves[alpha] = find_lr(_Tiny(), _loader(), TrainConfig(strategy="full", mixup=alpha), "cpu",
                                start=1e-4, end=1e-1, steps=12).losses
    assert calls == [0.4] * 12
    assert curves[0.0] != curves[0.4]


def test_the_range_test_takes_the_runs_class_weights_and_sampler(tmp_path, monkeypatch):
    """``train.balance``: the sweep's loss carries ``fit``'s class weights (``loss``), and its batches come
    from the weighted sampler (``sampler``), so the suggestion is for the run that will use it."""
    from torch.utils.data import WeightedRandomSampler

    from medtl.config import load_config
    from medtl.data import class_weights
    from medtl.train import lr_finder
    from medtl.train.run import build_model, prepare_data, run_lr_finder

    from ..conftest import TINY_2D

    seen = {}

    def spy(model, loader, cfg, device, **kw):
        seen["loader"], seen["criterion"] = loader, kw["criterion"]
        return lr_finder.LRFinderResult([1e-3], [1.0], 1e-3, 1e-6, 1.0, False)

    monkeypatch.setattr(lr_finder, "find_lr", spy)
    for balance in ("loss", "sampler"):
        cfg = load_config("sample_tiny", [*TINY_2D, f"train.balance={balance}"])
        data = prepare_data(cfg, progress=False)
        run_lr_finder(build_model(data.cfg, len(data.cohort.class_names)), data, data.cfg, None)
        weight = seen["criterion"].weight
        if balance == "loss":
            expected = class_weights(data.cohort.split("train"), len(data.cohort.class_names))
            assert weight is not None and torch.equal(weight, expected)
            assert not isinstance(seen["loader"].sampler, WeightedRandomSampler)
        else:
            assert weight is None and isinstance(seen["loader"].sampler, WeightedRandomSampler)
        assert seen["criterion"].label_smoothing == data.cfg.train.label_smoothing
