"""What to pull: filters (:class:`Query`), the series found (:class:`SeriesRef`), and the
on-disk layout retrieved instances land in (:func:`write_instance`).

Retrieved files go to ``ROOT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``,
written to a hidden temporary name first and renamed, so a folder scan (``medtl score``'s
discovery ignores hidden files) never sees half a file and a killed pull resumes by skipping
the instances already there. Nothing about the patient is in a path, a row or a log line.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtl._fileutil import pid_alive, write_error
from medtl.errors import MedtlError

__all__ = ["Query", "SeriesRef", "instance_path", "present_instances", "write_instance", "IMAGE_LESS_SOP_CLASSES"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")

#: SOP classes that never hold an image to classify (SR, SEG, PR, KO, RT, Parametric Map, ...) by prefix.
IMAGE_LESS_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.88.",     # structured reports
    "1.2.840.10008.5.1.4.1.1.66",      # raw data, spatial registration, fiducials, SEG (…66.4)
    "1.2.840.10008.5.1.4.1.1.11.",     # presentation states
    "1.2.840.10008.5.1.4.1.1.481.",    # RT objects
    "1.2.840.10008.5.1.4.1.1.104.",    # encapsulated PDF/CDA
)


def _date(value: str, what: str) -> str:
    v = value.strip().replace("-", "")
    try:
        _dt.datetime.strptime(v, "%Y%m%d")
    except ValueError:
        raise MedtlError(f"{what} {value!r}: give a date as YYYY-MM-DD or YYYYMMDD") from None
    return v


@dataclass(frozen=True)
class Query:
    """Filters on studies and series; empty fields match anything. ``*`` and ``?`` are wildcards
    in text fields (patient ID, accession, series description)."""

    patient_id: str | None = None
    study_uid: str | None = None
    accession: str | None = None
    modality: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    series_description: str | None = None
    series_uid: str | None = None

    def __post_init__(self) -> None:
        for name in ("study_uid", "series_uid"):
            v = getattr(self, name)
            if v and not _UID.match(v):
                raise MedtlError(f"--{name.replace('_', '-')} {v!r} is not a DICOM UID (digits and dots)")
        for name in ("date_from", "date_to"):
            v = getattr(self, name)
            if v:
                object.__setattr__(self, name, _date(v, f"--{name.replace('_', '-')}"))
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise MedtlError(f"--date-from {self.date_from} is after --date-to {self.date_to}")
        if self.modality:
            object.__setattr__(self, "modality", self.modality.upper())

    @property
    def date_range(self) -> str | None:
        """DICOM range matching: ``FROM-TO``, ``FROM-``, ``-TO``, or ``None``."""
        if not self.date_from and not self.date_to:
            return None
        if self.date_from == self.date_to:
            return self.date_from
        return f"{self.date_from or ''}-{self.date_to or ''}"

    def study_filters(self) -> dict[str, str]:
        """Study-level keywords -> values (for QIDO-RS and C-FIND)."""
        out = {"PatientID": self.patient_id, "StudyInstanceUID": self.study_uid,
               "AccessionNumber": self.accession, "StudyDate": self.date_range}
        return {k: v for k, v in out.items() if v}

    def series_filters(self) -> dict[str, str]:
        out = {"Modality": self.modality, "SeriesDescription": self.series_description,
               "SeriesInstanceUID": self.series_uid}
        return {k: v for k, v in out.items() if v}

    def describe(self) -> str:
        """The filters for a log line (a patient ID or accession is shown only as 'given')."""
        parts = []
        for k, v in {**self.study_filters(), **self.series_filters()}.items():
            parts.append(f"{k}=<given>" if k in ("PatientID", "AccessionNumber") else f"{k}={v}")
        return ", ".join(parts) or "everything"


@dataclass(frozen=True)
class SeriesRef:
    """One series on the PACS: UIDs, modality, date, description, count; no patient names or IDs (the
    description is free text: a site may type anything there)."""

    study_uid: str
    series_uid: str
    modality: str = ""
    study_date: str = ""
    description: str = ""
    n_instances: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"study_uid": self.study_uid, "series_uid": self.series_uid, "modality": self.modality,
                "study_date": self.study_date, "description": self.description, "n_instances": self.n_instances}


def instance_path(root: str | os.PathLike, study_uid: str, series_uid: str, sop_uid: str) -> Path:
    for uid in (study_uid, series_uid, sop_uid):
        if not uid or not _UID.match(uid):
            raise MedtlError(f"instance with a missing or malformed UID ({uid!r}): not stored")
    return Path(root) / study_uid / series_uid / f"{sop_uid}.dcm"


#: What :func:`_write_new` names its temporary file: ``.<SOPInstanceUID>.dcm.<pid>.part``.
_PART_NAME = re.compile(r"\.[0-9.]+\.dcm\.(?P<pid>[0-9]+)\.part")
#: Series folders this process has cleared of other processes' partial files (once each).
_CLEARED: set[Path] = set()


def remove_stale_parts(folder: Path) -> list[Path]:
    """Remove the partial instances that writers since killed left in ``folder`` (a ``.part`` file whose
    process is gone: one per kill, never renamed nor reused, as the next writer has another pid); files of
    a running process, this one's included, and files not named as :func:`_write_new` names them stay."""
    gone = []
    for p in folder.glob(".*.part"):
        m = _PART_NAME.fullmatch(p.name)
        if m and int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])) and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def _write_new(path: Path, write: Any) -> tuple[Path, bool]:
    """``write(fh)`` into ``path`` unless it exists: a hidden ``.part`` file, fsynced, then renamed,
    so a kill never leaves half an instance under the name that resume looks for (what killed writers
    left in the folder goes at this process's first write there)."""
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent not in _CLEARED:
        remove_stale_parts(path.parent)
        if len(_CLEARED) >= 10_000:  # a listener runs for weeks: forget (and look again), never grow
            _CLEARED.clear()
        _CLEARED.add(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        named = write_error(exc, path, tmp)  # pydicom's full disk is an OSError without errno, naming no file
        if named is None:
            raise
        raise named from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path, True


def write_instance(root: str | os.PathLike, ds: Any) -> tuple[Path, bool]:
    """Write a pydicom dataset under ``root`` (atomically); ``(path, written)`` - ``False`` when
    the instance was already there (a resumed pull, a re-sent instance)."""
    path = instance_path(root, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    return _write_new(path, lambda fh: ds.save_as(fh, enforce_file_format=True))


def write_raw_instance(root: str | os.PathLike, study_uid: str, series_uid: str, sop_uid: str,
                       data: bytes) -> tuple[Path, bool]:
    """Like :func:`write_instance` for the bytes of a Part 10 file."""
    return _write_new(instance_path(root, study_uid, series_uid, sop_uid), lambda fh: fh.write(data))


def present_instances(root: str | os.PathLike, study_uid: str, series_uid: str) -> set[str]:
    """SOPInstanceUIDs of a series already under ``root``."""
    folder = Path(root) / study_uid / series_uid
    if not folder.is_dir():
        return set()
    return {p.name[:-4] for p in folder.iterdir() if p.suffix == ".dcm" and not p.name.startswith(".")}
