import numpy as np
import pytest
from skimage import io as skio

from medtl.config import DataConfig
from medtl.data import load_folder, load_items, load_manifest, load_medmnist
from medtl.errors import ConfigError


def _png(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(path, np.full((4, 4), value, np.uint8), check_contrast=False)


def _manifest(tmp_path, rows, header="path,label,split,patient_id,site"):
    csv = tmp_path / "meta" / "cohort.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    return csv


def test_manifest_relative_paths_string_labels_and_extra_columns(tmp_path):
    _png(tmp_path / "meta" / "img" / "a.png")
    _png(tmp_path / "b.png")
    csv = _manifest(tmp_path, ["img/a.png,pneumonia,train,p1,A", "../b.png,normal,Validation,,B"])
    c = load_manifest(csv)
    assert c.class_names == ["normal", "pneumonia"]
    a, b = c.items
    assert a["image"] == str(tmp_path / "meta" / "img" / "a.png") and a["label"] == 1 and a["split"] == "train"
    assert a["patient_id"] == "p1" and a["site"] == "A"
    assert b["label"] == 0 and b["split"] == "val" and "patient_id" not in b
    c = load_manifest(csv, class_names=["pneumonia", "normal"])
    assert [it["label"] for it in c.items] == [0, 1]


def test_item_paths_are_absolute_whichever_folder_the_cohort_is_read_from(tmp_path, monkeypatch):
    """A relative ``data.path`` gave items paths relative to the working folder, which a run's
    ``predictions_test.csv`` wrote as they were: its image column then named no file from anywhere else, and
    the same run from another folder wrote another file."""
    _png(tmp_path / "meta" / "img" / "a.png")
    _png(tmp_path / "b.png")
    _manifest(tmp_path, ["img/a.png,pneumonia,train,p1,A", "../b.png,normal,val,,B"])
    for cls in ("normal", "tumour"):
        _png(tmp_path / "flat" / cls / "0.png")
    expected = {"meta/cohort.csv": [str(tmp_path / "meta" / "img" / "a.png"), str(tmp_path / "b.png")],
                "flat": [str(tmp_path / "flat" / "normal" / "0.png"), str(tmp_path / "flat" / "tumour" / "0.png")]}
    for cwd, prefix in ((tmp_path, ""), (tmp_path / "meta", "../"), (tmp_path / "flat" / "normal", "../../")):
        monkeypatch.chdir(cwd)
        for path, images in expected.items():
            cohort = load_items(DataConfig(path=prefix + path, val_fraction=0, test_fraction=0))
            assert [it["image"] for it in cohort.items] == images, (cwd, path)


def test_manifest_integer_labels_and_errors(tmp_path):
    _png(tmp_path / "meta" / "a.png")
    csv = _manifest(tmp_path, ["a.png,2", "a.png,0"], header="path,label")
    c = load_manifest(csv)
    assert c.class_names == ["0", "1", "2"] and [it["label"] for it in c.items] == [2, 0]
    assert "split" not in c.items[0]
    with pytest.raises(ConfigError, match="missing.png"):
        load_manifest(_manifest(tmp_path, ["missing.png,0"], header="path,label"))
    with pytest.raises(ConfigError, match="'label' column"):
        load_manifest(_manifest(tmp_path, ["a.png"], header="path"))
    with pytest.raises(ConfigError, match="empty split"):
        load_manifest(_manifest(tmp_path, ["a.png,0,train", "a.png,1,"], header="path,label,split"))
    with pytest.raises(ConfigError, match="not in class_names"):
        load_manifest(_manifest(tmp_path, ["a.png,cat"], header="path,label"), class_names=["dog"])


def test_a_manifest_that_is_not_utf8_is_a_config_error(tmp_path):
    """A Latin-1 export raised a bare UnicodeDecodeError from deep inside the csv reader."""
    _png(tmp_path / "meta" / "a.png")
    csv = tmp_path / "meta" / "cohort.csv"
    csv.write_bytes("path,label\na.png,b\xe9nin\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"cohort.csv: not UTF-8 text \(save the manifest as CSV UTF-8\)$"):
        load_manifest(csv)


@pytest.mark.parametrize("text, message", [
    ("path,label\na.png,0\x00\nb.png,1\n", r"the row from line 2: a NUL character: binary data, not text"),
    ('path,label\n"a.png,0\nb.png,1\n', r"the row from line 2: a quote \(\"\) opened and never closed"),
    ("path,label\n" + "x" * (1 << 20) + ",0\n", r"the row from line 2: a line over 1,048,576 characters"),
])
def test_a_manifest_with_nul_an_open_quote_or_a_huge_line_is_refused_in_one_line(tmp_path, text, message):
    """A NUL in a label trained a class named '0\\x00'; an unclosed quote swallowed the rest of the file and
    was reported as a row without a label; a 2 GB line was read whole into memory (MemoryError)."""
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ConfigError, match=r"m.csv: not a readable CSV \(" + message + r"; columns path,label"):
        load_manifest(tmp_path / "m.csv", check_files=False)


def test_an_empty_cohort_folder_path_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch):
    _png(tmp_path / "cat" / "a.png")
    _png(tmp_path / "dog" / "b.png")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^the cohort folder path is empty \(give a folder with one sub-folder"):
        load_folder("")


def test_folder_per_class_and_split_folders(tmp_path):
    for cls, n in (("normal", 2), ("tumour", 3)):
        for i in range(n):
            _png(tmp_path / "flat" / cls / f"{i}.png")
    (tmp_path / "flat" / "tumour" / ".DS_Store").write_text("x")
    (tmp_path / "flat" / "tumour" / "series9").mkdir()  # a DICOM series folder is one item
    c = load_folder(tmp_path / "flat")
    assert c.class_names == ["normal", "tumour"]
    assert [it["label"] for it in c.items] == [0, 0, 1, 1, 1, 1]
    assert c.items[-1]["image"].endswith("series9") and "split" not in c.items[0]
    _png(tmp_path / "split" / "train" / "b" / "0.png")
    _png(tmp_path / "split" / "test" / "a" / "0.png")
    c = load_folder(tmp_path / "split")
    assert c.class_names == ["a", "b"]
    assert sorted((it["split"], it["label"]) for it in c.items) == [("test", 0), ("train", 1)]


def _npz(path, shape, n=(6, 2, 3), labels2d=True):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(k,) + shape, dtype=np.uint8)
        lab = np.arange(k) % 2
        arrays[f"{split}_labels"] = lab[:, None] if labels2d else lab
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 3), (5, 6, 7)])
def test_medmnist_npz(tmp_path, shape):
    arrays = _npz(tmp_path / "pneumoniamnist.npz", shape)
    c = load_medmnist(tmp_path / "pneumoniamnist.npz")
    assert c.class_names == ["normal", "pneumonia"] and c.format == "medmnist"
    assert [len(c.split(s)) for s in ("train", "val", "test")] == [6, 2, 3]
    it = c.split("val")[1]
    assert it["label"] == 1 and isinstance(it["label"], int)
    np.testing.assert_array_equal(it["image"], arrays["val_images"][1])
    assert load_medmnist(tmp_path / "pneumoniamnist.npz", class_names=["x", "y"]).class_names == ["x", "y"]


