from pathlib import Path

import numpy as np
import pytest
import torch

import medtl.io
from medtl.config import AugmentConfig
from medtl.data import balanced_sampler, balanced_weights, build_dataset, class_weights, weighted_sampler
from medtl.io import save_nifti
from medtl.io.scan import Scan
from medtl.transforms import Preprocessing


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        path = tmp_path / f"s{i}.nii.gz"
        save_nifti(Scan(rng.random((6, 5, 1)).astype(np.float32), np.eye(4)), path)
        items.append({"image": str(path), "label": i % 2, "site": "A", "patient_id": None})
    return items


@pytest.fixture
def count_loads(monkeypatch):
    calls = []
    real = medtl.io.load_scan

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(medtl.io, "load_scan", counting)
    return calls


@pytest.mark.parametrize("augment", [None, AugmentConfig(rotate_deg=10, domain_shift="mild")])
def test_memory_cache_loads_each_file_once_over_epochs(files, count_loads, augment):
    tf = Preprocessing(size=[8, 8], normalize="zscore").transforms(augment)
    ds = build_dataset(files, tf, cache="memory", num_workers=1)
    for _ in range(2):
        batch = [ds[i] for i in range(len(ds))]
    assert sorted(count_loads) == sorted(it["image"] for it in files)
    assert set(batch[0]) == {"image", "label", "index"}  # strings/None columns are left out
    assert batch[0]["image"].shape == (1, 8, 8) and batch[3]["index"] == 3 and batch[3]["label"] == 1
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    assert next(iter(loader))["image"].shape == (2, 1, 8, 8)


def test_disk_cache_survives_a_new_dataset(files, count_loads, tmp_path):
    prep = Preprocessing(size=[8, 8], normalize="zscore")
    tf = prep.transforms(AugmentConfig(rotate_deg=10))
    ds = build_dataset(files, tf, cache="disk", cache_dir=tmp_path / "cache", cache_key=prep.fingerprint())
    first = [ds[i]["image"] for i in range(len(ds))]
    again = build_dataset(files, prep.transforms(AugmentConfig(rotate_deg=10)), cache="disk",
                          cache_dir=tmp_path / "cache", cache_key=prep.fingerprint())
    assert all(again[i]["image"].shape == (1, 8, 8) for i in range(len(again)))
    assert len(count_loads) == len(files)  # the second dataset read the disk cache
    assert (tmp_path / "cache" / prep.fingerprint()).is_dir()
    # an evaluation pipeline (normalised head) must not reuse the training head's files
    ev = build_dataset(files, prep.transforms(), cache="disk", cache_dir=tmp_path / "cache",
                       cache_key=prep.fingerprint())
    torch.testing.assert_close(ev[0]["image"], prep(files[0]["image"]))
    assert len(count_loads) == len(files) + 2
    with pytest.raises(ValueError, match="cache_dir"):
        build_dataset(files, tf, cache="disk")


def test_no_cache_loads_every_time(files, count_loads):
    ds = build_dataset(files, Preprocessing(size=[8, 8]).transforms(), cache="none")
    for _ in range(2):
        for i in range(len(ds)):
            ds[i]
    assert len(count_loads) == 2 * len(files)


def test_class_weights_and_balanced_sampler():
    items = [{"label": 0}] * 6 + [{"label": 1}] * 2
    w = class_weights(items, 3)
    torch.testing.assert_close(w, torch.tensor([8 / 12, 8 / 4, 0.0]))
    sampler = balanced_sampler(items, 3, num_samples=4000, seed=0)
    drawn = [items[i]["label"] for i in sampler]
    assert abs(sum(drawn) / len(drawn) - 0.5) < 0.05
    assert list(balanced_sampler(items, 3, seed=1)) == list(balanced_sampler(items, 3, seed=1))
    with pytest.raises(ValueError):
        class_weights([{"label": 3}], 2)


