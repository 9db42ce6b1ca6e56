"""C-GET/C-MOVE answers read by DimsePacs, without a PACS: a transfer cut part way is not a set-up problem."""

from __future__ import annotations

import pytest

from tests._requires import requires
from pydicom import Dataset

requires("pynetdicom")

from medtl.pacs.config import PacsConfig, PacsError  # noqa: E402
from medtl.pacs.dimse import DimsePacs  # noqa: E402
from medtl.pacs.query import SeriesRef  # noqa: E402

REF = SeriesRef(study_uid="1.2.3", series_uid="1.2.3.4")


def _status(code):
    ds = Dataset()
    ds.Status = code
    return ds


def test_a_transfer_cut_part_way_is_a_retryable_failure_not_an_unregistered_ae_title():
    pacs = DimsePacs(PacsConfig(host="127.0.0.1", port=11112))
    with pytest.raises(PacsError, match="stopped answering part way through series 1.2.3.4.*run again") as cut:
        pacs._check_final("C-GET", [(_status(0xFF00), None), (Dataset(), None)], REF)
    assert not cut.value.fatal  # the run goes on with the next series
    with pytest.raises(PacsError, match=r"no answer from .* \(registered") as never:
        pacs._check_final("C-GET", [(Dataset(), None)], REF)
    assert never.value.fatal
    assert pacs._check_final("C-GET", [(_status(0xFF00), None), (_status(0x0000), None)], REF) == 0


@pytest.mark.parametrize("action", ["echo", "find"])
def test_a_peer_host_that_does_not_resolve_is_one_pacs_error(action):
    """pynetdicom raises socket.gaierror for a host name it cannot resolve, before any association:
    ``medtl pacs find --via dimse`` with a mistyped host was an internal error."""
    from medtl.pacs import Query

    pacs = DimsePacs(PacsConfig(host="no-such-host.invalid", port=104, called_aet="PACS"))
    call = pacs.echo if action == "echo" else (lambda: pacs.find(Query(modality="CT")))
    with pytest.raises(PacsError, match=r"the DICOM peer PACS@no-such-host.invalid:104 could not be reached "
                                        r"\(.*\); check dimse.host in the PACS config$"):
        call()