def test_a_cohorts_fingerprint_follows_its_images_labels_and_splits_not_where_it_lies(tmp_path):
    """The model card records which images a run drew on, labelled and split how, so that a rerun can be
    checked against it; a cohort moved whole keeps its fingerprint."""
    import shutil

    rows = ["img/a.png,pneumonia,train,p1,A", "img/b.png,normal,val,p2,B", "img/c.png,normal,train,p3,A"]
    for name in "abc":
        _png(tmp_path / "meta" / "img" / f"{name}.png")
    fp = load_manifest(_manifest(tmp_path, rows)).fingerprint()
    assert fp.startswith("sha256:") and len(fp) == 7 + 64
    shutil.copytree(tmp_path / "meta", tmp_path / "moved" / "meta")
    assert load_manifest(tmp_path / "moved" / "meta" / "cohort.csv").fingerprint() == fp
    changed = [
        [rows[0], rows[1], "img/c.png,pneumonia,train,p3,A"],  # a label
        [rows[0], rows[1], "img/c.png,normal,test,p3,A"],  # a split
        [rows[0], rows[2], rows[1]],  # the order, which the split and subsample follow
    ]
    assert len({fp, *(load_manifest(_manifest(tmp_path, r)).fingerprint() for r in changed)}) == 4
    assert load_manifest(_manifest(tmp_path, rows)).fingerprint() == fp
    for cls in ("normal", "tumour"):
        _png(tmp_path / "flat" / cls / "0.png")
    folder = load_folder(tmp_path / "flat").fingerprint()
    shutil.copytree(tmp_path / "flat", tmp_path / "moved" / "flat")
    assert load_folder(tmp_path / "moved" / "flat").fingerprint() == folder != fp
    arrays = _npz(tmp_path / "pneumoniamnist.npz", (8, 8))
    npz = load_medmnist(tmp_path / "pneumoniamnist.npz").fingerprint()
    arrays["test_images"][2, 3, 4] ^= 1  # one pixel
    np.savez(tmp_path / "other.npz", **arrays)
    assert load_medmnist(tmp_path / "other.npz", class_names=["normal", "pneumonia"]).fingerprint() != npz