def test_balanced_weights_are_what_the_sampler_and_training_draw_with():
    items = [{"label": 0}] * 6 + [{"label": 1}] * 2
    np.testing.assert_array_equal(balanced_weights(items, 2), [1 / 6] * 6 + [1 / 2] * 2)
    sampler = balanced_sampler(items, 2, seed=3)
    assert sampler.num_samples == len(items) and sampler.replacement
    torch.testing.assert_close(sampler.weights, torch.as_tensor(balanced_weights(items, 2), dtype=torch.double))
    # the same draws from an equally seeded generator: training reseeds its own per epoch
    same = weighted_sampler(balanced_weights(items, 2), torch.Generator().manual_seed(3))
    assert list(same) == list(balanced_sampler(items, 2, seed=3))
    with pytest.raises(ValueError, match="outside"):
        balanced_weights([{"label": 2}], 2)


def test_a_damaged_image_stops_the_cache_with_its_error_and_no_thread_left_decoding(files, tmp_path):
    """The caching pool was terminated without joining its threads: the process aborted at exit (134)."""
    import threading
    from multiprocessing import pool

    from medtl.errors import ScanError

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(open(files[0]["image"], "rb").read()[:40])
    items = [dict(files[0], image=str(bad))] + files * 8
    with pytest.raises(ScanError, match="bad.nii.gz"):
        build_dataset(items, Preprocessing(spatial_dims=2, size=(8, 8), window="auto").transforms(),
                      cache="memory", num_workers=2)
    assert not [t for t in threading.enumerate() if getattr(t, "_target", None) is pool.worker and t.is_alive()]


@pytest.mark.parametrize("cut", [0, 100])
def test_disk_cache_computes_a_cut_off_file_again(files, count_loads, tmp_path, cut):
    """A file a full disk or a kill cut short (MONAI's own copy from /tmp left them) is not a result."""
    tf = Preprocessing(size=[8, 8], normalize="zscore").transforms()
    ds = build_dataset(files[:1], tf, cache="disk", cache_dir=tmp_path / "cache")
    good = ds[0]["image"]
    (cached,) = (tmp_path / "cache").glob("*.pt")
    cached.write_bytes(cached.read_bytes()[:cut])
    again = build_dataset(files[:1], tf, cache="disk", cache_dir=tmp_path / "cache")
    torch.testing.assert_close(again[0]["image"], good)
    assert len(count_loads) == 2
    torch.testing.assert_close(torch.load(cached, weights_only=True)["image"], good)


def test_disk_cache_write_on_a_full_disk_leaves_no_file_under_the_cache_name(files, tmp_path, monkeypatch):
    import errno

    from medtl.data import datasets

    def half_then_full(obj, f, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 cut")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.torch, "save", half_then_full)
    ds = build_dataset(files[:1], Preprocessing(size=[8, 8]).transforms(), cache="disk", cache_dir=tmp_path / "cache")
    with pytest.raises(OSError) as info:
        ds[0]
    assert info.value.errno == errno.ENOSPC and info.value.filename.endswith(".pt")
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_disk_cache_of_decoded_scans_is_readable_by_its_user_only(files, tmp_path):
    """The cache holds every training image, decoded: with data.cache_dir=/tmp/x under the usual umask any local
    user could read them. A folder medtl creates is private; one that exists keeps its permissions."""
    import stat

    prep = Preprocessing(size=[8, 8], normalize="zscore")
    build_dataset(files, prep.transforms(AugmentConfig()), cache="disk", cache_dir=tmp_path / "new" / "cache",
                  cache_key=prep.fingerprint())
    assert stat.S_IMODE((tmp_path / "new" / "cache").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "cache" / prep.fingerprint()).stat().st_mode) == 0o700
    (tmp_path / "shared").mkdir(mode=0o750)
    build_dataset(files, prep.transforms(AugmentConfig()), cache="disk", cache_dir=tmp_path / "shared")
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o750
