"""The training domain a model card records, and the hard checks every prediction passes first.

Recorded from the headers of a sample of training scans (``modality``, photometric
interpretation, body part, spatial dims, channels, pixel spacing) plus what the config
declares for sources without headers (``data.modality`` for PNG folders or MedMNIST
``.npz``). A scan is refused when its header says something the model never saw:

- a modality of another family ("model trained on CT, this is US"): CR/DX/RG/DR are one
  family (projection X-ray), as are PT/NM, and OP/XC (photographs of the eye);
- colour pixels for a model trained on grayscale (or the reverse);
- the wrong number of spatial dimensions (the preprocessing refuses this already);
- a blank scan (every voxel the same value): nothing to classify, and its features sit near the
  training mean, so the out-of-distribution score does not flag it reliably.

An unknown modality (``OT``, PNG, a NIfTI without medtl's note) cannot be checked here;
the out-of-distribution score (:mod:`medtl.guard.ood`) still applies. Every refusal names
both sides and the override (``--allow-other-domain`` / ``allow_other_domain=True``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from medtl.errors import BlankScanError, DomainError
from medtl.io.scan import Scan

__all__ = ["FAMILIES", "OVERRIDE_HINT", "check_header", "check_scan", "family", "is_blank", "photometric_kind",
           "record_domain"]

#: Modality codes that mean the same kind of image for the checks.
FAMILIES = {
    "CR": "X-ray", "DX": "X-ray", "RG": "X-ray", "DR": "X-ray", "XR": "X-ray", "MG": "mammography",
    "CT": "CT", "MR": "MR", "US": "ultrasound", "PT": "PET/NM", "NM": "PET/NM", "XA": "angiography",
    "RF": "fluoroscopy", "OP": "eye photograph", "XC": "eye photograph", "OPT": "OCT", "SM": "microscopy",
}
UNKNOWN = ("", "OT", "UNKNOWN")
OVERRIDE_HINT = "use --allow-other-domain (allow_other_domain=True) to predict anyway"


def family(modality: str | None) -> str | None:
    """The family name of a DICOM modality code, ``None`` when unknown."""
    m = (modality or "").strip().upper()
    if m in UNKNOWN:
        return None
    return FAMILIES.get(m, m)


def photometric_kind(scan: Scan) -> str:
    """``"gray"`` or ``"colour"`` from the pixels' channels and photometric interpretation."""
    colour = scan.array.ndim == 4 and scan.array.shape[-1] >= 3
    return "colour" if colour or not str(scan.photometric).upper().startswith("MONOCHROME") else "gray"


def is_blank(scan: Scan) -> bool:
    """Whether every voxel (and channel) of ``scan`` has the same value: an empty export, a black frame."""
    a = np.asarray(scan.array)
    return bool(a.size == 0 or a.min() == a.max())


def record_domain(scans: Iterable[Scan], spatial_dims: int, channels: int, declared_modality: str | None = None,
                  declared_body_part: str | None = None) -> dict[str, Any]:
    """The ``domain`` entry of a model card from a sample of training scans."""
    modalities: Counter = Counter()
    body_parts: Counter = Counter()
    kinds: Counter = Counter()
    spacings = []
    n = from_headers = 0
    for scan in scans:
        n += 1
        from_headers += bool(family(scan.modality))
        m = scan.modality if family(scan.modality) else declared_modality
        if family(m):
            modalities[str(m).upper()] += 1
        part = scan.metadata.get("body_part") or declared_body_part
        if part:
            body_parts[str(part).upper()] += 1
        kinds[photometric_kind(scan)] += 1
        if scan.format != "array":  # arrays carry no geometry (their affine is the identity)
            spacings.append(scan.spacing[:2])
    if n == 0 and declared_modality:
        modalities[declared_modality.upper()] += 1
    sp = np.asarray(spacings, dtype=np.float64)
    return {
        "modalities": sorted(modalities), "families": sorted({family(m) for m in modalities}),
        "body_parts": sorted(body_parts), "photometric": sorted(kinds),
        "spatial_dims": int(spatial_dims), "channels": int(channels),
        "pixel_spacing_mm": [float(sp.min()), float(sp.max())] if sp.size else None,
        "n_scans_read": n,
        "source": "headers" if from_headers else ("config" if declared_modality else "unknown"),
    }


def check_scan(domain: dict[str, Any] | None, scan: Scan, where: str | None = None) -> list[str]:
    """Refuse ``scan`` (:class:`~medtl.errors.DomainError`) when its header contradicts ``domain``.

    Returns notes on what could not be checked (e.g. an unknown modality), for the prediction's
    record. ``domain`` ``None`` (a model card from before domains were recorded) checks nothing.
    """
    return check_header(domain, scan.modality, photometric_kind(scan), where or scan.source or "this scan",
                        scan.photometric, blank=is_blank(scan))


def check_header(domain: dict[str, Any] | None, modality: str | None, kind: str, where: str,
                 photometric: str = "", blank: bool = False) -> list[str]:
    """:func:`check_scan` from the header facts alone (what batch workers send back), plus ``blank``
    (:func:`is_blank`), which is refused whatever the card records."""
    if blank:
        raise BlankScanError(where, "every voxel has the same value (a blank image): there is nothing to classify",
                             OVERRIDE_HINT)
    if not domain:
        return ["the model card records no training domain (trained before medtl 0.2): no header checks"]
    notes = []
    trained = [f for f in domain.get("families", []) if f]
    fam = family(modality)
    if fam is None:
        notes.append("modality unknown (no header): not checked against the training domain")
    elif trained and fam not in trained:
        raise DomainError(where, f"model trained on {' / '.join(trained)}, this is {fam} (modality {modality})",
                          OVERRIDE_HINT)
    kinds = domain.get("photometric") or []
    if kinds and kind not in kinds:
        detail = f" ({photometric})" if photometric else ""
        raise DomainError(where, f"model trained on {' / '.join(kinds)} images, this one is {kind}{detail}",
                          OVERRIDE_HINT)
    return notes
