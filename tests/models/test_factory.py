"""create(), the card, stages, freezing, parameter groups and saved-model round trips."""

from __future__ import annotations

import pytest
import torch

from medtl import models
from medtl.errors import ConfigError, MedtlError, WeightsError

from .conftest import ARCHS, fake, loaded


def test_registry_lists_the_five_architectures():
    assert models.list_models() == sorted(ARCHS)
    assert models.list_models("resnet*") == ["resnet18", "resnet34", "resnet50"]
    with pytest.raises(ValueError, match="resnet18"):
        models.create("resnet19")


@pytest.mark.parametrize("arch", ARCHS)
def test_stages_feature_layer_and_forward_features_agree(arch):
    m = models.create(arch, in_channels=2, num_classes=3).eval()
    names = [n for n, _ in m.stages]
    assert names[0] == "stem" and names[-1] == "head"
    # stages partition the parameters: each exactly once
    ids = [id(p) for _, s in m.stages for p in s.parameters()]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    seen = {}
    h = m.feature_layer.register_forward_hook(lambda mod, i, o: seen.setdefault("out", o.clone()))
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        fmap = m.forward_features(x)
        logits = m(x)
    h.remove()
    assert torch.equal(seen["out"], fmap) and fmap.shape[1] == m.num_features
    assert logits.shape == (1, 3)
    assert torch.allclose(m.pooled(x), fmap.mean(dim=(2, 3)))


def test_card_describes_weights_adaptation_and_preprocessing(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(fake("resnet18"), path)
    m = models.create("resnet18", weights=path, in_channels=1, spatial_dims=3, num_classes=2,
                      inflate={"mode": "central", "stem_depth": 3})
    c = m.card
    assert c["arch"] == "resnet18" and c["spatial_dims"] == 3 and c["in_channels"] == 1
    assert c["inflate"] == {"mode": "central", "stem_depth": 3, "pool_depth_early": True, "depth_padding": "zeros"}
    assert len(c["weights"]["sha256"]) == 64 and c["weights"]["format"] == "torchvision"
    assert c["normalization"]["mean"] == [pytest.approx(models.GRAY_MEAN)]
    assert c["input_adaptation"].startswith("gray-exact") and c["head"] == "new"
    five = models.create("resnet18", in_channels=5)
    assert five.card["normalization"]["mean"] == list(models.IMAGENET_MEAN) + list(models.IMAGENET_MEAN[:2])


def test_imagenet_head_kept_only_for_1000_classes():
    m = loaded("resnet18")
    assert m.card["head"] == "imagenet"
    assert torch.equal(m.head.weight, fake("resnet18")["fc.weight"])


def test_saved_model_round_trip_and_mismatch(tmp_path):
    m = loaded("resnet18", in_channels=1, spatial_dims=3, num_classes=2)
    p = tmp_path / "tuned.pth"
    torch.save(m.state_dict(), p)
    again = models.create("resnet18", weights=p, in_channels=1, spatial_dims=3, num_classes=2).eval()
    x = torch.rand(1, 1, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), again(x))
    assert again.card["weights"]["format"] == "medtl"
    assert again.card["head"] == "file"
    # a fine-tuned model started again on a task with other classes: all but the head, as timm does
    five = models.create("resnet18", weights=p, in_channels=1, spatial_dims=3, num_classes=5).eval()
    assert five.card["head"] == "new" and five.head.weight.shape == (5, 512)
    features = models.create("resnet18", weights=p, in_channels=1, spatial_dims=3, num_classes=None).eval()
    with torch.no_grad():
        assert torch.equal(five.pooled(x), m.pooled(x)) and torch.equal(features(x), m.pooled(x))
    with pytest.raises(WeightsError, match="in_channels") as exc:  # only the head may differ
        models.create("resnet18", weights=p, in_channels=3, spatial_dims=3, num_classes=5)
    assert str(exc.value).startswith(f"{p}: saved medtl weights do not fit")
    (tmp_path / "ensemble").mkdir()
    ensemble = tmp_path / "ensemble" / "model.pth"
    torch.save({f"members.{j}.{k}": v for j in range(2) for k, v in m.state_dict().items()}, ensemble)
    with pytest.raises(WeightsError) as exc:
        models.create("resnet18", weights=ensemble, in_channels=1, spatial_dims=3, num_classes=2)
    assert str(exc.value).startswith(f"{ensemble}: the weights of an ensemble of 2 models, not of one network")
    other = tmp_path / "resnet34.pth"
    torch.save(fake("resnet34"), other)
    with pytest.raises(WeightsError) as exc:
        models.create("resnet18", weights=other)
    assert str(exc.value).startswith(f"{other}: checkpoint does not match resnet18 (torchvision format)")
    with pytest.raises(WeightsError, match="not found"):
        models.create("resnet18", weights=tmp_path / "nope.pth")
    with pytest.raises(WeightsError) as exc:  # a run folder given for its model file
        models.create("resnet18", weights=tmp_path)
    assert str(exc.value).startswith(f"{tmp_path}: a folder, not a weights file: give the checkpoint file in it, "
                                     f"e.g. {tmp_path / 'resnet34.pth'}")


