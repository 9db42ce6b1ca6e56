import numpy as np
import pytest
import torch
from torch import nn

from medtl.config import TrainConfig
from medtl.train.strategy import (Strategy, build_optimizer, decay_toward_start, param_groups_for, set_batchnorm_mode,
                                  starting_points)


class Staged(nn.Module):
    """A tiny network exposing ``stages`` like medtl's backbones."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        self.layer1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.layer2 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 2)
        self.stages = [("stem", self.stem), ("layer1", self.layer1), ("layer2", self.layer2), ("head", self.head)]

    def forward(self, x):
        return self.head(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))


def trainable(model):
    return [n for n, m in model.stages if all(p.requires_grad for p in m.parameters())]


def test_linear_partial_full():
    m = Staged()
    assert Strategy(TrainConfig(strategy="linear")).apply(m, 0) == ["head"] == trainable(m)
    assert Strategy(TrainConfig(strategy="partial", unfreeze_stages=2)).apply(m, 0) == ["layer1", "layer2", "head"]
    assert Strategy(TrainConfig(strategy="full")).apply(m, 5) == ["stem", "layer1", "layer2", "head"]


def test_gradual_unfreezes_one_stage_per_epoch_after_head_warmup():
    m, s = Staged(), Strategy(TrainConfig(strategy="gradual", freeze_epochs=2))
    assert [len(s.apply(m, e)) for e in range(6)] == [1, 1, 2, 3, 4, 4]


def test_discriminative_learning_rates():
    m = Staged()
    cfg = TrainConfig(strategy="gradual", lr=1.0, lr_decay=0.5)
    lrs = {g["name"]: g["lr"] for g in param_groups_for(m, cfg)}
    assert lrs == {"stem": 0.125, "layer1": 0.25, "layer2": 0.5, "head": 1.0}
    assert {g["lr"] for g in param_groups_for(m, TrainConfig(strategy="full", lr=1.0))} == {1.0}
    groups = param_groups_for(m, cfg)
    assert all(g["weight_decay"] == 0.0 for g in groups if all(p.ndim == 1 for p in g["params"]))
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len(list(m.parameters()))


def test_frozen_stage_keeps_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    m = Staged()
    cfg = TrainConfig(strategy="linear", lr=0.1)
    trainable_now = Strategy(cfg).apply(m, 0)
    opt = build_optimizer(m, cfg)
    m.train()
    set_batchnorm_mode(m, trainable_now, cfg.batchnorm)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for _ in range(3):
        loss = m(torch.randn(4, 1, 9, 9)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 10, 11, 100])
def test_onecycle_schedule_survives_tiny_cohorts(steps):
    from medtl.train.strategy import build_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = build_scheduler(opt, TrainConfig(schedule="onecycle", warmup=0.1), steps)
    lrs = []
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(np.isfinite(lrs)) and max(lrs) <= 1e-3 + 1e-12


def test_batchnorm_auto_reestimates_small_3d_batches_only():
    from medtl.train.strategy import resolve_batchnorm

    assert resolve_batchnorm(TrainConfig(batch_size=4), 3) == "reestimate"
    assert resolve_batchnorm(TrainConfig(batch_size=8), 3) == "train"
    assert resolve_batchnorm(TrainConfig(batch_size=4), 2) == "train"
    assert resolve_batchnorm(TrainConfig(batch_size=4, batchnorm="freeze"), 3) == "freeze"


@pytest.mark.parametrize("strategy, after", [("full", ["stem", "layer1", "layer2", "head"]),
                                             ("partial", ["layer2", "head"])])
def test_head_warmup_trains_the_head_alone_for_its_fraction_of_the_epochs(strategy, after):
    m = Staged()
    s = Strategy(TrainConfig(strategy=strategy, unfreeze_stages=1, epochs=10, head_warmup=0.25))
    assert s.head_epochs == 3  # ceil(0.25 x 10)
    assert [s.apply(m, e) for e in range(5)] == [["head"]] * 3 + [after] * 2
    assert trainable(m) == after


def test_head_warmup_is_skipped_for_a_random_backbone_and_other_strategies():
    m = Staged()
    assert Strategy(TrainConfig(strategy="full", epochs=10, head_warmup=0.25), pretrained=False).apply(m, 0) == \
        ["stem", "layer1", "layer2", "head"]
    gradual = Strategy(TrainConfig(strategy="gradual", freeze_epochs=1, epochs=10, head_warmup=0.5))
    assert gradual.head_epochs == 0 and len(gradual.apply(m, 1)) == 2
    assert Strategy(TrainConfig(strategy="full", epochs=1, head_warmup=0.1)).head_epochs == 0  # not the whole run


def test_l2sp_groups_are_the_pretrained_backbones_kernels_without_weight_decay():
    m, cfg = Staged(), TrainConfig(strategy="full", l2sp=3.0, weight_decay=0.05)
    groups = param_groups_for(m, cfg, pretrained=True)
    anchored = [g for g in groups if g.get("l2sp")]
    assert {g["name"] for g in anchored} == {"stem", "layer1", "layer2"}
    assert all(g["l2sp"] == 3.0 and g["weight_decay"] == 0.0 and all(p.ndim > 1 for p in g["params"]) for g in anchored)
    head = [g for g in groups if g["name"] == "head" and g["weight_decay"]]
    assert head and not any(g.get("l2sp") for g in head)  # the new head decays toward zero as before
    assert not any(g.get("l2sp") for g in param_groups_for(m, cfg, pretrained=False))  # a random start has no anchor
    assert not any(g.get("l2sp") for g in param_groups_for(m, TrainConfig(strategy="full"), pretrained=True))


def test_decay_toward_start_moves_each_trained_weight_lr_times_l2sp_of_its_way_back():
    m = Staged()
    opt = build_optimizer(m, TrainConfig(strategy="full", l2sp=2.0, lr=0.1), pretrained=True)
    start = starting_points(opt)
    assert sum(p is not None for p in start) == 3
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    for name, p in m.named_parameters():
        p.grad = None if name.startswith("layer1") else torch.zeros_like(p)  # layer1 frozen: no gradient
    decay_toward_start(opt, start)
    after = m.state_dict()
    for name, _ in m.named_parameters():
        if name.startswith(("stem", "layer2")) and after[name].ndim > 1:
            # w - 0.1 * 2 * (w - w0) with w = w0 + 1
            torch.testing.assert_close(after[name], before[name] - 0.2)
        else:
            assert torch.equal(after[name], before[name]), name
