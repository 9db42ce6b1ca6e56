"""Cohort sources: a manifest CSV, a folder-per-class tree, or a MedMNIST ``.npz``.

Every source gives a :class:`Cohort`: a list of item dicts (``"image"``: path or
array, ``"label"``: int, ``"split"``: train/val/test, optional ``"patient_id"``
and any extra manifest columns) and the class names.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medtl.data.config import DataConfig
from medtl.data.splits import SPLITS, make_splits, normalize_split, subsample
from medtl._fileutil import read_csv_rows
from medtl.errors import ConfigError

#: Class names of the MedMNIST files medtl's benchmarks use (the .npz stores only integers).
MEDMNIST_CLASSES: dict[str, list[str]] = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "adrenalmnist3d": ["normal", "hyperplasia"],
}

#: Integer labels are class indices: one past this and past the number of rows is a wrong label, not a class
#: to make a name for (a label of 10^12 listed 10^12 class names until the memory ran out).
_MANY_CLASSES = 100_000

#: Files in a class folder that are never images.
_JUNK = {"thumbs.db", "desktop.ini", "readme", "readme.txt", "readme.md"}


@dataclass
class Cohort:
    """Items and class names of one data source."""

    items: list[dict[str, Any]]
    class_names: list[str]
    source: str = ""
    format: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> list[dict[str, Any]]:
        """The items of split ``name`` (train, val or test)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return [it for it in self.items if it.get("split") == name]

    def fingerprint(self) -> str:
        """``sha256:<hex>`` of the class names and of every item's image, label and split, in order: runs whose
        cohorts have one fingerprint drew on the same images, labelled and split alike (what a rerun must
        match besides the config; a manifest's rows in another order split differently, and fingerprint so).
        A file counts by its path relative to the cohort's folder (the manifest's, or the class-folder tree),
        so a cohort moved whole keeps its fingerprint, and its contents are not read; an image held in memory
        (a MedMNIST array) counts by its type, shape and bytes. Patient IDs are left out."""
        import hashlib
        import json

        h = hashlib.sha256(json.dumps(self.class_names).encode())
        root = {"manifest": os.path.dirname(os.path.abspath(self.source)),
                "folder": os.path.abspath(self.source)}.get(self.format) if self.source else None
        for it in self.items:
            image = it["image"]
            if isinstance(image, (str, os.PathLike)):
                try:
                    name = Path(os.path.relpath(os.path.abspath(image), root)).as_posix() if root else str(image)
                except ValueError:  # another drive than the cohort's folder (Windows)
                    name = str(image)
                h.update(json.dumps(["file", name, int(it["label"]), it.get("split")]).encode())
            else:
                array = np.ascontiguousarray(image)
                h.update(json.dumps(["array", array.dtype.str, list(array.shape), int(it["label"]),
                                     it.get("split")]).encode())
                h.update(memoryview(array).cast("B"))
        return f"sha256:{h.hexdigest()}"

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {class name: count}}`` (for reports and model cards)."""
        out: dict[str, dict[str, int]] = {}
        for s in SPLITS:
            c = Counter(it["label"] for it in self.items if it.get("split") == s)
            if c:
                out[s] = {self.class_names[k]: int(c.get(k, 0)) for k in range(self.n_classes)}
        return out


def detect_data_format(path: str | os.PathLike) -> str:
    """``"manifest"`` (.csv), ``"medmnist"`` (.npz) or ``"folder"`` (a directory)."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".csv"):
        return "manifest"
    if name.endswith(".npz"):
        return "medmnist"
    if p.is_dir():
        return "folder"
    if not p.exists():
        raise ConfigError(f"{p}: data path not found (data.path must be a manifest .csv, a folder with one "
                          "sub-folder per class, or a MedMNIST .npz)")
    raise ConfigError(f"{p}: cannot tell the data format (use a .csv manifest, a class-folder tree or a .npz; "
                      "or set data.format)")


#: Class names that usually mean "no finding": sorted alphabetically, they can land on class 1.
_NEGATIVE_NAME = re.compile(r"(normal|negative|neg|healthy|benign|no|none|absent|control|clear|no[_ -].+|non[_ -]?.+|"
                            r"not[_ -].+)", re.IGNORECASE)