def test_freeze_until_and_unfreeze():
    m = models.create("resnet18", num_classes=2)
    models.freeze(m, until="layer3", train_bn=False)
    for name, stage in m.stages:
        trainable = {p.requires_grad for p in stage.parameters()}
        assert trainable == ({False} if name in ("stem", "layer1", "layer2", "layer3") else {True}), name
    models.freeze(m)  # everything but the head; BN stays trainable by default
    assert m.net.layer4[0].conv1.weight.requires_grad is False
    assert m.net.layer4[0].bn1.weight.requires_grad is True
    assert m.head.weight.requires_grad is True
    with pytest.raises(ValueError, match="layer4"):
        models.freeze(m, until="layer5")
    models.unfreeze(m)
    assert all(p.requires_grad for p in m.parameters())


def test_param_groups_discriminative_lr():
    m = models.create("densenet121", num_classes=2)
    groups = models.param_groups(m, lr=1e-3, decay=0.1)
    assert [g["name"] for g in groups] == ["stem", "block1", "block2", "block3", "block4", "head"]
    lrs = [g["lr"] for g in groups]
    assert lrs[-1] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-4)
    assert all(a < b for a, b in zip(lrs, lrs[1:]))
    models.freeze(m, until="block2", train_bn=False)
    assert [g["name"] for g in models.param_groups(m, 1e-3)] == ["block3", "block4", "head"]
    torch.optim.AdamW(models.param_groups(m, 1e-3))
    with pytest.raises(ValueError, match="lr must be positive, got -1"):
        models.param_groups(m, lr=-1)


def test_input_shape_errors_are_clear():
    m = models.create("resnet18", in_channels=1)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m(torch.rand(1, 3, 32, 32))


def test_an_input_below_the_networks_smallest_says_the_size_it_needs():
    m = models.create("efficientnet_lite0", in_channels=1, num_classes=2).train()
    with pytest.raises(ConfigError, match=r"efficientnet_lite0 cannot take a 28x28 input: it needs at least 32 "
                                          r"along every axis \(set preprocess.size to at least \[32, 32\]\)"):
        m(torch.rand(2, 1, 28, 28))
    assert m.training  # the search ran in eval mode and gave the mode back
    with pytest.raises(ConfigError, match="at least 32"):
        m(torch.rand(2, 1, 31, 40))
    assert m(torch.rand(2, 1, 32, 32)).shape == (2, 2)  # 32 is the smallest it takes, exactly
    assert models.create("resnet18", in_channels=1, num_classes=2)(torch.rand(2, 1, 28, 28)).shape == (2, 2)


def test_a_failure_that_is_not_about_size_is_raised_as_it_was(monkeypatch):
    m = models.create("efficientnet_lite0", in_channels=1, num_classes=2).eval()
    with pytest.raises(RuntimeError) as err:  # float64 input, float32 weights: no size helps
        m(torch.rand(1, 1, 28, 28, dtype=torch.float64))
    assert not isinstance(err.value, ConfigError)
    real = m._features_after_stem_conv  # a failure the same size at batch 1 does not have (e.g. a full memory)

    def fails_on_a_batch_of_4(x):
        if len(x) == 4:
            raise RuntimeError("something else")
        return real(x)

    monkeypatch.setattr(m, "_features_after_stem_conv", fails_on_a_batch_of_4)
    with pytest.raises(RuntimeError, match="something else"):
        m(torch.rand(4, 1, 64, 64))
    with pytest.raises(torch.OutOfMemoryError):  # never a search on a full device
        monkeypatch.setattr(m, "_features_after_stem_conv", lambda x: (_ for _ in ()).throw(torch.OutOfMemoryError()))
        m(torch.rand(2, 1, 64, 64))


def test_backward_through_3d_gray_model():
    m = loaded("resnet18", in_channels=1, spatial_dims=3, num_classes=2).train()
    out = m(torch.rand(2, 1, 8, 32, 32))
    out.sum().backward()
    assert m.net.conv1.weight.grad is not None and m.gray_offset.grad is None
    assert not m.gray_offset.requires_grad and m.gray_offset.abs().sum() > 0