def test_medmnist_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"pip install medmnist.*pneumoniamnist.*size=64"):
        load_items(DataConfig(path=str(tmp_path / "pneumoniamnist_64.npz")))
    with pytest.raises(ConfigError) as err:  # not a MedMNIST name: no recipe downloading a dataset 'cohort'
        load_items(DataConfig(path=str(tmp_path / "cohort.npz")))
    assert str(err.value) == f"{tmp_path / 'cohort.npz'}: .npz file not found (relative paths start from the current folder)"
    np.savez(tmp_path / "chest.npz", train_images=np.zeros((2, 4, 4)), train_labels=np.zeros((2, 14)))
    with pytest.raises(ConfigError, match="multi-label"):
        load_medmnist(tmp_path / "chest.npz")
    bad = np.zeros((2, 4, 4), np.float32)
    bad[1, 2, 3] = np.nan
    np.savez(tmp_path / "float.npz", train_images=bad, train_labels=np.array([0, 1]))
    with pytest.raises(ConfigError) as err:  # named here: the array alone could only say "in-memory array"
        load_medmnist(tmp_path / "float.npz")
    assert str(err.value).startswith(f"{tmp_path / 'float.npz'}: 1 of 32 values of train_images are not finite")


def _hostile_npz(path, key, value=None, header=None):
    """A small valid MedMNIST-like ``.npz`` with ``key`` replaced by ``value``, or by a bare ``.npy`` header
    claiming ``header`` (dtype, shape) followed by 100 bytes."""
    import io
    import zipfile

    arrays = {f"{s}_{k}": (np.zeros((4, 8, 8), np.uint8) if k == "images" else np.array([[0], [1], [0], [1]]))
              for s in ("train", "val", "test") for k in ("images", "labels")}
    with zipfile.ZipFile(path, "w") as z:
        for name, array in {**arrays, key: value}.items():
            buf = io.BytesIO()
            if name == key and header is not None:
                dtype, shape = header
                np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
                buf.write(bytes(100))
            else:
                np.save(buf, array, allow_pickle=True)
            z.writestr(f"{name}.npy", buf.getvalue())


_OBJECTS = np.empty(4, dtype=object)
_OBJECTS[:] = [np.zeros((8, 8))] * 4


