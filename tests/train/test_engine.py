"""The training loop's pieces on synthetic data: loaders, sampling, early stopping, best-score bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import WeightedRandomSampler

from medtl.config import load_config
from medtl.data import balanced_weights
from medtl.train import engine
from medtl.train.logger import read_history

from ..conftest import TINY_2D


class Staged(nn.Module):
    """A tiny network exposing ``stages`` like medtl's backbones."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        self.head = nn.Linear(4, 2)
        self.stages = [("stem", self.stem), ("head", self.head)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x).mean((2, 3)))


def cases(n: int, labels: list[int] | None = None, seed: int = 0) -> list[dict]:
    """``n`` items of a 9x9 image whose mean tells the class (labels alternate unless given)."""
    g = torch.Generator().manual_seed(seed)
    labels = labels if labels is not None else [i % 2 for i in range(n)]
    return [{"image": torch.randn(1, 9, 9, generator=g) + 2.0 * y, "label": y} for y in labels]


def cfg(*extra: str):
    return load_config(None, ["data.num_workers=0", "train.batch_size=4", "train.device=cpu", "train.strategy=full",
                              "train.lr=0.01", *extra])


def test_loader_workers_take_the_config_else_none_on_a_small_cpu(monkeypatch):
    cpu = torch.device("cpu")
    assert engine.loader_workers(cpu, 3) == 3
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 2)
    assert engine.loader_workers(cpu, -1) == 0
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 16)
    assert engine.loader_workers(cpu, -1) == 2
    assert engine.loader_workers(torch.device("cuda"), -1) == 8


def test_weighted_train_loader_replays_an_epoch_from_its_generator():
    items = cases(12, labels=[0] * 9 + [1] * 3)
    weights = balanced_weights(items, 2)
    loader, sampler, generator = engine.make_train_loader(items, cfg(), torch.device("cpu"), sample_weights=weights)
    assert isinstance(sampler, WeightedRandomSampler)
    torch.testing.assert_close(sampler.weights, torch.as_tensor(weights, dtype=torch.double))
    generator.manual_seed(5)
    first = list(sampler)
    generator.manual_seed(5)
    assert list(sampler) == first
    assert loader.drop_last and loader.batch_size == 4


def test_patience_stops_when_the_monitored_score_never_improves(tmp_path):
    # one class only in validation: its AUC is NaN, which never counts as an improvement
    best = []
    config = cfg("train.epochs=5", "train.patience=2", "train.schedule=constant")
    state = engine.fit(Staged(), cases(8), cases(4, labels=[0] * 4), config, tmp_path,
                       on_best=lambda m, epoch, row: best.append(epoch), progress=False)
    assert (state.epoch, state.bad_epochs, state.best_epoch, best) == (2, 2, -1, [])
    assert [r["epoch"] for r in read_history(tmp_path / "metrics.csv")] == [1, 2]
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_an_early_stopped_run_resumed_trains_no_more_epochs(tmp_path):
    config = cfg("train.epochs=5", "train.patience=2", "train.schedule=constant")
    engine.fit(Staged(), cases(8), cases(4, labels=[0] * 4), config, tmp_path, progress=False)
    state = engine.fit(Staged(), cases(8), cases(4, labels=[0] * 4), config, tmp_path, resume=True, progress=False)
    assert (state.epoch, state.bad_epochs) == (2, 2)
    assert [r["epoch"] for r in read_history(tmp_path / "metrics.csv")] == [1, 2]
    more = cfg("train.epochs=5", "train.patience=3", "train.schedule=constant")  # more patience given: it goes on
    assert engine.fit(Staged(), cases(8), cases(4, labels=[0] * 4), more, tmp_path, resume=True, progress=False).epoch == 3


