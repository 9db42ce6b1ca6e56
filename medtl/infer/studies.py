"""What a batch input holds: the studies to score, each with a stable key, and what cannot be scored.

Rules (a folder is searched recursively):

- **NIfTI file, 2D image (PNG/JPEG/TIFF/BMP), .zip of DICOM**: one study each, keyed by
  ``<path relative to INPUT>@sha1:<content hash>`` (a moved or edited file is scored again).
  A zip is read like a series folder (its largest image series).
- **DICOM, 3D model**: files are grouped by SeriesInstanceUID across the whole tree; each
  series is one study keyed ``series:<SeriesInstanceUID>`` (a folder holding several series
  gives several studies; a series split over folders is one study).
- **DICOM, 2D model**: each file is one study keyed ``sop:<SOPInstanceUID>`` (2D slices of one
  patient often share a series; a 2D model classifies images, not series). Files sharing a
  SOPInstanceUID are keyed ``sop:<uid>@sha1:<content hash>``: exact copies are scored once,
  differing copies (one damaged) separately.
- DICOM files without the UID fall back to the path + content-hash key.
- **Errors, not silence**: a file whose content is not recognised (a text file named ``.dcm``,
  a file cut inside its header) and a folder holding no file at all each become an error row.
- **Ignored**: hidden files and folders, DICOMDIR, and companion files recognised by their suffix
  (:data:`COMPANION_SUFFIXES`: notes, sidecars, spreadsheets) - they are counted, not scored.

A manifest CSV (``path`` column, relative to the CSV) gives one study per row instead.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtl._fileutil import read_csv_rows
from medtl.errors import MedtlError, one_line
from medtl.io.detect import special_file

#: Files with these suffixes are companions of scans (notes, sidecars, tables), never studies.
COMPANION_SUFFIXES = frozenset({
    ".txt", ".md", ".rst", ".json", ".csv", ".tsv", ".xml", ".html", ".htm", ".pdf", ".log", ".yaml",
    ".yml", ".ini", ".cfg", ".parquet", ".py",
})
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Study:
    """One unit of scoring.

    ``kind``: ``"file"`` (any single file or zip, read with ``load_scan``), ``"series"`` (DICOM
    files of one SeriesInstanceUID), ``"folder"`` (a manifest row naming a DICOM folder).
    ``path`` is what the output shows (the file, or the series' folder); ``files`` the DICOM
    files of a series; ``exclusive`` whether ``path`` holds no other DICOM file, so the series
    can be read from the folder directly.
    """

    key: str
    path: str
    kind: str
    series_uid: str = ""
    files: tuple[str, ...] = ()
    exclusive: bool = True

    def load(self) -> Any:
        """The study as a :class:`~medtl.io.Scan` (raises :class:`~medtl.errors.ScanError` on bad input)."""
        from medtl.io import load_scan

        if self.kind != "series":
            return load_scan(self.path)
        from medtl.io.dicom import read_series

        if self.exclusive:
            return read_series(self.path, series=self.series_uid, progress=False)
        # The folder also holds other series: read just this series' files (reading the
        # folder would parse every other series' headers once per series).
        scan = read_series(list(self.files), series=self.series_uid, progress=False)
        scan.source = self.path
        return scan


@dataclass(frozen=True)
class StudyError:
    """Something in the input that cannot be scored, found before decoding."""

    path: str
    key: str
    reason: str


@dataclass
class Discovery:
    """Result of :func:`discover`: studies to score, errors found on the way, files ignored."""

    studies: list[Study] = field(default_factory=list)
    errors: list[StudyError] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def file_sha1(path: str | os.PathLike) -> str:
    """SHA-1 of a file's bytes (a content fingerprint for resume keys, not a security check)."""
    h = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def folder_sha1(path: str | os.PathLike) -> str:
    """SHA-1 over the sorted relative names and contents of every file in a folder."""
    root = Path(path)
    h = hashlib.sha1(usedforsecurity=False)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + file_sha1(f).encode())
    return h.hexdigest()


