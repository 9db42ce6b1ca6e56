"""The study header a clinician checks before reading a result: patient, study date, series
description, accession number, read from the uploaded DICOM headers.

These are patient identifiers: they are shown in the page only. They are never put on a
``Scan`` (its metadata refuses them), never logged and never written to a file medtl makes.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Iterator

from medtl.errors import ScanError
from medtl.io import Scan, list_series, load_scan
from medtl.io.detect import detect_format

#: DICOM keyword -> label shown in the page, in display order.
HEADER_TAGS = {"PatientName": "Patient", "PatientID": "Patient ID", "PatientBirthDate": "Born",
               "PatientSex": "Sex", "StudyDate": "Study date", "StudyDescription": "Study",
               "SeriesDescription": "Series", "AccessionNumber": "Accession"}
#: Files looked at to find the chosen series' header (the first match is used).
_MAX_FILES = 5000
_MAX_MEMBER_BYTES = 64 * 2**20


def _fmt_date(value: str) -> str:
    v = str(value).strip()
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}" if len(v) == 8 and v.isdigit() else v


def _candidates(path: Path) -> Iterator[tuple[str, object]]:
    if path.is_dir():
        for n, f in enumerate(sorted(p for p in path.rglob("*") if p.is_file())):
            if n >= _MAX_FILES:
                return
            yield f.name, f
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for n, info in enumerate(i for i in zf.infolist() if not i.is_dir()):
                if n >= _MAX_FILES:
                    return
                if info.file_size <= _MAX_MEMBER_BYTES:
                    try:
                        data = zf.read(info)
                    except Exception:  # noqa: BLE001 - a damaged member (bad CRC...): the reader skipped it too
                        continue
                    yield info.filename, io.BytesIO(data)
    elif path.is_file():
        yield path.name, path


def study_header(path: str | os.PathLike, series_uid: str | None = None) -> dict[str, str]:
    """``{label: value}`` of :data:`HEADER_TAGS` from the first DICOM file of ``series_uid`` (any
    series when ``None``) in a file, folder or zip; ``{}`` for non-DICOM input. Never raises."""
    try:
        import pydicom
        from pydicom.multival import MultiValue
    except ImportError:  # pragma: no cover - pydicom is a dependency of medtl.io
        return {}
    for _, source in _candidates(Path(path)):
        try:
            ds = pydicom.dcmread(source, stop_before_pixels=True,
                                 specific_tags=[*HEADER_TAGS, "SeriesInstanceUID"])
        except Exception:  # noqa: BLE001 - not DICOM, or unreadable: try the next file
            continue
        if series_uid and str(getattr(ds, "SeriesInstanceUID", "")) != str(series_uid):
            continue
        out = {}
        for key, label in HEADER_TAGS.items():
            value = getattr(ds, key, None)
            if value not in (None, ""):
                values = value if isinstance(value, MultiValue) else [value]  # PatientID MRN\483920: two values
                text = ", ".join(str(v) for v in values).replace("^", " ").strip()
                out[label] = _fmt_date(text) if key.endswith("Date") else text
        return out
    return {}


def header_markdown(header: dict[str, str]) -> str:
    """One line for the page (empty when there is no header)."""
    if not header:
        return ""
    return " · ".join(f"**{k}:** {v}" for k, v in header.items())


_PATH_DIRS = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?:[^\s\\/:'\"()]+[\\/])+")


def without_folders(text: str) -> str:
    """``text`` with the folders cut from any path in it (the file name stays): the page never shows
    where uploads are kept."""
    return _PATH_DIRS.sub("", str(text)).strip()


def read_upload(stage: Path, pick: int | None) -> tuple[list[dict], Scan, dict, list[str]]:
    """Series found, the scan, its study header and the readers' notes (missing slices, no patient
    geometry ...): what one upload request reads (in a child process, under the wall-clock limit of
    :func:`medtl.app.limits.call_with_limit`). The notes are for the page, never the server's log: they
    name the uploaded file, and file names often carry a patient's name or ID."""
    import warnings

    from medtl.io.dicom.sniff import quiet_pydicom_log

    with quiet_pydicom_log(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found, scan, header = _read(stage, pick)
    notes = list(dict.fromkeys(without_folders(str(w.message)) for w in caught
                               if issubclass(w.category, UserWarning) and "medtl" in w.filename))
    return found, scan, header, notes


def _read(stage: Path, pick: int | None) -> tuple[list[dict], Scan, dict]:
    kind = detect_format(stage)
    found = list_series(stage) if kind in ("folder", "zip") else []
    studies = {d["study_uid"] for d in found if d["is_image"] and d["study_uid"]}
    # Files dropped one after another add up in the upload box: from several studies, never pick one
    # silently. (One .zip is one deliberate export: its series, of any study, are offered in the picker.)
    if kind == "folder" and len(studies) > 1:
        raise ScanError(None, f"the upload holds images of {len(studies)} different studies "
                        f"({sum(d['n_files'] for d in found)} files)",
                        "clear the upload (✕) and upload the files of one study")
    scan = load_scan(stage, series=pick, progress=False)
    header = study_header(stage, scan.metadata.get("series_uid")) if scan.format != "image" else {}
    return found, scan, header