def test_a_tie_on_the_monitored_score_goes_to_the_lower_validation_loss(tmp_path, monkeypatch):
    # a small validation set gives AUC 1.0 from the first epoch, while the probabilities are still
    # all alike (loss high): the first epoch must not win every tie
    rows = iter([{"val_loss": 3.0, "val_auc": 1.0}, {"val_loss": 1.0, "val_auc": 1.0},
                 {"val_loss": 2.0, "val_auc": 1.0}, {"val_loss": 0.5, "val_auc": 0.9}])
    monkeypatch.setattr(engine, "_validate", lambda run, model=None: next(rows))
    best = []
    state = engine.fit(Staged(), cases(8), cases(4), cfg("train.epochs=4", "train.schedule=constant"), tmp_path,
                       on_best=lambda m, epoch, row: best.append(epoch), progress=False)
    assert best == [1, 2] and state.best_epoch == 2 and state.bad_epochs == 2


def test_2d_on_a_cpu_trains_channels_last_to_the_same_weights_as_the_default_layout(tmp_path):
    """``train.channels_last`` (on by default) changes the layout, not the arithmetic: the same run in
    either layout ends with the same weights up to float rounding, and off leaves the model contiguous."""
    nets = {}
    for on in (True, False):
        torch.manual_seed(0)
        net = Staged()
        net.stem.append(nn.Conv2d(4, 4, 3))  # 4 input channels: the layouts differ (with 1 they coincide)
        engine.fit(net, cases(8), cases(4), cfg("train.epochs=2", f"train.channels_last={on}"), tmp_path / str(on),
                   progress=False)
        nets[on] = net
    w_on, w_off = nets[True].stem[2].weight, nets[False].stem[2].weight
    assert w_on.is_contiguous(memory_format=torch.channels_last) and not w_on.is_contiguous()
    assert w_off.is_contiguous() and not w_off.is_contiguous(memory_format=torch.channels_last)
    for k, v in nets[False].state_dict().items():
        torch.testing.assert_close(nets[True].state_dict()[k], v, rtol=1e-4, atol=1e-6)


def test_without_validation_the_lowest_training_loss_is_the_best(tmp_path):
    best = []
    state = engine.fit(Staged(), cases(16), None, cfg("train.epochs=3", "train.schedule=constant"), tmp_path,
                       on_best=lambda m, epoch, row: best.append((epoch, row["train_loss"])), progress=False)
    losses = [row["train_loss"] for row in state.history]
    expected = [e + 1 for e, loss in enumerate(losses) if loss < min(losses[:e], default=np.inf)]
    assert [epoch for epoch, _ in best] == expected and state.best_epoch == expected[-1]
    assert state.best_score == pytest.approx(-min(losses))
    assert "val_loss" not in state.history[0] and state.history[0]["trainable_stages"] == 2


def test_training_with_balance_sampler_draws_with_the_data_packages_weights(tmp_path, monkeypatch):
    from medtl.train import run

    seen = {}

    def fake_fit(model, train_ds, val_ds, cfg, out, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before any training

    monkeypatch.setattr(engine, "fit", fake_fit)
    config = load_config("sample_tiny", [*TINY_2D, "train.balance=sampler", "data.cache=none"])
    with pytest.raises(KeyboardInterrupt):
        run.train(config, tmp_path / "run", progress=False)
    train_items = run.prepare_data(config, progress=False).cohort.split("train")
    np.testing.assert_array_equal(seen["sample_weights"], balanced_weights(train_items, 2))
    assert seen["class_weights"] is None


class StagedBN(Staged):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU())
        self.bn_head = nn.BatchNorm1d(4, momentum=0.01)
        self.stages = [("stem", self.stem), ("head", nn.Sequential(self.bn_head, self.head))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn_head(self.stem(x).mean((2, 3))))


@pytest.mark.parametrize("momentum, expected", [(None, 0.01), (0.1, 0.1)])
def test_bn_momentum_setting_reaches_every_batchnorm(tmp_path, momentum, expected):
    extra = [] if momentum is None else [f"train.bn_momentum={momentum}"]
    net = StagedBN()
    engine.fit(net, cases(8), None, cfg("train.epochs=1", "train.schedule=constant", *extra), tmp_path,
               progress=False)
    assert [m.momentum for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] == [expected] * 2


