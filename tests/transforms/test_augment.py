import copy

import numpy as np
import pytest
import torch
from monai.transforms import Compose

import medtl.transforms.augment as aug
from medtl.config import AugmentConfig
from medtl.transforms import DOMAIN_SHIFT, Preprocessing, augmentations


def _image(dims: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (12,) * dims
    x = np.zeros(shape, np.float32)
    x[(slice(3, 9),) * dims] = 0.7
    return x + 0.2 * rng.random(shape).astype(np.float32)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("strength", ["mild", "strong"])
@pytest.mark.parametrize("modality", [None, "MR"])
def test_domain_shift_presets_change_the_image_and_keep_shape_and_range(dims, strength, modality):
    prep = Preprocessing(spatial_dims=dims, size=[12] * dims, window="0.5/1", normalize="none")
    x = _image(dims)
    clean = prep(x)
    tf = prep.transforms(AugmentConfig(flip=False, domain_shift=strength), modality=modality)
    tf.set_random_state(1)
    outs = [tf({"image": x})["image"] for _ in range(20)]
    assert all(o.shape == clean.shape for o in outs)
    assert all(float(o.min()) >= 0 and float(o.max()) <= 1 for o in outs)
    # each image gets any change with probability ~0.8 (mild) / ~0.93 (strong)
    assert sum(not torch.equal(o, clean) for o in outs) >= 12


@pytest.mark.parametrize("dims", [2, 3])
def test_every_domain_shift_transform_runs_in_2d_and_3d(dims, monkeypatch):
    forced = copy.deepcopy(DOMAIN_SHIFT)
    for params in forced["strong"].values():
        params["prob"] = 1.0
    monkeypatch.setattr(aug, "DOMAIN_SHIFT", forced)
    x = torch.from_numpy(_image(dims))[None]
    transforms = aug.domain_shift_augmentations("strong", dims, modality="MR")
    assert {type(t).__name__ for t in transforms} >= {"RandBiasFieldd", "RandRicianNoised", "RandKSpaceSpikeNoised",
                                                      "RandSimulateLowResolutiond", "RandGibbsNoised"}
    for t in transforms:
        t.set_random_state(0)
        out = t({"image": x})["image"]
        assert out.shape == x.shape and torch.isfinite(torch.as_tensor(out)).all(), type(t).__name__
        assert not torch.equal(torch.as_tensor(out), x), type(t).__name__


def test_default_flip_is_left_right_only():
    x = torch.arange(12.0).reshape(1, 3, 4)
    t = Compose(augmentations(AugmentConfig(flip=True), 2))
    t.set_random_state(0)
    seen = set()
    for _ in range(20):
        out = torch.as_tensor(t({"image": x})["image"])
        if torch.equal(out, x):
            seen.add("same")
        else:
            assert torch.equal(out, x.flip(-1))
            seen.add("lr")
    assert seen == {"same", "lr"}
    with pytest.raises(ValueError, match="augment.flip_axes: axis 2 does not exist"):
        augmentations(AugmentConfig(flip_axes=[2]), 2)


def test_3d_rotation_stays_within_slices():
    v = torch.zeros(1, 4, 16, 16)
    for d in range(4):
        v[0, d, 4:12, 2:14] = 1.0 / (d + 1)
    t = Compose(augmentations(AugmentConfig(flip=False, rotate_deg=30), 3))
    t.set_random_state(3)
    out = torch.as_tensor(t({"image": v})["image"])
    assert not torch.equal(out, v)
    for d in range(4):  # slice d only holds (interpolated) values of slice d: a multiple of 1/(d+1)
        assert float(out[0, d].max()) <= 1.0 / (d + 1) + 1e-6
        assert float(out[0, d].max()) > 0.9 / (d + 1)


def test_zoom_shift_elastic_keep_shape():
    for dims in (2, 3):
        cfg = AugmentConfig(rotate_deg=10, zoom=(0.9, 1.1), shift=0.1, elastic=True)
        t = Compose(augmentations(cfg, dims, size=[12] * dims))
        t.set_random_state(0)
        x = torch.from_numpy(_image(dims))[None]
        assert t({"image": x})["image"].shape == x.shape
    with pytest.raises(ValueError, match="size"):
        augmentations(AugmentConfig(shift=0.1), 2)


def test_same_seed_same_augmentation_and_reseeding_repeats():
    prep = Preprocessing(size=[12, 12], normalize="zscore")
    cfg = AugmentConfig(rotate_deg=15, zoom=(0.8, 1.2), shift=0.1, domain_shift="strong")
    x = (_image(2) * 255).astype(np.uint8)
    a, b = prep.transforms(cfg), prep.transforms(cfg)
    a.set_random_state(7)
    b.set_random_state(7)
    run_a = [a({"image": x})["image"] for _ in range(3)]
    run_b = [b({"image": x})["image"] for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(run_a, run_b))
    assert not torch.equal(run_a[0], run_a[1])
    a.set_random_state(7)
    assert all(torch.equal(p, a({"image": x})["image"]) for p in run_a)
    a.set_random_state(8)
    assert not torch.equal(run_a[0], a({"image": x})["image"])


def test_meta_free_tail_gives_the_same_numbers_and_restores_track_meta():
    import threading

    from monai.data import get_track_meta

    prep = Preprocessing(size=[12, 12], normalize="zscore")
    cfg = AugmentConfig(rotate_deg=15, zoom=(0.8, 1.2), domain_shift="strong")
    x = (_image(2) * 255).astype(np.uint8)
    tf = prep.transforms(cfg)
    tf.set_random_state(5)
    main = [tf({"image": x})["image"] for _ in range(3)]
    assert get_track_meta() is True
    in_thread = []

    def run():  # outside the main thread the global flag is never touched
        tf.set_random_state(5)
        in_thread.extend(tf({"image": x})["image"] for _ in range(3))

    th = threading.Thread(target=run)
    th.start()
    th.join()
    assert all(torch.equal(a, b) for a, b in zip(main, in_thread))


def _bias_peaks(dims: int, draws: int = 40) -> list[float]:
    """Peak gain of the strong preset's bias field on a constant image, over ``draws`` seeds."""
    field = aug.domain_shift_augmentations("strong", dims)[0]
    assert type(field).__name__ == "RandBiasFieldd"
    field.prob = 1.0
    peaks = []
    for seed in range(draws):
        field.set_random_state(seed)
        out = field({"image": torch.ones((1,) + (16,) * dims)})["image"]
        peaks.append(float(torch.as_tensor(out).max()))
    return peaks


def test_a_volume_is_shaded_no_more_strongly_than_an_image():
    # a degree-3 polynomial has 20 terms in 3D against 10 in 2D: the same coefficients then gave volumes
    # a median peak gain of about 20x, where an image gets about 4.5x
    assert np.median(_bias_peaks(3)) <= 1.1 * np.median(_bias_peaks(2))
