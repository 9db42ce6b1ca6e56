"""benchmarks/bench_train.py times the model as training sets it up for an epoch of the recipe."""

from __future__ import annotations

import pytest
import torch

from medtl.config import load_config
from medtl.models import create
from medtl.train.strategy import _stages

from .test_medmnist_shift import _load


@pytest.fixture()
def bt():
    return _load("bench_train")


def _model():
    return create("resnet18", in_channels=1, num_classes=2, weights=None)


def _trains(model, stage: str) -> bool:
    return all(p.requires_grad for p in dict(_stages(model))[stage].parameters())


def test_gradual_recipe_is_timed_with_the_stages_its_epoch_trains(bt):
    cfg = load_config(None, ["train.strategy=gradual", "train.epochs=4", "train.freeze_epochs=1",
                             "train.bn_momentum=0.1", "model.weights=imagenet"])
    model, trainable, epoch = bt.training_model(_model(), cfg, 0)
    names = [n for n, _ in _stages(model)]
    assert epoch == 0 and trainable == names[-1:]  # the head alone
    assert not _trains(model, names[0]) and _trains(model, names[-1])
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in bns) and not any(m.training for m in bns)  # frozen: eval statistics
    model, trainable, epoch = bt.training_model(_model(), cfg)  # default: the last epoch
    assert epoch == 3 and trainable == names[-4:] and _trains(model, names[-2]) and not _trains(model, names[0])
    with pytest.raises(SystemExit, match="epochs 0 to 3"):
        bt.training_model(_model(), cfg, 4)


def test_full_recipe_trains_everything(bt):
    cfg = load_config(None, ["train.strategy=full", "train.epochs=2"])
    model, trainable, _ = bt.training_model(_model(), cfg)
    assert trainable == [n for n, _ in _stages(model)] and all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
