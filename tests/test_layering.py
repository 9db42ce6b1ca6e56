"""The architecture, checked: the CLI parses without torch, prediction never loads the training
stack, and lower parts never import higher ones."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "medtl"

#: Each part and the parts it may import (below it). ``runs``/``config`` sit between the parts and the CLI.
ALLOWED = {
    "errors": set(), "_fileutil": set(), "_logutil": set(), "_lazy": set(), "_schema": {"errors"}, "_forkserver": set(),
    "_recipes": {"errors"},
    "io": {"errors", "_fileutil", "_logutil", "_paths"},
    "transforms": {"errors", "_fileutil", "_lazy", "_schema", "io", "models"},  # each model ships its normalisation
    "models": {"errors", "_fileutil", "_lazy", "_schema", "_paths"},
    "data": {"errors", "_fileutil", "_lazy", "_schema", "io", "transforms"},
    "explain": {"errors", "_fileutil", "io", "transforms", "models"},
    "guard": {"errors", "_fileutil", "io"},
    "runs": {"errors", "_fileutil", "models", "transforms"},
    "config": {"errors", "_fileutil", "_schema", "_recipes", "data", "transforms", "models", "train"},
    "train": {"errors", "_fileutil", "_schema", "io", "transforms", "models", "data", "runs", "config", "explain",
              "guard"},
    "infer": {"errors", "_fileutil", "_forkserver", "io", "transforms", "models", "explain", "runs", "guard"},
    "demo": {"errors", "_fileutil", "_paths", "io", "transforms", "models", "data", "explain", "runs", "config",
             "train", "infer", "guard"},
    "app": {"errors", "_fileutil", "_forkserver", "io", "transforms", "models", "explain", "runs", "infer", "demo", "guard",
            "pacs"},
    "pacs": {"errors", "_fileutil", "io", "runs", "infer", "explain", "guard"},
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "medtl" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_lower_parts_never_import_higher_ones(part):
    files = sorted((PKG / part).rglob("*.py")) if (PKG / part).is_dir() else [PKG / f"{part}.py"]
    assert files and all(f.is_file() for f in files), part
    bad = []
    for f in files:
        for mod in _imports(f):
            other = _part(mod)
            if other and other != part and other not in ALLOWED[part] and other != "__version__":
                bad.append(f"{f.relative_to(PKG.parent)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_nothing_below_the_cli_imports_the_ui():
    offenders = [str(f.relative_to(PKG.parent)) for f in PKG.rglob("*.py")
                 if f.parent.name != "app" and f.name != "cli.py"
                 and any(m == "gradio" or m.startswith(("gradio.", "medtl.app")) for m in _imports(f))]
    assert not offenders


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_parsing_help_and_version_loads_no_torch_or_monai():
    out = _run("import sys, json, contextlib, io\n"
               "from medtl.cli import build_parser\n"
               "p = build_parser()\n"
               "for argv in (['--help'], ['--version'], ['train', '--help'], ['score', '--help']):\n"
               "    with contextlib.redirect_stdout(io.StringIO()):\n"
               "        try: p.parse_args(argv)\n"
               "        except SystemExit: pass\n"
               "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'gradio'))))")
    assert out == []


def test_listing_and_printing_recipes_loads_no_torch_or_monai():
    out = _run("import sys, json, contextlib, io\n"
               "from medtl.cli import main\n"
               "with contextlib.redirect_stdout(io.StringIO()):\n"
               "    assert main(['configs']) == main(['configs', 'sample_tiny']) == 0\n"
               "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'gradio'))))")
    assert out == []


def test_the_weights_commands_load_no_monai():
    """``medtl weights`` needs only medtl.models.weights: the architectures (MONAI) load on first use."""
    out = _run("import sys, json, contextlib, io\n"
               "from medtl.cli import main\n"
               "with contextlib.redirect_stdout(io.StringIO()):\n"
               "    assert main(['weights', 'list']) == 0\n"
               "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('monai', 'gradio')})))")
    assert out == []


def test_prediction_never_loads_the_training_stack(tmp_path):
    from .conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    out = _run("import sys, json, numpy as np\n"
               "from medtl.infer import Predictor\n"
               "x = np.arange(1600, dtype=np.float32).reshape(40, 40)\n"  # not blank: a blank image is refused
               f"p = Predictor.from_run({str(run)!r}, device='cpu').predict(x)\n"
               "assert abs(sum(p.probabilities.values()) - 1) < 1e-9\n"
               "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('medtl.train', 'medtl.data', "
               "'medtl.config', 'medtl.app', 'gradio')))))")
    assert out == []