def _warn_if_class_1_reads_as_negative(names: list[str], where: str) -> None:
    """Binary figures (sensitivity, specificity, AUC of p(class 1)) treat class 1 as the finding; alphabetical
    order makes "normal" class 1 beside "abnormal" without a word."""
    if len(names) == 2 and _NEGATIVE_NAME.fullmatch(names[1]) and not _NEGATIVE_NAME.fullmatch(names[0]):
        warnings.warn(f"{where}: class names sorted alphabetically make {names[1]!r} class 1, the positive class of "
                      f"sensitivity, specificity and the AUC; if {names[0]!r} is the finding, set "
                      f"data.class_names=[{names[1]},{names[0]}]", stacklevel=3)


def _label_map(raw: list[str], class_names: list[str] | None, where: str) -> tuple[list[int], list[str]]:
    """Labels as ints plus class names. All-integer labels are class indices; otherwise class names."""
    if any(not r for r in raw):
        row = next(i for i, r in enumerate(raw) if not r)
        raise ConfigError(f"{where}: row {row + 2} has no label (every row of a training manifest needs one)")
    if all(re.fullmatch(r"[+-]?\d+", r) for r in raw):
        ints = [int(r) for r in raw]
        if min(ints) < 0:
            raise ConfigError(f"{where}: integer labels must be class indices 0..K-1, found {min(ints)}")
        k = max(ints) + 1
        if not class_names and k > max(len(ints), _MANY_CLASSES):  # k class names would fill the memory
            raise ConfigError(f"{where}: label {k - 1} found among {len(ints)} rows; integer labels are class "
                              "indices 0..K-1")
        names = list(class_names) if class_names else [str(i) for i in range(k)]
        if len(names) < k:
            raise ConfigError(f"{where}: label {k - 1} found but only {len(names)} class_names given")
        return ints, names
    names = list(class_names) if class_names else sorted(set(raw))
    if not class_names:
        _warn_if_class_1_reads_as_negative(names, where)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        raise ConfigError(f"{where}: labels {unknown[:5]} are not in class_names {names}")
    return [index[r] for r in raw], names


def load_manifest(path: str | os.PathLike, class_names: list[str] | None = None,
                  check_files: bool = True) -> Cohort:
    """Read a CSV with columns ``path,label[,split][,patient_id]`` plus any extra columns.

    Relative paths are relative to the CSV's folder; every item's path is absolute, so what a run writes of
    it (``predictions_test.csv``) names the same file whichever folder training ran in. Labels are integers (class
    indices) or class-name strings (sorted alphabetically unless ``class_names``
    fixes the order). Extra columns are kept as strings on each item.
    """
    path = Path(path)
    if not path.is_file():
        hint = (": `medtl sample-data sample_data --size small` writes the built-in sample cohort there"
                if path.parent.name == "sample_data" else " (relative paths start from the current folder)")
        raise ConfigError(f"{path}: manifest not found{hint}")
    fields, raw = read_csv_rows(path, ConfigError, "columns path,label[,split][,patient_id]")
    rows = [{k: (v or "").strip() for k, v in row.items()} for row in raw]
    for col in ("path", "label"):
        if col not in fields:
            raise ConfigError(f"{path}: manifest needs a {col!r} column (found {fields})")
    if not rows:
        raise ConfigError(f"{path}: manifest has no rows")
    labels, names = _label_map([r["label"] for r in rows], class_names, str(path))
    base = Path(os.path.abspath(path.parent))
    items: list[dict[str, Any]] = []
    missing: list[str] = []
    for i, (row, label) in enumerate(zip(rows, labels)):
        if not row["path"]:
            raise ConfigError(f"{path}: row {i + 2} has an empty path")
        p = Path(row["path"]).expanduser()
        p = Path(os.path.abspath(base / p))
        if check_files and not p.exists():
            missing.append(row["path"])
        item: dict[str, Any] = {k: v for k, v in row.items() if k and k not in ("path", "label", "split")}
        item["image"] = str(p)
        item["label"] = label
        if "patient_id" in item and not item["patient_id"]:
            del item["patient_id"]
        if "split" in fields:
            try:
                split = normalize_split(row["split"])
            except ValueError as exc:
                raise ConfigError(f"{path}: row {i + 2}: {exc}") from None
            if split:
                item["split"] = split
        items.append(item)
    if missing:
        raise ConfigError(f"{path}: {len(missing)} listed file(s) not found, e.g. {missing[:3]} "
                          f"(paths are relative to {base})")
    given = sum("split" in it for it in items)
    if 0 < given < len(items):
        raise ConfigError(f"{path}: {len(items) - given} row(s) have an empty split while others have one "
                          "(fill the split column or leave it empty everywhere)")
    return Cohort(items=items, class_names=names, source=str(path), format="manifest")


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.name.lower() not in _JUNK)