@pytest.mark.parametrize("kwargs,names,choices", [
    ({"name": "resnet19"}, ["'resnet19'", "model.arch", "did you mean 'resnet18'"], ARCHS),
    ({"inflate": "foo"}, ["'foo'", "model.inflate"], ["i3d", "central", "acs", "2.5d"]),
    ({"inflate": "i3d", "stem_depth": 2}, ["stem_depth=2", "model.kwargs"], ["odd positive"]),
    ({"inflate": "i3d", "depth_padding": "edge"}, ["'edge'", "model.kwargs"], ["'zeros'", "'replicate'"]),
    ({"inflate": "i3d", "strides": 2}, ["strides", "model.kwargs"], ["stem_depth", "pool_depth_early", "depth_padding"]),
    ({"inflate": "2.5d", "pool": "median"}, ["'median'", "model.kwargs"], ["mean", "max", "attention"]),
    ({"inflate": "2.5d", "slice_channels": 2}, ["slice_channels=2", "model.kwargs"], ["odd positive"]),
    ({"inflate": "2.5d", "slices": 3}, ["slices", "model.kwargs"], ["slice_channels", "pool", "slice_stride"]),
    ({"spatial_dims": 2, "pool": "max"}, ["pool", "model.kwargs", "3D"], ["spatial_dims"]),
])
def test_user_errors_are_one_line_config_errors_with_the_choices(kwargs, names, choices):
    """What a config can get wrong in ``model:`` reaches the CLI as a ConfigError (exit 2), not a traceback."""
    kwargs = {"name": "resnet18", "weights": None, "spatial_dims": 3, **kwargs}
    with pytest.raises(ConfigError) as exc:
        models.create(kwargs.pop("name"), **kwargs)
    assert isinstance(exc.value, MedtlError) and isinstance(exc.value, ValueError)
    msg = str(exc.value)
    assert "\n" not in msg
    for text in names + list(choices):
        assert text in msg, (text, msg)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kwargs,use", [
    ({"in_chans": 1}, "in_channels="),
    ({"pretrained": True}, "weights='imagenet'"),
    ({"include_top": False}, "num_classes=None"),
    ({"classes": 2}, "num_classes="),
])
def test_timm_and_keras_argument_names_point_to_medtls(kwargs, use, spatial_dims):
    """A timm/Keras user's ``in_chans=1`` is named as such, not reported as a misplaced 3D option."""
    with pytest.raises(ConfigError) as exc:
        models.create("resnet18", spatial_dims=spatial_dims, **kwargs)
    msg = str(exc.value)
    assert f"no argument {next(iter(kwargs))!r}" in msg and f"use {use}" in msg and "3D" not in msg


@pytest.mark.parametrize("kwargs,match", [({"in_channels": 0}, "in_channels=0"), ({"in_channels": 1.5}, "in_channels"),
                                          ({"spatial_dims": 4}, "spatial_dims=4")])
def test_impossible_shapes_are_one_config_line(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        models.create("resnet18", **kwargs)


def test_drop_path_sets_stochastic_depth_or_says_the_architecture_has_none():
    from monai.networks.nets.efficientnet import MBConvBlock

    def rates(m: torch.nn.Module) -> list[float]:
        return [b.drop_connect_rate or 0.0 for b in m.modules() if isinstance(b, MBConvBlock)]

    m = models.create("efficientnet_lite0", num_classes=None, in_channels=1)
    default = rates(m)
    m.set_drop_path(0.2)
    assert rates(m) == pytest.approx(default)  # the constructor's rule, reproduced
    assert max(default) == pytest.approx(0.2 * 15 / 16)
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    m.train()
    m.set_drop_path(0.9)
    assert not torch.equal(m(x), m(x))  # whole residual branches dropped at random while training
    m.set_drop_path(0.0)
    assert torch.equal(m(x), m(x))  # no stochastic layer left in the trunk (head dropout: no head here)
    m.eval()
    m.set_drop_path(0.9)
    out = m(x)
    m.set_drop_path(0.0)
    assert torch.equal(out, m(x))  # evaluation never drops
    with pytest.raises(ConfigError, match="resnet18 has no stochastic depth"):
        models.create("resnet18", num_classes=2).set_drop_path(0.1)
    with pytest.raises(ConfigError, match="probability"):
        m.set_drop_path(1.0)


def test_a_misspelt_inflate_mode_is_refused_for_2d_too():
    """model.inflate is unused by a 2D network, but `model.inflate=centre` was kept silently, and refused only
    once the user switched to 3D."""
    with pytest.raises(ConfigError, match=r"unknown inflate mode 'centre' \(model.inflate\); choose one of"):
        models.create("resnet18", weights=None, num_classes=2, inflate="centre")
    for mode in ("i3d", "central", "2.5d", None):
        assert models.create("resnet18", weights=None, num_classes=2, inflate=mode).spatial_dims == 2


def test_reset_head_gives_a_fresh_head_or_pooled_features_like_timms_reset_classifier():
    net = models.create("resnet18", weights=None, in_channels=1, num_classes=2).eval()
    x = torch.randn(2, 1, 32, 32)
    features = net.pooled(x)
    net.reset_head(5)
    assert net(x).shape == (2, 5) and net.card["num_classes"] == 5 and net.card["head"] == "new"
    net.reset_head(None)
    assert net.card["head"] is None and net.card["num_classes"] is None
    torch.testing.assert_close(net(x), features)