@pytest.mark.parametrize("key, value, header, message", [
    ("train_images", _OBJECTS, None, r"train_images holds Python objects \(a pickle\), which medtl never loads"),
    ("train_images", None, ("|u1", (10**6, 10**3, 10**3)), r"train_images's header says shape \(1000000, 1000, "
     r"1000\) \(1,000,000,000,000 bytes\) but the file stores 100 bytes of it: damaged"),
    ("train_images", np.array(["a", "b", "c", "d"]), None, r"train_images is <U1 of shape \(4,\), not numbers"),
    ("train_images", np.zeros(4, np.uint8), None, r"train_images is uint8 of shape \(4,\), not numbers of shape"),
    ("train_labels", np.array([[0.5], [1], [0], [1]]), None, r"train_labels are float64 values, not class indices"),
    ("train_labels", np.array([[np.nan], [1], [0], [1]]), None, r"train_labels are float64 values, not class"),
    ("train_labels", np.array([[-3], [1], [0], [1]]), None, r"train_labels holds -3, not a class index"),
    ("train_labels", np.array([[10**12], [1], [0], [1]]), None, r"label 1000000000000 found among 12 images"),
])
def test_a_hostile_npz_is_refused_in_one_line_before_it_is_loaded(tmp_path, key, value, header, message):
    """A pickled array was an internal error, a header claiming 10^12 elements and a label of 10^12 were
    MemoryErrors, text images were read as file paths and a label of 0.5 trained as class 0."""
    _hostile_npz(tmp_path / "x.npz", key, value, header)
    with pytest.raises(ConfigError, match=r"^\S*x.npz: " + message):
        load_medmnist(tmp_path / "x.npz")


def test_npz_labels_saved_as_whole_floats_still_load(tmp_path):
    _hostile_npz(tmp_path / "x.npz", "train_labels", np.array([[0.0], [1.0], [0.0], [1.0]]))
    assert [it["label"] for it in load_medmnist(tmp_path / "x.npz").split("train")] == [0, 1, 0, 1]


def test_an_integer_label_far_past_the_rows_is_refused_not_named(tmp_path):
    """A manifest label of 10^12 made 10^12 class names ('0', '1', ...) until the memory ran out."""
    (tmp_path / "m.csv").write_text("path,label\na.png,0\nb.png,1000000000000\n")
    with pytest.raises(ConfigError, match=r"m.csv: label 1000000000000 found among 2 rows; integer labels are "
                                          r"class indices 0..K-1"):
        load_manifest(tmp_path / "m.csv", check_files=False)


def test_real_pneumoniamnist(shared):
    path = shared("data/medmnist/pneumoniamnist.npz")
    c = load_items(DataConfig(path=str(path)))
    assert [len(c.split(s)) for s in ("train", "val", "test")] == [4708, 524, 624]
    assert c.counts()["train"] == {"normal": 1214, "pneumonia": 3494}
    assert c.items[0]["image"].shape == (28, 28)


def test_load_items_filter_split_and_subsample(tmp_path):
    _png(tmp_path / "meta" / "a.png")
    rows = [f"a.png,{'yes' if i % 3 == 0 else 'no'},,p{i // 2},{'A' if i < 60 else 'B'}" for i in range(80)]
    csv = _manifest(tmp_path, rows)
    c = load_items(DataConfig(path=str(csv), filter={"site": "A"}, val_fraction=0.2, test_fraction=0.2))
    assert len(c.items) == 60 and {it["site"] for it in c.items} == {"A"}
    assert {it["split"] for it in c.items} == {"train", "val", "test"}
    with pytest.raises(ConfigError, match="scanner"):
        load_items(DataConfig(path=str(csv), filter={"scanner": "x"}))
    full = load_items(DataConfig(path=str(csv), val_fraction=0.2, test_fraction=0.2))
    small = load_items(DataConfig(path=str(csv), val_fraction=0.2, test_fraction=0.2, train_fraction=0.5))
    assert len(small.split("val")) == len(full.split("val")) and len(small.split("test")) == len(full.split("test"))
    assert len(small.split("train")) == round(0.5 * len(full.split("train")))