def load_folder(root: str | os.PathLike, class_names: list[str] | None = None) -> Cohort:
    """Read ``root/<class>/<file or series folder>``; or ``root/<train|val|test>/<class>/...`` with given splits.

    Every non-hidden entry of a class folder is one item (a file, or a folder
    holding one DICOM series), named by its absolute path. A DICOM item is grouped by the PatientID in its header
    (:func:`dicom_patient`), so that the splits keep each patient in one of them.
    """
    if not os.fspath(root):  # Path("") is the current folder, read as a cohort
        raise ConfigError("the cohort folder path is empty (give a folder with one sub-folder per class)")
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: folder not found")
    subdirs = [p for p in _entries(root) if p.is_dir()]
    split_dirs = {normalize_split(p.name): p for p in subdirs if p.name.lower() in ("train", "val", "valid",
                                                                                      "validation", "test")}
    layout: list[tuple[str | None, Path]] = (
        [(s, d) for s, d in split_dirs.items()] if split_dirs and len(split_dirs) == len(subdirs)
        else [(None, root)])
    found = sorted({p.name for _, d in layout for p in _entries(d) if p.is_dir()})
    names = list(class_names) if class_names else found
    if not names:
        raise ConfigError(f"{root}: no class sub-folders (expected {root}/<class>/<images>)")
    if not class_names:
        _warn_if_class_1_reads_as_negative(names, str(root))
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ConfigError(f"{root}: class folders {unknown} are not in class_names {names}")
    items: list[dict[str, Any]] = []
    for split, d in layout:
        for k, name in enumerate(names):
            cdir = d / name
            if not cdir.is_dir():
                continue
            for entry in _entries(cdir):
                item: dict[str, Any] = {"image": os.path.abspath(entry), "label": k}
                if split:
                    item["split"] = split
                patient = dicom_patient(entry)
                if patient:
                    item["patient_id"] = patient
                items.append(item)
    if not items:
        raise ConfigError(f"{root}: the class folders {names} hold no files")
    return Cohort(items=items, class_names=names, source=str(root), format="folder")


def dicom_patient(entry: Path) -> str | None:
    """A stand-in for the PatientID of a DICOM file (or of the first file of a series folder): a hash,
    so that splits can group by patient while the ID itself never reaches a file medtl writes
    (predictions, cards). ``None`` for anything else, or a file without PatientID."""
    import hashlib
    import warnings

    import pydicom

    from medtl.io.dicom.sniff import is_dicom_file

    if entry.is_file():
        first = entry if is_dicom_file(entry) else None
    else:
        first = next((f for f in sorted(entry.rglob("*")) if f.is_file() and is_dicom_file(f)), None)
    if first is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pid = str(pydicom.dcmread(first, stop_before_pixels=True, specific_tags=["PatientID"]).get("PatientID")
                      or "").strip()
    except Exception:  # noqa: BLE001 - an unreadable header is the reader's to report, later
        return None
    return f"dicom-{hashlib.sha256(pid.encode()).hexdigest()[:16]}" if pid else None


def _medmnist_missing(path: Path) -> ConfigError:
    m = re.fullmatch(r"(.+?)(?:_(\d+))?", path.stem.lower())
    flag, size = m.group(1), m.group(2) or "28"
    if not re.fullmatch(r"[a-z]+mnist(3d)?", flag):  # not a MedMNIST dataset's name: no download recipe to give
        return ConfigError(f"{path}: .npz file not found (relative paths start from the current folder)")
    fetch = (f"python -c \"import medmnist as m; getattr(m, m.INFO['{flag}']['python_class'])"
             f"(split='train', download=True, root='.', size={size})\"")
    return ConfigError(
        f"{path}: MedMNIST file not found; place {path.name} at that path (medtl never downloads data: on a "
        f"connected machine run pip install medmnist, then {fetch}, and copy the .npz here)")


