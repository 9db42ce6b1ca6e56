import numpy as np
import pytest
import torch
from skimage import io as skio

from medtl.config import AugmentConfig, PreprocessConfig
from medtl.errors import ConfigError, ScanError
from medtl.io import load_scan, save_nifti
from medtl.io.scan import Scan
from medtl.transforms import Preprocessing


def _raw(**kw):
    return Preprocessing(size=[], window="none", normalize="none", **kw)


def test_natural_png_reaches_the_network_untransposed(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, size=(12, 20), dtype=np.uint8)  # rows x cols
    skio.imsave(tmp_path / "a.png", img, check_contrast=False)
    out = _raw()(load_scan(tmp_path / "a.png"))
    assert isinstance(out, torch.Tensor) and not hasattr(out, "meta")
    assert out.dtype == torch.float32 and out.shape == (1, 12, 20)
    assert torch.equal(out[0], torch.from_numpy(img).float())
    assert torch.equal(_raw()(tmp_path / "a.png"), out)  # a path gives the same


def test_rgb_png_stays_rgb_with_3_channels_and_becomes_luminance_with_1(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, size=(6, 9, 3), dtype=np.uint8)
    skio.imsave(tmp_path / "c.png", rgb, check_contrast=False)
    out3 = _raw(channels=3)(tmp_path / "c.png")
    assert torch.equal(out3, torch.from_numpy(rgb).permute(2, 0, 1).float())
    out1 = _raw(channels=1)(tmp_path / "c.png")
    lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(out1[0].numpy(), lum, rtol=1e-6)
    gray3 = _raw(channels=3)(rgb[..., 0])  # gray repeated for an RGB network
    assert gray3.shape == (3, 6, 9) and torch.equal(gray3[0], gray3[2])


def test_3d_array_gives_back_the_raw_volume():
    vol = np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32)  # (D, H, W)
    out = _raw(spatial_dims=3)(vol)
    assert out.shape == (1, 5, 6, 7)
    assert torch.equal(out[0], torch.from_numpy(vol))


def test_3d_volume_is_reoriented_to_ras(tmp_path):
    vol = np.random.default_rng(3).normal(size=(4, 5, 6)).astype(np.float32)  # [i, j, k]
    las = Scan(vol, np.diag([-1.0, 1.0, 1.0, 1.0]))
    save_nifti(las, tmp_path / "v.nii.gz")
    out = _raw(spatial_dims=3)(tmp_path / "v.nii.gz")
    # RAS flips i (W, the last network axis); network layout is (k, j, i)
    assert torch.equal(out[0], torch.from_numpy(vol[::-1].transpose(2, 1, 0).copy()))
    kept = _raw(spatial_dims=3, orientation=None)(tmp_path / "v.nii.gz")
    assert torch.equal(kept[0], torch.from_numpy(vol.transpose(2, 1, 0).copy()))


def test_spacing_and_resize():
    scan = Scan(np.ones((4, 6, 3), np.float32), np.diag([2.0, 1.0, 3.0, 1.0]))
    out = _raw(spatial_dims=3, spacing=[1.0])(scan)
    assert out.shape[1:] == (7, 6, 7)  # k: 3 slices at 3 mm -> 7 at 1 mm; i: 4 at 2 mm -> 7
    out = Preprocessing(spatial_dims=3, size=[8, 9, 10], normalize="none")(scan)
    assert out.shape == (1, 8, 9, 10)
    out = Preprocessing(size=[32], normalize="none")(np.zeros((10, 20), np.uint8))
    assert out.shape == (1, 32, 32)