def content_key(rel: str, digest: str) -> str:
    """The key of a file identified by where it is and what it holds."""
    return f"{rel}@sha1:{digest}"


def _is_companion(path: Path) -> bool:
    return path.name.startswith(".") or path.suffix.lower() in COMPANION_SUFFIXES


def _dicom_header(path: Path) -> tuple[dict[str, str] | None, str | None]:
    """``({uid fields}, None)`` for a DICOM header, ``(None, reason)`` when it cannot be read."""
    import pydicom

    from medtl.errors import MedtlError
    from medtl.io.dicom.sniff import check_deflated

    try:
        with warnings.catch_warnings(), open(path, "rb") as fh:
            warnings.simplefilter("ignore")
            check_deflated(fh, str(path))  # pydicom would inflate a deflated data set whole, unbounded
            ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True,
                                 specific_tags=["SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
            sop_class = str(ds.get("SOPClassUID", "") or getattr(ds, "file_meta", {}).get(
                "MediaStorageSOPClassUID", "") or "")
            return {"series": str(ds.get("SeriesInstanceUID", "") or ""),
                    "sop": str(ds.get("SOPInstanceUID", "") or ""), "sop_class": sop_class}, None
    except BaseException as exc:  # noqa: BLE001 - a header that cannot be parsed is an error row
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if isinstance(exc, MedtlError):
            return None, one_line(exc, 300)
        return None, f"malformed DICOM header ({one_line(exc, 160)}); re-export the file"


def _rel(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    return shown(Path(rel).as_posix())


def shown(path: str | os.PathLike) -> str:
    """``path`` as text that can be written anywhere: bytes that are not UTF-8 (kept by Python as
    surrogates) are shown as ``\\xNN`` escapes."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def _unusable(p: Path) -> str | None:
    """Why ``p`` cannot be a study before its content is looked at (None: it can be read)."""
    if shown(p) != str(p):
        return "file name is not valid UTF-8 (cannot be written to the CSV outputs); rename the file"
    if p.is_symlink() and not p.exists():
        return f"dangling symbolic link (its target {shown(os.readlink(p))!r} does not exist)"
    special = special_file(p)
    if special:
        return f"{special}, not a file (never opened: it could block or never end)"
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        return f"cannot read the file ({exc.strerror or type(exc).__name__})"
    return None


def _safe_sha1(path: Path) -> str:
    try:
        return file_sha1(path)
    except OSError:  # unreadable now: keyed by path alone, its load fails into the errors file
        return "unreadable"


def _hash_all(paths: Sequence[Path], threads: int = 4) -> list[str]:
    # hashlib releases the GIL on large buffers, so threads overlap reading and hashing.
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(_safe_sha1, paths))


def discover(input_path: str | os.PathLike, spatial_dims: int, exclude: Iterable[str | os.PathLike] = (),
             progress: bool = False) -> Discovery:
    """Studies in a folder, or rows of a manifest CSV (see the module docstring for the rules).

    ``spatial_dims`` (the model's) decides whether DICOM files are scored one by one (2) or
    grouped into series (3). ``exclude``: paths never taken as input (the outputs). ``progress``:
    a bar over the files whose headers are read (thousands of DICOM files take seconds).
    """
    if not os.fspath(input_path):  # Path("") is the current folder, scored whole
        raise MedtlError("the input path is empty (give a folder of studies or a manifest CSV)")
    root = Path(input_path)
    if not root.exists():
        raise MedtlError(f"{root}: no such file or folder (give a folder of studies or a manifest CSV)")
    if root.is_file():
        if root.suffix.lower() in (".csv", ".tsv"):
            return discover_manifest(root, spatial_dims)
        raise MedtlError(f"{root}: INPUT must be a folder of studies or a manifest CSV with a 'path' column "
                         "(for one scan use `medtl predict`)")
    excluded = {os.path.abspath(p) for p in exclude} | {os.path.realpath(p) for p in exclude}
    found = Discovery()
    files: list[Path] = []

    def unlisted(exc: OSError) -> None:  # a folder that cannot be listed is an error row, not a silent hole
        where = Path(exc.filename) if exc.filename else root
        found.errors.append(StudyError(shown(where), _rel(where, root) + "/",
                                       f"cannot list the folder ({exc.strerror or type(exc).__name__})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.abspath(os.path.join(dirpath, d)) not in excluded)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if os.path.abspath(p) not in excluded:
                files.append(p)
    # a folder holding only medtl's outputs (scores, errors, saliency maps) is not an empty input folder
    outputs = [Path(p) for p in sorted(excluded)]  # not yet written on a first run
    found.errors.extend(_empty_folders(root, files + outputs, excluded))
    dicom: list[tuple[Path, dict[str, str]]] = []
    plain: list[Path] = []
    from medtl.io import detect_format

    from tqdm.auto import tqdm

    for p in tqdm(files, unit="file", desc="reading headers", disable=not progress, dynamic_ncols=True,
                  leave=False):
        if _is_companion(p):
            found.ignored.append(shown(p))
            continue
        problem = _unusable(p)
        if problem is not None:
            found.errors.append(StudyError(shown(p), _rel(p, root), problem))
            continue
        kind = detect_format(p)
        if kind == "dicom":
            header, reason = _dicom_header(p)
            if header is None:
                found.errors.append(StudyError(str(p), _rel(p, root), reason or "unreadable DICOM"))
            elif header["sop_class"] == _DICOMDIR_SOP or p.name.upper() == "DICOMDIR":
                found.ignored.append(str(p))
            else:
                dicom.append((p, header))
        elif kind in ("nifti", "image", "zip"):
            plain.append(p)
        else:
            try:
                empty = p.stat().st_size == 0
            except OSError:
                empty = False
            reason = ("file is empty (re-copy or re-export it)" if empty else
                      "not a DICOM, NIfTI, PNG, JPEG or TIFF file (content not recognised; check the file, or move "
                      "it out of the input folder)")
            found.errors.append(StudyError(str(p), _rel(p, root), reason))
    keyed: list[tuple[Path, str]] = []  # files that need a content hash for their key
    keyed.extend((p, "file") for p in plain)
    if spatial_dims == 2:
        sop_count: dict[str, int] = defaultdict(int)
        for _, h in dicom:
            sop_count[h["sop"]] += 1
        repeated = [(p, h) for p, h in dicom if h["sop"] and sop_count[h["sop"]] > 1]
        for p, h in dicom:
            if h["sop"] and sop_count[h["sop"]] == 1:
                found.studies.append(Study(key=f"sop:{h['sop']}", path=str(p), kind="file", series_uid=h["series"]))
            elif not h["sop"]:
                keyed.append((p, "file"))
        # One SOPInstanceUID in several files: byte-identical copies are one study; copies that differ
        # (a damaged or re-encoded copy) are separate studies, so a bad copy never hides a good one.
        for (p, h), digest in zip(repeated, _hash_all([p for p, _ in repeated])):
            found.studies.append(Study(key=f"sop:{h['sop']}@sha1:{digest}", path=str(p), kind="file",
                                       series_uid=h["series"]))
    else:
        found.studies.extend(_series_studies(root, dicom, keyed))
    for (p, kind), digest in zip(keyed, _hash_all([p for p, _ in keyed])):
        found.studies.append(Study(key=content_key(_rel(p, root), digest), path=str(p), kind=kind))
    found.studies.sort(key=lambda s: (s.path, s.key))
    unique: dict[str, Study] = {}
    for s in found.studies:
        if s.key in unique:  # the same DICOM instance copied twice: scored once
            found.ignored.append(s.path)
        else:
            unique[s.key] = s
    found.studies = list(unique.values())
    return found


def _empty_folders(root: Path, files: Sequence[Path], excluded: set[str]) -> list[StudyError]:
    """The topmost folders under ``root`` (``root`` included) that hold no file at any depth."""
    has_files: set[str] = set()
    for f in files:
        parent = f.parent
        while True:
            key = os.path.abspath(parent)
            if key in has_files:
                break
            has_files.add(key)
            if parent == root or parent == parent.parent:
                break
            parent = parent.parent
    out: list[StudyError] = []

    def walk(folder: Path) -> None:
        if os.path.abspath(folder) not in has_files:
            if not os.access(folder, os.R_OK | os.X_OK):
                return  # cannot be listed: reported as such by discover's walk
            out.append(StudyError(str(folder), _rel(folder, root) + "/",
                                  "empty folder (no files to score; remove it or copy the study in)"))
            return
        try:
            subs = sorted(p for p in folder.iterdir()
                          if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
                          and os.path.abspath(p) not in excluded)
        except OSError:  # reported by discover's walk
            return
        for sub in subs:
            walk(sub)

    walk(root)
    return out


def _series_studies(root: Path, dicom: Sequence[tuple[Path, dict[str, str]]],
                    keyed: list[tuple[Path, str]]) -> list[Study]:
    """One study per SeriesInstanceUID; a series read from its folder when nothing else is there."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for p, h in dicom:
        if h["series"]:
            groups[h["series"]].append(p)
        else:
            keyed.append((p, "file"))
    count_under: dict[str, int] = defaultdict(int)  # DICOM files (any series) under each folder
    for p, _ in dicom:
        parent = p.parent
        while True:
            count_under[str(parent)] += 1
            if parent == root or parent == parent.parent:
                break
            parent = parent.parent
    studies = []
    for uid, paths in groups.items():
        if len(paths) == 1:  # a one-file series (a 2D image, an enhanced multi-frame file): read the file
            studies.append(Study(key=f"series:{uid}", path=str(paths[0]), kind="file", series_uid=uid))
            continue
        folder = Path(os.path.commonpath([str(p.parent) for p in paths]))
        studies.append(Study(key=f"series:{uid}", path=str(folder), kind="series", series_uid=uid,
                             files=tuple(str(p) for p in sorted(paths)),
                             exclusive=count_under[str(folder)] == len(paths)))
    return studies


def discover_manifest(csv_path: str | os.PathLike, spatial_dims: int) -> Discovery:
    """One study per row of a manifest CSV; ``path`` is relative to the CSV's folder (or absolute).

    A DICOM file is keyed by its SOPInstanceUID (2D) or SeriesInstanceUID (3D); a folder by its
    path and the hash of its files; anything else by path + content hash. Missing files are errors.
    """
    csv_path = Path(csv_path)
    _, rows = read_csv_rows(csv_path, MedtlError, "one study per row, a 'path' column")
    if not rows or "path" not in rows[0]:
        raise MedtlError(f"{csv_path}: a manifest needs a 'path' column (one study per row)")
    base = csv_path.parent
    found = Discovery()
    seen: set[str] = set()
    from medtl.io import detect_format

    for i, row in enumerate(rows, start=2):
        rel = (row.get("path") or "").strip()
        if not rel:
            found.errors.append(StudyError(f"{csv_path}:{i}", f"{csv_path.name}:{i}", "empty 'path' cell"))
            continue
        p = Path(rel) if Path(rel).is_absolute() else base / rel
        if not p.exists():
            found.errors.append(StudyError(str(p), rel, "no such file or folder"))
            continue
        if p.is_dir():
            study = Study(key=content_key(rel, folder_sha1(p)), path=str(p), kind="folder")
        else:
            problem = _unusable(p)  # before hashing: a row naming /dev/zero or a FIFO would be read forever
            if problem is not None:
                found.errors.append(StudyError(str(p), rel, problem))
                continue
            key, header = None, None
            if detect_format(p) == "dicom":
                header, _ = _dicom_header(p)
                uid = (header or {}).get("sop" if spatial_dims == 2 else "series", "")
                key = f"{'sop' if spatial_dims == 2 else 'series'}:{uid}" if uid else None
            study = Study(key=key or content_key(rel, file_sha1(p)), path=str(p), kind="file",
                          series_uid=(header or {}).get("series", "") if key else "")
        if study.key in seen:
            continue  # the same study listed twice is scored once
        seen.add(study.key)
        found.studies.append(study)
    return found
