"""Every benchmark script writes its files the way medtl does: to a temporary file renamed into place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
WRITERS = {"write_text", "write_bytes", "savefig"}


def _unsafe_writes(source: str) -> list[str]:
    """Result writes (``Path.write_text``/``write_bytes`` of ``json.dumps``, ``savefig``) whose target is not
    a name bound by ``with atomic_path(...) as NAME``. Scratch files (fuzz cases in a temporary folder) pass."""
    tree = ast.parse(source)
    safe = {item.optional_vars.id for node in ast.walk(tree) if isinstance(node, ast.With)
            for item in node.items if isinstance(item.context_expr, ast.Call)
            and getattr(item.context_expr.func, "id", None) == "atomic_path" and isinstance(item.optional_vars, ast.Name)}
    bad = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        dumps = any(isinstance(n, ast.Attribute) and n.attr == "dumps" for a in node.args for n in ast.walk(a))
        if isinstance(f, ast.Attribute) and (f.attr == "savefig" or f.attr in WRITERS and dumps):
            target = f.value if f.attr != "savefig" else (node.args[0] if node.args else None)
            if not (isinstance(target, ast.Name) and target.id in safe):
                bad.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return bad


def test_the_check_tells_a_plain_write_from_an_atomic_one():
    assert len(_unsafe_writes("out.write_text(json.dumps(r))\nfig.savefig(path)")) == 2
    assert not _unsafe_writes("with atomic_path(out) as tmp:\n    tmp.write_text(json.dumps(r))\n    fig.savefig(tmp)\n")
    assert not _unsafe_writes("case.write_bytes(data)")  # a scratch file, not a result


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_results_are_written_through_a_temporary_file(script):
    assert _unsafe_writes(script.read_text()) == []
