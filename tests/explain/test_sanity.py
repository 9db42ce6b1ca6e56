"""Saliency sanity checks on synthetic data with a known lesion (issue #5, part 2).

(a) Pointing game: a model trained where only a bright blob decides the label
    must put its saliency peak inside the blob (``hits`` in conftest: argmax
    within BLOB_RADIUS = 3 px + 1 px of the blob centre) in >= 90 % of unseen
    positive images, 2D (32 px) and 3D (16^3).
(b) Model randomisation (Adebayo et al., "Sanity Checks for Saliency Maps",
    NeurIPS 2018): re-initialising every weight must change the map. Measure:
    Spearman rank correlation between the trained and the randomised model's
    map, per image, averaged over the positives and over five re-initialisations
    (one re-initialisation alone is noisy: single seeds gave 0.02-0.6 in 3D).
    Bound: mean < 0.5. A constant randomised map (Grad-CAM's ReLU can zero it)
    ranks nothing and counts as 0. Control: a model whose weights are only
    jittered (1e-3 relative) must keep rho > 0.9, so the measure can see similarity.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from medtl.explain import DEFAULT_METHOD, saliency

from .conftest import BlobSet, accuracy, hits, make_blobs

POINTING_RATE = 0.9
RANDOMISATION_BOUND = 0.5
RESEEDS = (0, 1, 2, 3, 4)


def _maps(model, data: BlobSet, method: str, **opts) -> list[np.ndarray]:
    return [saliency(model, x, method, target=1, **opts) for x in data.x]


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def blob_model(request, blob_model_2d, blob_model_3d):
    return blob_model_2d if request.param == 2 else blob_model_3d


def test_models_learnt_the_task(blob_model_2d, blob_model_3d):
    """Precondition of the pointing game: the tiny models classify unseen blob images."""
    for (model, _), dims, size in ((blob_model_2d, 2, 32), (blob_model_3d, 3, 16)):
        assert accuracy(model, make_blobs(64, size, dims, seed=5)) >= 0.95


@pytest.mark.parametrize("method", list(dict.fromkeys(["gradcam", "gradcam++", DEFAULT_METHOD])))
def test_pointing_game_cam(blob_model, method):
    model, pos = blob_model
    rate = hits(_maps(model, pos, method), pos.centers).mean()
    assert rate >= POINTING_RATE, f"{method}: peak inside the blob in {rate:.0%} of positives"


def test_pointing_game_occlusion_2d(blob_model_2d):
    model, pos = blob_model_2d
    some = BlobSet(pos.x[:16], pos.y[:16], pos.centers[:16])
    rate = hits(_maps(model, some, "occlusion"), some.centers).mean()  # defaults: 4 px mask, overlap 0.5
    assert rate >= POINTING_RATE, f"occlusion: peak inside the blob in {rate:.0%} of positives"


def test_occlusion_3d_runs_with_defaults(blob_model_3d):
    model, pos = blob_model_3d
    m = saliency(model, pos.x[0], "occlusion")
    assert m.shape == (16, 16, 16) and m.dtype == np.float32 and m.max() == 1.0


def _reinitialised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every layer back to its random initialisation ("full" randomisation), seeded."""
    out = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in out.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return out


def _jittered(model: torch.nn.Module, scale: float = 1e-3) -> torch.nn.Module:
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=gen))
    return out


def _rank_correlation(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    rhos = []
    for u, v in zip(a, b):
        constant = np.ptp(u) == 0 or np.ptp(v) == 0
        rhos.append(0.0 if constant else float(spearmanr(u.ravel(), v.ravel())[0]))
    return float(np.mean(rhos))


@pytest.mark.parametrize("method", list(dict.fromkeys(["gradcam", "gradcam++", DEFAULT_METHOD])))
def test_randomised_model_gives_different_maps(blob_model, method):
    model, pos = blob_model
    trained = _maps(model, pos, method)
    rho = np.mean([_rank_correlation(trained, _maps(_reinitialised(model, s), pos, method)) for s in RESEEDS])
    assert rho < RANDOMISATION_BOUND, f"{method}: mean rank correlation with randomised models {rho:.2f}"
    assert _rank_correlation(trained, _maps(_jittered(model), pos, method)) > 0.9
