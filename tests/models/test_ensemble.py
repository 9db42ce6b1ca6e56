"""The deep ensemble module: one model's interface over several networks, probabilities averaged."""

import pytest
import torch

from medtl.guard.ood import features_and_logits
from medtl.models import create
from medtl.models.ensemble import Ensemble


def _members(n=2, classes=3):
    torch.manual_seed(0)
    return [create("resnet18", weights=None, in_channels=1, num_classes=classes).eval() for _ in range(n)]


def test_softmax_of_the_output_is_the_members_mean_probability():
    members = _members(3)
    ens = Ensemble(members).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        expected = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        got = ens(x).softmax(1)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_the_guard_sees_every_member_and_the_same_output():
    members = _members()
    ens = Ensemble(members).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        f, logits = features_and_logits(ens, x)
        torch.testing.assert_close(f, torch.cat([m.pooled(x) for m in members], 1))
        torch.testing.assert_close(logits, ens(x))
    assert f.shape == (2, sum(m.num_features for m in members))


def test_state_dict_round_trips_through_a_fresh_ensemble():
    ens = Ensemble(_members())
    fresh = Ensemble([create("resnet18", weights=None, in_channels=1, num_classes=3) for _ in range(2)])
    fresh.load_state_dict(ens.state_dict())
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), ens.eval()(x))
    assert all(k.startswith("members.") for k in ens.state_dict())  # no tensor saved twice (safetensors refuses)


def test_refuses_one_member_and_mismatched_heads():
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble(_members(1))
    with pytest.raises(ValueError, match="head size"):
        Ensemble([*_members(1, classes=2), *_members(1, classes=3)])