def test_2d_3d_mismatch_names_the_file(tmp_path):
    save_nifti(Scan(np.zeros((4, 5, 6), np.float32), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(ScanError, match=r"vol\.nii\.gz.*2D model"):
        Preprocessing(size=[8, 8])(tmp_path / "vol.nii.gz")
    skio.imsave(tmp_path / "img.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    with pytest.raises(ScanError, match=r"img\.png.*3D model"):
        Preprocessing(spatial_dims=3, size=[8, 8, 8])(tmp_path / "img.png")
    with pytest.raises(ScanError, match="missing.png"):  # loader errors come through unwrapped too
        Preprocessing()(tmp_path / "missing.png")


@pytest.mark.parametrize("dims,normalize", [(2, "zscore"), (2, "none"), (3, "zscore")])
def test_dict_round_trip_gives_bit_identical_tensors(dims, normalize):
    cfg = PreprocessConfig(spatial_dims=dims, size=[9] * dims, window="percentile", percentiles=(1, 99),
                           normalize=normalize, spacing=[0.7] if dims == 3 else None)
    prep = Preprocessing.from_config(cfg)
    stored = prep.to_dict()
    assert stored["version"] == 1
    again = Preprocessing.from_dict(stored)
    assert again == prep and again.fingerprint() == prep.fingerprint()
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4000, size=(5,) * dims).astype(np.uint16)
    train_eval = prep.transforms(None)({"image": x, "label": 1})
    assert train_eval["label"] == 1
    predicted = again(x)
    assert predicted.shape == (1,) + (9,) * dims
    assert torch.equal(train_eval["image"], predicted)
    assert torch.equal(prep(x), predicted) and again == prep
    again.window = "none"  # settings changed after use: the next call follows them
    assert not torch.equal(again(x), predicted)


def test_imagenet_normalisation_is_the_models_function():
    from medtl.models import imagenet_normalize

    img = np.random.default_rng(5).integers(0, 255, size=(8, 8), dtype=np.uint8)
    base = Preprocessing(size=[], normalize="none")(img)
    for channels in (1, 3):
        out = Preprocessing(size=[], normalize="imagenet", channels=channels)(img)
        expected = imagenet_normalize(base.repeat(channels, 1, 1)[None])[0]
        assert torch.equal(out, expected)


def test_invalid_settings_are_config_errors():
    with pytest.raises(ConfigError, match="2.5D"):
        Preprocessing.from_config(PreprocessConfig(channels=2))
    with pytest.raises(ConfigError, match="size"):
        Preprocessing.from_dict({"spatial_dims": 3, "size": [8, 8]})
    with pytest.raises(ConfigError, match="newer"):
        Preprocessing.from_dict({"version": 99})


def test_augmented_pipeline_keeps_deterministic_part_first():
    from monai.transforms import RandomizableTrait

    tf = Preprocessing(size=[16]).transforms(AugmentConfig(rotate_deg=5, domain_shift="mild"))
    first = tf.get_index_of_first(lambda t: isinstance(t, RandomizableTrait))
    assert first is not None
    assert all(not isinstance(t, RandomizableTrait) for t in tf.transforms[:first])
    names = [type(t).__name__ for t in tf.transforms[:first]]
    assert names[0] == "LoadScand" and "Resized" in names and "ToNetworkLayoutd" in names


def test_resampling_that_would_exceed_the_voxel_limit_is_refused_before_allocating(tmp_path):
    # 32 voxels claiming 5000 mm slices: 4 x 4 x 5,001 voxels at 1 mm (a 512 x 512 file: 5 GB)
    import nibabel as nib

    from medtl.io import limits

    path = tmp_path / "thick.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.diag([1.0, 1.0, 5000.0, 1.0])), path)
    prep = Preprocessing(spatial_dims=3, size=[], spacing=[1.0], window="none", normalize="none")
    with limits.override(max_voxels=80_016):
        assert prep(path).shape == (1, 5001, 4, 4)
    with limits.override(max_voxels=80_015), pytest.raises(ScanError) as exc:
        prep(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"{path}: resampling its 1x1x5000 mm voxels to 1x1x1 mm")
    assert "80,016 voxels, over the limit of 80,015 (MEDTL_MAX_VOXELS)" in msg and "preprocess.spacing" in msg