def _npz_array(npz: Any, key: str, path: Path) -> np.ndarray:
    """Array ``key`` of an open ``.npz``, checked from its ``.npy`` header before it is read: an object
    array (pickle, which medtl never loads) is refused, and so is a header claiming more bytes than the
    archive stores for it (a 100-byte member claiming 10^12 elements was allocated, then a MemoryError)."""
    import zipfile

    name = f"{key}.npy"
    try:
        info = npz.zip.getinfo(name)
        with npz.zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: {key} is not a readable array ({exc}); re-download or re-save the file") \
            from None
    if dtype.hasobject:
        raise ConfigError(f"{path}: {key} holds Python objects (a pickle), which medtl never loads; save it as a "
                          "numeric array (np.savez with uint8 or float images, integer labels)")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > info.file_size - offset:
        raise ConfigError(f"{path}: {key}'s header says shape {tuple(shape)} ({need:,} bytes) but the file stores "
                          f"{info.file_size - offset:,} bytes of it: damaged; re-download or re-save it")
    try:
        return npz[key]
    except MemoryError:
        raise ConfigError(f"{path}: {key} of shape {tuple(shape)} ({need / 2**30:.1f} GiB) does not fit in memory "
                          "here; use a smaller version of the dataset or a machine with more memory") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: {key} is not a readable array ({exc}); re-download or re-save the file") \
            from None