def test_bn_momentum_must_be_in_0_1():
    from medtl.errors import ConfigError

    with pytest.raises(ConfigError):
        cfg("train.bn_momentum=0")


def test_predict_loader_keeps_the_ranking_of_confident_cases():
    """Logit gaps of 20..30 all round to p = 1 in float32; the probabilities must still rank them
    (otherwise a confident model's AUC collapses to 0.5 through ties)."""

    class Gap(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            g = x.flatten(1)[:, :1]
            return torch.cat([torch.zeros_like(g), g], dim=1)

    gaps = torch.linspace(20.0, 30.0, 6)
    batch = [{"image": g.view(1, 1, 1), "label": int(i >= 3)} for i, g in enumerate(gaps)]
    loader = torch.utils.data.DataLoader(batch, batch_size=6)
    probs, labels, _ = engine.predict_loader(Gap(), loader, torch.device("cpu"))
    assert np.all(np.diff(probs[:, 1]) > 0)
    assert len(np.unique(probs[:, 1])) == 6
    assert torch.softmax(gaps.view(-1, 1) * torch.tensor([[0.0, 1.0]]), 1)[:, 1].unique().numel() == 1
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9, 12])
def test_steps_per_epoch_is_the_train_loaders_length(n):
    """``train.min_steps`` derives epochs from this count: it must be what the loader really yields."""
    c = cfg()
    loader, _, _ = engine.make_train_loader(cases(n), c, torch.device("cpu"))
    assert engine.steps_per_epoch(n, 4) == len(loader) == len(list(loader))


def test_ema_is_the_warmed_up_exponential_average_of_weights_and_batchnorm_statistics():
    net = nn.BatchNorm1d(1)
    ema = engine.make_ema(net, decay=0.5)
    expected_w = expected_rm = None
    for n, value in enumerate([4.0, 2.0, 8.0, 1.0]):
        with torch.no_grad():
            net.weight.fill_(value)
            net.running_mean.fill_(-value)
        ema.update_parameters(net)
        d = min(0.5, (1 + n) / (10 + n))  # n = updates so far; the first update copies
        expected_w = value if n == 0 else expected_w * d + value * (1 - d)
        expected_rm = -value if n == 0 else expected_rm * d - value * (1 - d)
    assert ema.module.weight.item() == pytest.approx(expected_w, rel=1e-6)
    assert ema.module.running_mean.item() == pytest.approx(expected_rm, rel=1e-6)
    assert net.weight.item() == 1.0  # the trained model is not touched


def test_with_ema_validation_and_the_best_checkpoint_use_the_average(tmp_path):
    saved = []
    net = StagedBN()
    config = cfg("train.epochs=2", "train.schedule=constant", "train.ema=0.9")
    state = engine.fit(net, cases(16), cases(8, seed=1), config, tmp_path,
                       on_best=lambda m, epoch, row: saved.append(m), progress=False)
    payload = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in payload["ema"].items() if k.startswith("module.")}
    assert averaged.keys() == net.state_dict().keys()
    assert any(not torch.equal(averaged[k], v) for k, v in net.state_dict().items() if v.is_floating_point())
    assert saved and all(m is not net and isinstance(m, StagedBN) for m in saved)  # the average's module

    def val_loss(model: nn.Module) -> float:
        return engine.predict_loader(model, engine.DataLoader(cases(8, seed=1), batch_size=8), torch.device("cpu"))[2]

    average = StagedBN()
    average.load_state_dict(averaged)
    assert val_loss(average) == pytest.approx(state.history[-1]["val_loss"], rel=1e-6)
    assert val_loss(net) != pytest.approx(state.history[-1]["val_loss"], rel=1e-3)


def test_resuming_an_ema_run_from_a_checkpoint_without_the_average_says_so(tmp_path):
    from medtl.errors import MedtlError

    engine.fit(Staged(), cases(8), None, cfg("train.epochs=1"), tmp_path, progress=False)
    with pytest.raises(MedtlError, match="train.ema"):
        engine.fit(Staged(), cases(8), None, cfg("train.epochs=2", "train.ema=0.9"), tmp_path, resume=True,
                   progress=False)


