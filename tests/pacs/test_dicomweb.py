"""WADO-RS retrieval against a stand-in client: a stream cut short never leaves a file that looks done."""

from __future__ import annotations

import copy

import pytest

from tests._requires import requires
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

requires("dicomweb_client")

from medtl.pacs.config import PacsConfig, PacsError  # noqa: E402
from medtl.pacs.dicomweb import DicomWebPacs  # noqa: E402
from medtl.pacs.query import SeriesRef, present_instances  # noqa: E402


def _series(n):
    import pydicom

    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    out = []
    for _ in range(n):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = generate_uid()
        out.append(ds)
    return out


class _Stream:
    """The dicomweb-client calls DicomWebPacs.retrieve makes, answering from ``listed`` and ``sent``."""

    def __init__(self, listed, sent):
        self.listed, self.sent = listed, sent

    def search_for_instances(self, **_):
        return [{"00080018": {"Value": [str(ds.SOPInstanceUID)]}} for ds in self.listed]

    def iter_series(self, *_, **__):
        return iter(self.sent)


@pytest.mark.parametrize("cut", ["short", "truncated"])
def test_a_series_stream_cut_short_is_a_failed_pull_and_the_rerun_completes_it(tmp_path, cut):
    """Cut mid-series, the pull reported success and kept a truncated last file under its final name, which
    the re-run then skipped for good."""
    series = _series(4)
    ref = SeriesRef(study_uid=str(series[0].StudyInstanceUID), series_uid=str(series[0].SeriesInstanceUID))
    sent = series[:2]
    if cut == "truncated":  # the multipart stream's last part, cut in its pixel data, still parses
        last = copy.deepcopy(series[2])
        last.PixelData = last.PixelData[:1000]
        sent = [*sent, last]
    pacs = DicomWebPacs(PacsConfig(url="http://127.0.0.1:9/dicom-web"))
    pacs.client = _Stream(series, sent)
    with pytest.raises(PacsError, match=r"(sent 2 of 4 instances|arrived incomplete).*run again"):
        pacs.retrieve(ref, tmp_path)
    assert present_instances(tmp_path, ref.study_uid, ref.series_uid) == {str(ds.SOPInstanceUID) for ds in series[:2]}
    pacs.client = _Stream(series, series)  # the PACS is back: the re-run fetches what is missing
    pacs.client.retrieve_instance = lambda study, series_uid, sop, **_: next(
        ds for ds in series if str(ds.SOPInstanceUID) == sop)
    assert pacs.retrieve(ref, tmp_path) == (2, 2)


def test_a_server_that_ignores_the_qido_offset_is_paged_to_its_end_not_forever():
    """dicomweb-client's get_remaining asked for the next page until one came back empty: a server sending its
    first page whatever the offset kept find() (and every pull) gathering the same results until memory ran out."""
    from medtl.pacs.query import Query

    calls = []

    class _IgnoresOffset:
        def search_for_series(self, offset=0, **_):
            calls.append(offset)
            if len(calls) > 10:
                raise AssertionError("still paging")
            return [{"0020000D": {"Value": ["1.2"]}, "0020000E": {"Value": [f"1.2.{i}"]}} for i in range(3)]

    pacs = DicomWebPacs(PacsConfig(url="http://127.0.0.1:9/dicom-web"))
    pacs.client = _IgnoresOffset()
    assert [s.series_uid for s in pacs.find(Query())] == ["1.2.0", "1.2.1", "1.2.2"]
    assert calls == [0, 3]


def test_a_reply_urllib3_cannot_parse_prints_no_traceback():
    """A multipart reply without a boundary made urllib3 log 'Failed to parse headers' with a traceback on stderr."""
    import io
    import logging

    DicomWebPacs(PacsConfig(url="http://127.0.0.1:9/dicom-web"))
    seen = io.StringIO()
    handler = logging.StreamHandler(seen)
    logger = logging.getLogger("urllib3.connection")
    logger.addHandler(handler)
    try:
        try:
            raise ValueError("NoBoundaryInMultipartDefect")
        except ValueError:
            logger.warning("Failed to parse headers (url=...)", exc_info=True)  # what urllib3 does
    finally:
        logger.removeHandler(handler)
    assert seen.getvalue() == ""


@pytest.mark.timeout(30)  # a stuck retry loop fails here, not at the session's 600 s
def test_a_server_answering_503_to_every_attempt_is_one_line_saying_so(busy_dicomweb):
    """After its retries dicomweb-client raised retrying's 'RetryError[Attempts: 2, Value: <Response [503]>]',
    which medtl passed on as it was."""
    from medtl.pacs.query import Query

    url, _ = busy_dicomweb
    with pytest.raises(PacsError) as err:
        DicomWebPacs(PacsConfig(url=url, retries=1)).find(Query())
    assert "answered HTTP 503 Service Unavailable to all 2 attempts (busy or down? try again later" in str(err.value)
    assert "RetryError" not in str(err.value) and "\n" not in str(err.value)