def _class_indices(labels: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``labels`` as int64 class indices, refusing what is not one (a fraction, NaN, text, a negative number):
    ``astype`` truncated 0.5 to class 0 and NaN to a huge negative number without a word."""
    integral = labels.dtype.kind in "biu" or (
        labels.dtype.kind == "f" and bool(np.isfinite(labels).all()) and bool((labels == np.round(labels)).all()))
    if not integral:
        raise ConfigError(f"{path}: {key} are {labels.dtype} values, not class indices 0..K-1 (save the labels "
                          "as integers)")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int64).max):
        raise ConfigError(f"{path}: {key} holds {labels.min() if labels.min() < 0 else labels.max()}, not a class "
                          "index 0..K-1")
    return labels.astype(np.int64)


def load_medmnist(path: str | os.PathLike, class_names: list[str] | None = None) -> Cohort:
    """Read a MedMNIST ``.npz``: ``{train,val,test}_images`` and ``_labels`` (``(N, 1)`` integers).

    Images stay in memory as one array per split; each item's ``"image"`` is a
    view of one sample (2D ``(H, W)``, RGB ``(H, W, 3)`` or 3D ``(D, H, W)``),
    turned into a scan by :func:`medtl.transforms.array_to_scan`. Multi-label
    files (ChestMNIST) are refused: medtl trains single-label classifiers.
    """
    path = Path(path)
    if not path.is_file():
        raise _medmnist_missing(path)
    try:
        npz = np.load(path)
    except Exception as exc:  # numpy raises several types for a damaged zip
        raise ConfigError(f"{path}: unreadable .npz ({type(exc).__name__}: {exc}); re-download it") from None
    with npz:
        keys = set(npz.files)
        splits = [s for s in SPLITS if f"{s}_images" in keys]
        if not splits:
            raise ConfigError(f"{path}: no train_images/val_images/test_images arrays (found {sorted(keys)}); "
                              "not a MedMNIST file")
        items: list[dict[str, Any]] = []
        n_max = 0
        for s in splits:
            if f"{s}_labels" not in keys:
                raise ConfigError(f"{path}: {s}_images without {s}_labels")
            images = _npz_array(npz, f"{s}_images", path)
            if images.ndim not in (3, 4) or images.dtype.kind not in "biuf":
                raise ConfigError(f"{path}: {s}_images is {images.dtype} of shape {images.shape}, not numbers of "
                                  "shape (N, H, W), (N, H, W, 3) or (N, D, H, W); save the images as such")
            labels = np.asarray(_npz_array(npz, f"{s}_labels", path))
            if labels.ndim == 2 and labels.shape[1] != 1:
                raise ConfigError(f"{path}: labels of shape {labels.shape} are multi-label; medtl trains "
                                  "single-label classifiers")
            labels = _class_indices(labels.reshape(-1), f"{s}_labels", path)
            if len(labels) != len(images):
                raise ConfigError(f"{path}: {len(images)} {s} images but {len(labels)} labels")
            if images.dtype.kind in "fc" and not np.isfinite(images).all():
                bad = int(images.size - np.count_nonzero(np.isfinite(images)))
                raise ConfigError(f"{path}: {bad} of {images.size} values of {s}_images are not finite "
                                  "(NaN or infinite); replace them (e.g. with the background value)")
            n_max = max(n_max, int(labels.max()) + 1 if len(labels) else 0)
            items += [{"image": images[i], "label": int(labels[i]), "split": s} for i in range(len(labels))]
    if not class_names and n_max > max(len(items), _MANY_CLASSES):  # n_max class names would fill the memory
        raise ConfigError(f"{path}: label {n_max - 1} found among {len(items)} images; labels are class indices "
                          "0..K-1")
    flag = re.sub(r"_\d+$", "", path.stem.lower())
    names = list(class_names) if class_names else MEDMNIST_CLASSES.get(flag, [str(i) for i in range(n_max)])
    if len(names) < n_max:
        raise ConfigError(f"{path}: label {n_max - 1} found but only {len(names)} class names")
    return Cohort(items=items, class_names=names, source=str(path), format="medmnist")


def apply_filter(items: list[dict[str, Any]], filters: dict[str, str], where: str = "") -> list[dict[str, Any]]:
    """Keep items whose column ``k`` equals ``v`` (as text) for every ``k: v`` of ``filters``."""
    for key, value in filters.items():
        if items and not any(key in it for it in items):
            raise ConfigError(f"{where}: data.filter column {key!r} does not exist in the data")
        items = [it for it in items if str(it.get(key, "")) == str(value)]
    return items


def load_items(cfg: DataConfig, seed: int = 0) -> Cohort:
    """The cohort of ``cfg``: read the source, filter, split (when not given), subsample train.

    Splits: a manifest's ``split`` column or the .npz / split folders are used as
    given; a source with a train split but no val split gets ``val_fraction`` of
    its train items as val (grouped by patient); a source without splits is
    split with :func:`~medtl.data.make_splits`. ``train_fraction < 1``, ``train_size``
    and ``max_per_class`` keep a stratified, seeded subsample of train (val and test untouched).
    Both are seeded with ``cfg.seed`` when it is set, else with ``seed`` (the training seed).
    """
    seed = cfg.seed if cfg.seed is not None else seed
    if not cfg.path:
        raise ConfigError("data.path is empty (give a manifest .csv, a class-folder tree or a MedMNIST .npz)")
    path = Path(cfg.path).expanduser()
    fmt = cfg.format if cfg.format != "auto" else detect_data_format(path)
    if fmt == "manifest":
        cohort = load_manifest(path, cfg.class_names)
    elif fmt == "folder":
        cohort = load_folder(path, cfg.class_names)
    elif fmt == "medmnist":
        cohort = load_medmnist(path, cfg.class_names)
    else:
        raise ConfigError(f"data.format {fmt!r} is not supported")
    items = apply_filter(cohort.items, dict(cfg.filter), str(path))
    if not items:
        raise ConfigError(f"{path}: no items left after data.filter {dict(cfg.filter)}")
    if not any("split" in it for it in items):
        items = make_splits(items, cfg.val_fraction, cfg.test_fraction, seed)
    elif cfg.val_fraction > 0 and not any(it["split"] == "val" for it in items):
        train = [it for it in items if it["split"] == "train"]
        carved = {id(it): s["split"] for it, s in zip(train, make_splits(train, cfg.val_fraction, 0.0, seed))}
        items = [dict(it, split="val" if carved.get(id(it)) == "val" else it["split"]) for it in items]
    if cfg.train_fraction < 1 or cfg.train_size is not None or cfg.max_per_class is not None:
        train = subsample([it for it in items if it["split"] == "train"], cfg.train_fraction, seed,
                          size=cfg.train_size, max_per_class=cfg.max_per_class)
        keep = {id(it) for it in train}
        items = [it for it in items if it["split"] != "train" or id(it) in keep]
    cohort.items = items
    return cohort