def test_swa_model_is_the_equal_average_of_the_last_epochs_with_batchnorm_recomputed(tmp_path):
    """``train.swa=0.5`` of 4 epochs: epochs 3 and 4 averaged, statistics from one pass over the
    training data, validated and handed to ``on_best`` as the run's model; resumed mid-run."""
    from medtl.models.batchnorm import reestimate_batchnorm

    train_items, val_items = cases(16), cases(8, seed=1)
    # one batch an epoch: a batch's variance depends on which images share it, the sum of them does not
    config = cfg("train.epochs=4", "train.schedule=constant", "train.swa=0.5", "train.batch_size=16")
    engine.fit(StagedBN(), train_items, val_items, config, tmp_path, max_epochs_this_run=3, progress=False)
    w3 = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    saved = []
    net = StagedBN()
    state = engine.fit(net, train_items, val_items, config, tmp_path, resume=True, progress=False,
                       on_best=lambda m, epoch, row: saved.append((epoch, {k: v.clone() for k, v in m.state_dict().items()})))
    w4 = net.state_dict()
    epoch, final = saved[-1]
    assert epoch == state.best_epoch == 4
    assert state.swa["from_epoch"] == 3 and state.swa["epochs_averaged"] == 2
    expected = StagedBN()
    expected.load_state_dict({k: (w3[k] + w4[k]) / 2 if "running" not in k and "num_batches" not in k else w4[k]
                              for k in w4})
    reestimate_batchnorm(expected, engine.DataLoader(train_items, batch_size=16), torch.device("cpu"))
    for k, v in expected.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(final[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not torch.allclose(final["stem.1.running_mean"], w4["stem.1.running_mean"])  # not the last epoch's
    val_loss = engine.predict_loader(expected, engine.DataLoader(val_items, batch_size=8), torch.device("cpu"))[2]
    assert state.swa["val_loss"] == pytest.approx(val_loss, rel=1e-5)


@pytest.mark.parametrize("extra", [["train.strategy=linear"], ["train.strategy=full", "train.batchnorm=freeze"],
                                   ["train.strategy=linear", "train.batchnorm=reestimate"]])
def test_swa_keeps_the_batchnorm_statistics_its_frozen_stages_trained_with(tmp_path, extra):
    """SWA's statistics pass replaced a frozen stage's (ImageNet's, or AdaBN's) by the training data's: the head
    learnt on features the run's model no longer computes."""
    torch.manual_seed(0)
    net = StagedBN()
    saved = []
    engine.fit(net, cases(16), cases(8, seed=1), cfg("train.epochs=2", "train.swa=1", *extra), tmp_path,
               progress=False, on_best=lambda m, epoch, row: saved.append({k: v.clone() for k, v in m.state_dict().items()}))
    final = saved[-1]
    for k in ("stem.1.running_mean", "stem.1.running_var", "stem.1.num_batches_tracked"):
        assert torch.equal(final[k], net.state_dict()[k]), k  # the statistics the trained model used throughout
    if "train.strategy=linear" in extra:
        assert torch.equal(final["stem.0.weight"], net.state_dict()["stem.0.weight"])


def test_swa_stopped_before_its_epochs_keeps_the_best_epoch(tmp_path):
    best = []
    config = cfg("train.epochs=6", "train.patience=1", "train.schedule=constant", "train.swa=0.3")
    state = engine.fit(Staged(), cases(8), cases(4, labels=[0] * 4), config, tmp_path,
                       on_best=lambda m, epoch, row: best.append(epoch), progress=False)
    assert state.epoch == 1 and state.swa is None and best == []


@pytest.mark.parametrize("extra", [("train.ema=0.99", "train.swa=0.5"), ("train.swa=0.5", "train.soup=3")])
def test_two_weight_averages_together_are_refused(extra):
    with pytest.raises(ValueError, match="are all weight averages"):
        cfg(*extra)


def test_soup_is_the_greedy_average_of_the_best_epochs_and_the_run_model(tmp_path):
    """``train.soup=3`` of 5 epochs: the 3 best validation epochs kept (in ``last.pt``), the soup made of
    those the greedy pass took, validated, and handed to ``on_best`` last as the run's model."""
    from medtl.train.soup import average_weights

    saved = []
    val_items = cases(8, seed=1)
    config = cfg("train.epochs=5", "train.schedule=constant", "train.soup=3", "train.monitor=loss")
    state = engine.fit(StagedBN(), cases(16), val_items, config, tmp_path, progress=False,
                       on_best=lambda m, epoch, row: saved.append({k: v.clone() for k, v in m.state_dict().items()}))
    pool = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["soup"]
    by_loss = sorted(state.history, key=lambda r: r["val_loss"])[:3]
    assert [e["epoch"] for e in pool] == [r["epoch"] for r in by_loss] == state.soup["considered"]
    assert state.soup["epochs"][0] == state.best_epoch == by_loss[0]["epoch"]
    expected = average_weights([e["weights"] for e in pool if e["epoch"] in state.soup["epochs"]])
    for k, v in expected.items():
        torch.testing.assert_close(saved[-1][k], v)
    model = StagedBN()
    model.load_state_dict(expected)
    val_loss = engine.predict_loader(model, engine.DataLoader(val_items, batch_size=8), torch.device("cpu"))[2]
    assert state.soup["val_loss"] == pytest.approx(val_loss, rel=1e-6) == pytest.approx(state.best_score, rel=1e-6)
    assert state.best_score <= by_loss[0]["val_loss"] + 1e-7  # greedy: never worse than the best epoch


def test_soup_without_validation_says_so(tmp_path):
    from medtl.errors import MedtlError

    with pytest.raises(MedtlError, match="train.soup needs a validation split"):
        engine.fit(Staged(), cases(8), None, cfg("train.epochs=1", "train.soup=2"), tmp_path, progress=False)


def test_mixup_blends_each_image_with_a_partner_by_a_beta_weight():
    x = torch.randn(6, 1, 3, 3)
    torch.manual_seed(3)
    mixed, partner, lam = engine.mixup(x, alpha=0.4)
    assert sorted(partner.tolist()) == list(range(6)) and 0.0 <= lam <= 1.0
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[partner])
    torch.manual_seed(3)
    again, partner2, lam2 = engine.mixup(x, alpha=0.4)
    assert lam2 == lam and torch.equal(partner2, partner) and torch.equal(again, mixed)


def test_train_step_with_mixup_takes_the_loss_of_both_labels_in_the_mixing_proportion():
    net, x, y = Staged(), torch.randn(4, 1, 9, 9), torch.tensor([0, 1, 1, 0])
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(5)
    mixed, partner, lam = engine.mixup(x, 1.0)
    with torch.no_grad():
        out = net(mixed)
        expected = lam * criterion(out, y) + (1 - lam) * criterion(out, y[partner])
        plain = criterion(net(x), y)
    assert 0 < lam < 1 and not torch.equal(partner, torch.arange(4))  # seed 5 mixes for real
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(5)
    loss = engine.train_step(net, x, y, criterion, optimizer, scaler, None, mixup_alpha=1.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() != pytest.approx(plain.item(), rel=1e-3)
    net.load_state_dict(before)
    assert engine.train_step(net, x, y, criterion, optimizer, scaler, None).item() == pytest.approx(plain.item(), rel=1e-6)


@pytest.mark.parametrize("shape", [(6, 2, 16, 12), (5, 1, 8, 6, 10)])
def test_cutmix_pastes_one_box_of_a_partner_and_weighs_by_the_area_kept(shape):
    x = torch.randn(*shape)
    torch.manual_seed(1)
    mixed, partner, lam = engine.cutmix(x, alpha=1.0)
    assert sorted(partner.tolist()) == list(range(shape[0]))
    taken = mixed != x  # random data: a pasted pixel differs unless its partner is itself
    assert torch.equal(taken, (mixed == x[partner]) & (partner != torch.arange(shape[0])).view(-1, *[1] * (len(shape) - 1)))
    mask = (mixed == x[partner]).all(0).all(0)  # one box, the same for every image and channel
    idx = mask.nonzero()
    box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0).values, idx.max(0).values))
    assert mask[box].all() and int(mask.sum()) == mask[box].numel()
    assert lam == pytest.approx(1 - mask[box].numel() / mask.numel())
    torch.testing.assert_close(mixed[(slice(None), slice(None), *box)], x[partner][(slice(None), slice(None), *box)])
    torch.manual_seed(1)
    again, partner2, lam2 = engine.cutmix(x, alpha=1.0)
    assert lam2 == lam and torch.equal(partner2, partner) and torch.equal(again, mixed)


