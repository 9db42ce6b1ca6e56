"""The browser app for clinicians (Gradio): upload a scan, scroll and window it, see the
prediction, the decision at the model card's threshold and the saliency overlay.

- :mod:`medtl.app.app`: the page (:func:`build_app`, :func:`launch`, :func:`serve`);
- :mod:`medtl.app.viewer`: what is drawn (planes, windows, overlays), pure functions;
- :mod:`medtl.app.uploads`: checks on what a browser sends (archives, NIfTI sizes).

Started by ``medtl app --model RUN`` or ``python apps/medtl_app.py --model RUN``.
Gradio is imported only when the page is built (``pip install 'medtl[app]'``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_app", "launch", "model_choices", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy, so `medtl.app.viewer` and `medtl.app.uploads` import without Gradio.
    if name in __all__:
        from medtl.app import app

        return getattr(app, name)
    raise AttributeError(f"module 'medtl.app' has no attribute {name!r}")
