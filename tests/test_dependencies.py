"""Every third-party package medtl imports is declared in pyproject.toml, so that its floor is medtl's own
promise and not whatever another dependency happens to allow (Pillow came through scikit-image, whose
floor let in a Pillow that reads a 16-bit PNG as int32)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_modules() -> dict[str, str]:
    """``{module: first file importing it}`` for the absolute, non-stdlib imports in medtl/."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "medtl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "medtl" and top not in sys.stdlib_module_names:
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _declared() -> set[str]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {_canonical(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]) for req in reqs}


def test_every_imported_package_is_declared():
    declared = _declared()
    dists = packages_distributions()
    missing = {}
    for module, where in _imported_top_level_modules().items():
        names = dists.get(module)
        if not names:
            continue  # not installed here (an extra left out): nothing to map the module to
        if not declared & {_canonical(n) for n in names}:
            missing[module] = (names, where)
    assert missing == {}


def test_an_optional_package_that_is_installed_but_broken_fails_instead_of_skipping(tmp_path, monkeypatch):
    """pytest.importorskip skipped every PACS test when highdicom was installed but could not import."""
    from tests._requires import requires

    (tmp_path / "medtl_broken_extra").mkdir()
    (tmp_path / "medtl_broken_extra" / "__init__.py").write_text("import medtl_not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="medtl_not_a_module_anywhere"):
        requires("medtl_broken_extra")
    with pytest.raises(pytest.skip.Exception, match="needs the extra"):
        requires("medtl_absent_extra", reason="needs the extra")
    assert requires("json").dumps([]) == "[]"