def test_cutmix_weights_follow_the_cut_area_on_average():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32)
    lams = [engine.cutmix(x, alpha=1.0)[2] for _ in range(400)]
    assert all(0.0 <= v <= 1.0 for v in lams)
    assert 0.5 < sum(lams) / len(lams) < 0.75  # Beta(1, 1) would average 0.5; clipping at the border keeps more


def test_train_step_with_cutmix_takes_the_loss_of_both_labels_by_area():
    net, x, y = Staged(), torch.randn(4, 1, 9, 9), torch.tensor([0, 1, 1, 0])
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    torch.manual_seed(4)
    mixed, partner, lam = engine.cutmix(x, 1.0)
    with torch.no_grad():
        out = net(mixed)
        expected = lam * criterion(out, y) + (1 - lam) * criterion(out, y[partner])
    assert 0 < lam < 1 and not torch.equal(partner, torch.arange(4))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(4)
    loss = engine.train_step(net, x, y, criterion, optimizer, scaler, None, cutmix_alpha=1.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_mixup_and_cutmix_are_one_or_the_other():
    with pytest.raises(Exception, match="keep one"):
        cfg("train.mixup=0.4", "train.cutmix=1.0")
    assert cfg("train.cutmix=1.0").train.cutmix == 1.0


def test_mixup_alpha_cannot_be_negative():
    with pytest.raises(Exception, match="mixup"):
        cfg("train.mixup=-0.2")


def test_l2sp_at_one_over_the_rate_holds_the_backbone_kernels_at_their_start(tmp_path):
    """``l2sp = 1/lr`` at a constant rate pulls each backbone kernel all the way back after every
    step, so it ends where it started while the head and the stem's bias train; a random start
    (``model.weights=null``) is not anchored."""
    net = Staged()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    engine.fit(net, cases(8), None, cfg("train.epochs=2", "train.schedule=constant", "train.l2sp=100"), tmp_path,
               progress=False)
    end = net.state_dict()
    torch.testing.assert_close(end["stem.0.weight"], start["stem.0.weight"], rtol=0, atol=1e-6)
    assert not torch.allclose(end["stem.0.bias"], start["stem.0.bias"])
    assert not torch.allclose(end["head.weight"], start["head.weight"])
    scratch = Staged()
    engine.fit(scratch, cases(8), None, cfg("train.epochs=2", "train.schedule=constant", "train.l2sp=100",
                                             "model.weights=null"), tmp_path / "scratch", progress=False)
    assert not torch.allclose(scratch.state_dict()["stem.0.weight"], start["stem.0.weight"])


def test_l2sp_resumed_after_an_epoch_equals_the_uninterrupted_run(tmp_path):
    """The starting weights are not in ``last.pt``: a resumed run takes them from the model it is
    given (built again from the same pretrained weights) before the checkpoint is loaded."""
    torch.manual_seed(0)
    init = Staged().state_dict()
    config = cfg("train.epochs=3", "train.l2sp=5")
    nets = []
    for name, split in (("full", None), ("resumed", 1)):
        net = Staged()
        net.load_state_dict(init)
        engine.fit(net, cases(8), None, config, tmp_path / name, max_epochs_this_run=split, progress=False)
        if split:
            net = Staged()
            net.load_state_dict(init)
            engine.fit(net, cases(8), None, config, tmp_path / name, resume=True, progress=False)
        nets.append(net.state_dict())
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])
    plain = Staged()
    plain.load_state_dict(init)
    engine.fit(plain, cases(8), None, cfg("train.epochs=3"), tmp_path / "plain", progress=False)
    assert not torch.equal(plain.state_dict()["stem.0.weight"], nets[0]["stem.0.weight"])
    # a run started without l2sp and resumed with it keeps the optimiser settings it started with
    engine.fit(Staged(), cases(8), None, cfg("train.epochs=2"), tmp_path / "late", max_epochs_this_run=1,
               progress=False)
    engine.fit(Staged(), cases(8), None, cfg("train.epochs=2", "train.l2sp=5"), tmp_path / "late", resume=True,
               progress=False)


