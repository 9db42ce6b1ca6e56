"""What the served app lets out of the hospital's server: no telemetry to Gradio's servers unless asked for,
no upload or picture readable by the server's other users."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import pytest

from medtl.app.uploads import WORKDIR_PREFIX


@pytest.mark.parametrize("env, expected", [(None, False), ("False", False), ("True", True)])
def test_gradio_telemetry_is_off_unless_the_administrator_turns_it_on(run2d, monkeypatch, env, expected):
    from medtl.app.app import build_app

    if env is None:
        monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    else:
        monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", env)
    assert build_app({"tiny2d": run2d}, device="cpu").analytics_enabled is expected


def _readable_by_others(path: Path) -> bool:
    """Whether another local user can reach ``path``: every folder above it must let others through."""
    for folder in path.parents:
        if folder == Path(tempfile.gettempdir()):
            return True
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def test_uploads_and_pictures_are_cached_where_only_the_server_user_can_read(run2d, monkeypatch):
    """Gradio's default cache, <tmp>/gradio, is world-readable and keeps uploads under their own names (often the
    patient's): the app's copies go into its own private working folder instead, removed when it stops."""
    from gradio.utils import get_upload_folder

    from medtl.app.app import build_app

    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    build_app({"tiny2d": run2d}, device="cpu")
    cache = Path(get_upload_folder())
    assert cache.name == "gradio" and cache.parent.name.startswith(WORKDIR_PREFIX) and cache.is_dir()
    assert not _readable_by_others(cache / "DOE^JOHN_1961.dcm")
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700


def test_an_administrators_gradio_cache_is_kept(run2d, monkeypatch, tmp_path):
    from gradio.utils import get_upload_folder

    from medtl.app.app import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "mine"))
    build_app({"tiny2d": run2d}, device="cpu")
    assert get_upload_folder() == str(tmp_path / "mine")


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("10.1.2.3", True), ("127.0.0.1", False),
                                          ("localhost", False), ("::1", False)])
def test_serving_beyond_this_machine_says_the_page_has_no_login(monkeypatch, capsys, host, warned):
    """Bound wider, anyone who reaches the port uses the page (and, with a PACS configured, searches and opens
    the PACS's studies with medtl's credentials): `medtl app` says so, as `medtl listen` does."""
    from medtl.app import app as app_mod

    monkeypatch.setattr(app_mod, "model_choices", lambda specs: {})
    from types import SimpleNamespace

    monkeypatch.setattr(app_mod, "build_app", lambda *a, **k: SimpleNamespace(block_thread=lambda: None))
    monkeypatch.setattr(app_mod, "launch", lambda *a, **k: None)  # serve() then blocks in block_thread
    monkeypatch.setattr(app_mod, "_stop_on_sigterm", lambda: None)
    assert app_mod.serve(["runs/x"], host=host, port=7860) == 0
    err = capsys.readouterr().err
    assert ("has no login: anyone who can reach" in err) is warned
