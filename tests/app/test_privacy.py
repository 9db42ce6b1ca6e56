"""What the served app lets out of the hospital's server: no telemetry to Gradio's servers unless asked for."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("env, expected", [(None, False), ("False", False), ("True", True)])
def test_gradio_telemetry_is_off_unless_the_administrator_turns_it_on(run2d, monkeypatch, env, expected):
    from medtl.app.app import build_app

    if env is None:
        monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    else:
        monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", env)
    assert build_app({"tiny2d": run2d}, device="cpu").analytics_enabled is expected
