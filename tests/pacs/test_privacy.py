"""What medtl keeps of the PACS's studies on disk is readable by its own user only."""

from __future__ import annotations

import stat

import pytest

from medtl.errors import MedtlError
from medtl.pacs import Query
from medtl.pacs.config import PacsConfig
from medtl.pacs.workflow import pacs_score


def test_the_folder_of_pulled_studies_is_created_private(tmp_path):
    """``WORK/incoming`` holds whole studies with the patients' names: world-readable (the umask's 0755) in a
    shared /tmp, any local user could read them."""
    with pytest.raises(MedtlError, match="nothing to score"):
        pacs_score(None, PacsConfig(), Query(), tmp_path / "work", pull_first=False, push=False)
    assert stat.S_IMODE((tmp_path / "work" / "incoming").stat().st_mode) == 0o700


def test_an_existing_folder_keeps_the_permissions_it_was_given(tmp_path):
    (tmp_path / "work" / "incoming").mkdir(parents=True)
    (tmp_path / "work" / "incoming").chmod(0o750)  # a team's group folder
    with pytest.raises(MedtlError, match="nothing to score"):
        pacs_score(None, PacsConfig(), Query(), tmp_path / "work", pull_first=False, push=False)
    assert stat.S_IMODE((tmp_path / "work" / "incoming").stat().st_mode) == 0o750