def test_keep_epochs_writes_the_weights_each_epoch_validated(tmp_path):
    """``train.keep_epochs``: one file per epoch, each the weights whose validation loss that epoch's row
    records (exactly: re-scoring a kept epoch repeats its validation), and the last one the trained model."""
    from safetensors.torch import load_file

    net = StagedBN()
    config = cfg("train.epochs=3", "train.schedule=constant", "train.keep_epochs=true")
    state = engine.fit(net, cases(16), cases(8, seed=1), config, tmp_path, progress=False)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch_*.safetensors"))
    assert kept == ["epoch_001.safetensors", "epoch_002.safetensors", "epoch_003.safetensors"]
    val = engine.DataLoader(cases(8, seed=1), batch_size=8)
    for name, row in zip(kept, state.history):
        model = StagedBN()
        model.load_state_dict(load_file(tmp_path / "checkpoints" / name))
        assert engine.predict_loader(model, val, torch.device("cpu"))[2] == pytest.approx(row["val_loss"], rel=1e-6)
    last = load_file(tmp_path / "checkpoints" / kept[-1])
    assert all(torch.equal(last[k], v) for k, v in net.state_dict().items())
    assert state.history[0]["val_loss"] != pytest.approx(state.history[-1]["val_loss"], rel=1e-3)


