import numpy as np
import pytest

from medtl.errors import DomainError, ScanError
from medtl.guard import check_scan, family, record_domain
from medtl.io.scan import Scan


def scan(modality="CT", photometric="MONOCHROME2", colour=False, source="x.dcm", spacing=0.7):
    shape = (8, 8, 1, 3) if colour else (8, 8, 1)
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)  # not blank (refused whatever the card)
    return Scan(arr, np.diag([spacing, spacing, 1.0, 1.0]), modality=modality, photometric=photometric,
                format="dicom", source=source)


def test_families_group_projection_xray_and_leave_unknown_unknown():
    assert family("CR") == family("DX") == family("RG") == "X-ray"
    assert family("OT") is None and family("") is None and family(None) is None
    assert family("US") == "ultrasound" and family("ZZ") == "ZZ"


def test_recorded_domain_from_headers_and_from_the_config():
    d = record_domain([scan(), scan(spacing=0.9)], spatial_dims=2, channels=1)
    assert d["modalities"] == ["CT"] and d["families"] == ["CT"] and d["photometric"] == ["gray"]
    assert d["pixel_spacing_mm"] == pytest.approx([0.7, 0.9]) and d["source"] == "headers"
    arrays = [Scan(np.zeros((8, 8)), np.eye(4), format="array")]
    d2 = record_domain(arrays, spatial_dims=2, channels=1, declared_modality="DX", declared_body_part="chest")
    assert d2["families"] == ["X-ray"] and d2["body_parts"] == ["CHEST"] and d2["pixel_spacing_mm"] is None
    assert d2["source"] == "config"


def test_other_modality_is_refused_naming_both_sides_and_the_override():
    d = record_domain([scan()], 2, 1)
    with pytest.raises(DomainError) as err:
        check_scan(d, scan("US", source="US1_UNCR.dcm"))
    msg = str(err.value)
    assert isinstance(err.value, ScanError) and "\n" not in msg
    assert "US1_UNCR.dcm" in msg and "model trained on CT, this is ultrasound" in msg
    assert "--allow-other-domain" in msg


def test_same_family_passes_and_unknown_modality_is_noted_not_refused():
    d = record_domain([scan("DX")], 2, 1)
    assert check_scan(d, scan("CR")) == []
    notes = check_scan(d, scan("OT"))
    assert notes and "modality unknown" in notes[0]


def test_colour_for_a_gray_model_is_refused():
    d = record_domain([scan()], 2, 1)
    with pytest.raises(DomainError, match="trained on gray images, this one is colour"):
        check_scan(d, scan("OT", photometric="RGB", colour=True))


def test_an_old_card_without_domain_checks_nothing_and_says_so():
    notes = check_scan(None, scan("US"))
    assert "records no training domain" in notes[0]


@pytest.mark.parametrize("value", [0.0, 255.0, -1024.0])
def test_a_blank_scan_is_refused_whatever_the_card_records(value):
    """A constant image has nothing to classify, and its features sit near the training mean, so the
    out-of-distribution score passed one as 'within the training distribution'."""
    blank = scan("CT")
    blank.array[:] = value
    for domain in (record_domain([scan()], 2, 1), None):
        with pytest.raises(DomainError, match="x.dcm: every voxel has the same value .*--allow-other-domain"):
            check_scan(domain, blank)
    assert check_scan(None, scan("CT"))  # one different voxel is enough: only the note of an old card