def test_data_seed_fixes_the_cohort_while_the_training_seed_varies(tmp_path):
    _png(tmp_path / "meta" / "a.png")
    rows = [f"a.png,{'yes' if i % 3 == 0 else 'no'},,p{i}" for i in range(120)]
    csv = str(_manifest(tmp_path, rows))

    def ids(train_seed: int, **kw) -> dict[str, list[str]]:
        c = load_items(DataConfig(path=csv, train_size=30, **kw), seed=train_seed)
        return {s: sorted(it["patient_id"] for it in c.split(s)) for s in ("train", "val", "test")}

    assert ids(0) != ids(1)  # default: the training seed draws the split and the subset
    assert ids(0, seed=7) == ids(1, seed=7) == ids(7)  # data.seed: one cohort for every training seed
    assert len(ids(0, seed=7)["train"]) == 30


def test_load_items_carves_val_from_train_when_missing(tmp_path):
    _png(tmp_path / "meta" / "a.png")
    rows = [f"a.png,{i % 2},{'test' if i < 10 else 'train'}" for i in range(50)]
    c = load_items(DataConfig(path=str(_manifest(tmp_path, rows, header="path,label,split")), val_fraction=0.25))
    assert [len(c.split(s)) for s in ("train", "val", "test")] == [30, 10, 10]


def test_a_dicom_class_folder_cohort_splits_by_the_patient_in_the_headers(tmp_path):
    """A folder-per-class DICOM cohort ignored PatientID: one patient's slices landed in train and test."""
    import shutil

    import pydicom

    from medtl.demo.cohort import sample_path

    ct2d = sample_path("ct2d").parent
    for f in sorted(ct2d.glob("*.dcm")):
        label = "pos" if int(f.stem[1:5]) % 2 else "neg"
        (tmp_path / label).mkdir(exist_ok=True)
        shutil.copy(f, tmp_path / label / f.name)
    for seed in range(5):
        cohort = load_items(DataConfig(path=str(tmp_path), val_fraction=0.2, test_fraction=0.2), seed=seed)
        splits: dict[str, set] = {}
        for it in cohort.items:
            splits.setdefault(pydicom.dcmread(it["image"], stop_before_pixels=True).PatientID, set()).add(it["split"])
            assert it["patient_id"].startswith("dicom-") and "P00" not in it["patient_id"]  # a hash, not the ID
        assert all(len(s) == 1 for s in splits.values()) and len(splits) > 3


@pytest.mark.parametrize("names, warned", [(("abnormal", "normal"), True), (("disease", "healthy"), True),
                                           (("lesion", "no_lesion"), True), (("normal", "pneumonia"), False),
                                           (("benign", "malignant"), False), (("cat", "dog"), False),
                                           (("negative", "normal"), False)])
def test_alphabetical_order_that_makes_a_no_finding_name_class_1_warns(tmp_path, recwarn, names, warned):
    """"abnormal"/"normal" made "normal" the positive class of sensitivity and the AUC without a word."""
    for name in names:
        _png(tmp_path / "folder" / name / "x.png")
    csv = _manifest(tmp_path, [f"../folder/{n}/x.png,{n}" for n in names], header="path,label")
    for load in (lambda: load_manifest(csv), lambda: load_folder(tmp_path / "folder")):
        assert load().class_names == sorted(names)
    messages = [str(w.message) for w in recwarn if "sorted alphabetically" in str(w.message)]
    if warned:
        assert len(messages) == 2 and f"set data.class_names=[{sorted(names)[1]},{sorted(names)[0]}]" in messages[0]
    else:
        assert not messages
    recwarn.clear()
    load_manifest(csv, class_names=sorted(names))  # an order the user chose is not questioned
    assert not [w for w in recwarn if "sorted alphabetically" in str(w.message)]