def test_without_keep_epochs_no_epoch_weights_are_written(tmp_path):
    engine.fit(StagedBN(), cases(8), cases(4, seed=1), cfg("train.epochs=2"), tmp_path, progress=False)
    assert not list((tmp_path / "checkpoints").glob("epoch_*"))


@pytest.mark.parametrize("where", ["lr", "train_image", "val_image"])
def test_a_run_whose_loss_or_outputs_stop_being_numbers_stops_in_one_line_keeping_its_files(tmp_path, where):
    from medtl.errors import MedtlError

    train, val = cases(8), cases(4, seed=1)
    if where != "lr":
        (train if where == "train_image" else val)[0]["image"][0, 0, 0] = float("nan")
    lr = "1e10" if where == "lr" else "0.01"  # 1e10: epoch 1 finishes, epoch 2 diverges
    best = []
    torch.manual_seed(0)
    with pytest.raises(MedtlError) as err:
        engine.fit(Staged(), train, val, cfg(f"train.lr={lr}", "train.epochs=3", "train.schedule=constant"), tmp_path,
                   on_best=lambda m, epoch, row: best.append(epoch), progress=False)
    message = str(err.value)
    assert "\n" not in message and "training diverged" in message and f"train.lr (now {float(lr):g})" in message
    if where == "lr":
        assert message.startswith("the training loss is nan at epoch 2, step 2:")
        last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
        assert last["state"]["epoch"] == 1 and all(v.isfinite().all() for v in last["model"].values())
        assert best == [1]
    else:
        assert message.startswith("the validation outputs" if where == "val_image" else "the training loss is nan")
        assert best == [] and not (tmp_path / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("extra, mixed, smoothing", [([], None, 0.0), (["train.mixup=0.4"], "mixup", 0.0),
                                                     (["train.cutmix=1.0", "train.label_smoothing=0.1"], "cutmix", 0.1)])
def test_fit_applies_mixup_cutmix_and_label_smoothing_exactly_when_set(tmp_path, monkeypatch, extra, mixed, smoothing):
    calls, losses = [], []
    for name in ("mixup", "cutmix"):
        real = getattr(engine, name)
        monkeypatch.setattr(engine, name, lambda x, alpha, _n=name, _f=real: calls.append((_n, alpha)) or _f(x, alpha))
    real_step = engine.train_step
    monkeypatch.setattr(engine, "train_step", lambda model, x, y, criterion, *a, **k:
                        losses.append(criterion.label_smoothing) or real_step(model, x, y, criterion, *a, **k))
    engine.fit(Staged(), cases(8), cases(4), cfg("train.epochs=2", *extra), tmp_path, progress=False)
    alpha = {"mixup": 0.4, "cutmix": 1.0}.get(mixed)
    assert calls == ([] if mixed is None else [(mixed, alpha)] * 4)  # 2 epochs x 2 steps
    assert losses == [smoothing] * 4


def test_each_epochs_lr_is_the_rate_its_last_step_took(tmp_path):
    # 3 epochs of 2 steps, one-cycle from 0.01: warm-up to the peak at step 2, down to 0.01 / 25 / 1e4 at
    # step 6 (the rate after the last step would be the cosine's mirror, a rate no step takes)
    state = engine.fit(Staged(), cases(8), cases(4), cfg("train.epochs=3", "train.schedule=onecycle"), tmp_path,
                       progress=False)
    lrs = [row["lr"] for row in read_history(tmp_path / "metrics.csv")]
    assert lrs == [row["lr"] for row in state.history]
    assert lrs[0] == pytest.approx(0.01) and lrs[2] == pytest.approx(0.01 / 25 / 1e4) and lrs[0] > lrs[1] > lrs[2]


def test_resuming_a_one_cycle_run_over_other_steps_is_refused_in_one_line(tmp_path):
    from medtl.errors import MedtlError

    config = cfg("train.epochs=3", "train.schedule=onecycle")
    engine.fit(Staged(), cases(8), cases(4), config, tmp_path, max_epochs_this_run=1, progress=False)
    with pytest.raises(MedtlError, match=r"last.pt: the run's one-cycle schedule spans 6 steps, resumed with 9 \(3 "
                                         r"epochs of 3\); resume with the data and settings the run started with"):
        engine.fit(Staged(), cases(12), cases(4), config, tmp_path, resume=True, progress=False)
    state = engine.fit(Staged(), cases(8), cases(4), config, tmp_path, resume=True, progress=False)
    assert state.epoch == 3


class _Opens:
    """Unpickled unsafely, creates the file ``path``: what a hostile checkpoint would do with os.system."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_hostile_or_damaged_checkpoint_is_refused_in_one_line_without_running_it(tmp_path):
    """--resume on a checkpoint holding a Python object (or garbage) was an internal error quoting torch's
    advice to load it with weights_only=False, which runs whatever the file holds."""
    from medtl.errors import MedtlError

    marker = tmp_path / "pwned"
    torch.save({"model": _Opens(str(marker))}, tmp_path / "evil.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02garbage")
    torch.save({"model": {"x": torch.zeros(1)}}, tmp_path / "other.pt")
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for name, message in (("evil", r"it holds Python objects besides tensors, which medtl never unpickles"),
                          ("garbage", r"UnpicklingError: not a PyTorch or safetensors file"),
                          ("other", r"not a checkpoint of this run \(RuntimeError: Error\(s\) in loading")):
        with pytest.raises(MedtlError, match=rf"^{tmp_path / name}.pt: .*{message}") as err:
            engine.load_checkpoint(tmp_path / f"{name}.pt", model, opt, None, None)
        assert "weights_only" not in str(err.value)
    assert not marker.exists()
