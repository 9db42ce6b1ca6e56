"""A benchmark script never replaces an ``--out`` file that is not a JSON it wrote itself
(``benchmarks/_common.py``), and its JSON says which script wrote it."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_script_rewrites_its_own_json(tmp_path):
    c = _common()
    out = tmp_path / "sub" / "r.json"
    c.write_result(out, {"x": 1}, "benchmarks/a.py")
    c.write_result(out, {"x": 2}, "benchmarks/a.py")
    assert json.loads(out.read_text()) == {"script": "benchmarks/a.py", "x": 2}
    assert list(out.parent.iterdir()) == [out]  # no temporary file left beside it


@pytest.mark.parametrize("content, why", [
    ('{"script": "benchmarks/b.py", "x": 1}', "it was written by benchmarks/b.py"),
    ('{"x": 1}', "it is not a JSON written by benchmarks/a.py"),
    ('{"script": "two\\nlines"}', "it is not a JSON written by benchmarks/a.py"),  # never echoed: one line
    ('[1, 2]', "it is not a JSON written by benchmarks/a.py"),
    ("patient notes, not JSON", "it is not a JSON written by benchmarks/a.py"),
    (b"\xff\xfe\x00binary", "it is not a JSON written by benchmarks/a.py"),
])
def test_any_other_file_is_kept_with_one_line_saying_why(tmp_path, content, why):
    c = _common()
    out = tmp_path / "r.json"
    (out.write_bytes if isinstance(content, bytes) else out.write_text)(content)
    before = out.read_bytes()
    with pytest.raises(SystemExit) as exc:
        c.write_result(out, {"x": 2}, "benchmarks/a.py")
    assert str(exc.value) == (f"benchmarks/a.py: refusing to replace {out}: {why}; "
                              "choose another --out or move that file away")
    assert out.read_bytes() == before and list(tmp_path.iterdir()) == [out]


def test_a_folder_or_a_link_is_not_replaced(tmp_path):
    c = _common()
    (tmp_path / "d.json").mkdir()
    target = tmp_path / "t.json"
    target.write_text('{"script": "benchmarks/a.py"}')
    (tmp_path / "l.json").symlink_to(target)
    for name in ("d.json", "l.json"):
        with pytest.raises(SystemExit, match="it is not a plain file"):
            c.refuse_foreign(tmp_path / name, "benchmarks/a.py")


def test_every_script_with_an_out_file_checks_it_before_its_work():
    missing = []
    for script in SCRIPTS:
        tree = ast.parse(script.read_text())
        has_out = any(isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "add_argument"
                      and n.args and isinstance(n.args[0], ast.Constant) and n.args[0].value == "--out"
                      and script.name != "medmnist.py"  # its `run --out` is a folder for a re-timed run
                      for n in ast.walk(tree))
        calls = {getattr(n.func, "id", None) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        if has_out and "refuse_foreign" not in calls:
            missing.append(script.name)
    assert missing == []


def test_the_committed_jsons_name_the_script_that_writes_them():
    """So that re-running a script with ``--out`` onto its committed result is allowed."""
    for path in (ROOT / "benchmarks" / "results").rglob("*.json"):
        data = json.loads(path.read_text())
        script = data.get("script") if isinstance(data, dict) else None
        if script is not None:
            assert (ROOT / script).is_file(), path
    for name, script in {"hostile": "bench_hostile.py", "pacs": "bench_pacs.py", "ood": "ood.py",
                         "medmnist_selection": "selection.py"}.items():  # the scripts' default --out
        assert json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())["script"] == \
            f"benchmarks/{script}"


def test_a_script_refuses_before_it_measures_anything(tmp_path):
    out = tmp_path / "notes.json"
    out.write_text("mine")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_cli.py"), "--repeat", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and out.read_text() == "mine"
    assert r.stderr.strip() == (f"benchmarks/bench_cli.py: refusing to replace {out}: it is not a JSON written by "
                                "benchmarks/bench_cli.py; choose another --out or move that file away")
    assert r.stdout == ""
