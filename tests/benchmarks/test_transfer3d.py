"""benchmarks/transfer3d.py's bookkeeping: merging pieces run separately, and the verdict it writes."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def t3d():
    spec = importlib.util.spec_from_file_location("transfer3d", ROOT / "benchmarks/transfer3d.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(arm: str, seed: int, test: float, val: float, epochs: int = 3, ds: str = "adrenal64") -> dict:
    return {"dataset": ds, "arm": arm, "seed": seed, "epochs": epochs, "val_auc": val, "test_auc": test,
            "test_acc": 0.7, "best_epoch": 2, "seconds": 10.0, "inflate": arm.split("/")[0]}


def _meta(command: str, epochs: int = 3) -> dict:
    return {"command": command, "setting": "reduced", "epochs": epochs, "seeds": [0, 1, 2], "extra": [],
            "base": "x.yaml", "machine": "host, cpu", "minutes": 1.0, "dry_run": False}


def _write(path: Path, runs: list[dict], meta: dict) -> Path:
    path.write_text(json.dumps({"meta": meta, "runs": runs}))
    return path


def test_merge_combines_pieces_and_later_runs_replace_earlier(t3d, tmp_path):
    a = _write(tmp_path / "a.json", [_run("i3d/imagenet", s, 0.80 + s / 100, 0.9) for s in range(3)], _meta("A"))
    b = _write(tmp_path / "b.json", [_run("3d/scratch", s, 0.60, 0.6) for s in range(3)]
               + [_run("i3d/imagenet", 0, 0.90, 0.9)], _meta("B"))
    metas, runs = t3d.merge([a, b])
    assert [m["command"] for m in metas] == ["A", "B"]
    summary = t3d.summarise(runs)["adrenal64@3"]
    assert summary["i3d/imagenet"]["n"] == 3 and summary["3d/scratch"]["n"] == 3
    assert summary["i3d/imagenet"]["test_auc_mean"] == pytest.approx((0.90 + 0.81 + 0.82) / 3)
    text = t3d.markdown(t3d.summarise(runs), metas)
    assert "`a.json`, from `A`" in text and "`b.json`, from `B`" in text
    assert "**i3d/imagenet**" in text and "more than the larger seed sd" in text and "beats the published" in text


def test_one_dataset_at_two_budgets_becomes_two_columns_never_one(t3d, tmp_path):
    a = _write(tmp_path / "a.json", [_run("i3d/imagenet", 0, 0.80, 0.8, epochs=3),
                                     _run("3d/scratch", 0, 0.50, 0.6, epochs=3)], _meta("A"))
    b = _write(tmp_path / "b.json", [_run("i3d/imagenet", 0, 0.88, 0.9, epochs=6),
                                     _run("3d/scratch", 0, 0.60, 0.6, epochs=6)], _meta("B", 6))
    metas, runs = t3d.merge([a, b])
    assert len(runs) == 4  # the 6-epoch run does not replace the 3-epoch one of the same seed
    summary = t3d.summarise(runs)
    assert list(summary) == ["adrenal64@3", "adrenal64@6"]
    assert summary["adrenal64@6"]["i3d/imagenet"]["test_auc_mean"] == pytest.approx(0.88)
    text = t3d.markdown(summary, metas)
    assert "AdrenalMNIST3D 64³, 3 epochs: test AUC" in text and "AdrenalMNIST3D 64³, 6 epochs: test AUC" in text
    assert "| 0.828 (ACC 0.745; published) | 0.828 (ACC 0.745; published) |" in text
    v3, v6 = t3d.verdicts(summary)
    assert "3 epochs" in v3 and "+0.300" in v3 and "6 epochs" in v6 and "+0.280" in v6


def test_verdict_says_when_imagenet_loses_and_misses_the_bar(t3d):
    runs = [_run("i3d/imagenet", s, 0.60 + s / 100, 0.7) for s in range(3)] + \
           [_run("3d/scratch", s, 0.70, 0.6) for s in range(3)]
    (line,) = t3d.verdicts(t3d.summarise(runs))
    assert "scratch arm is better by 0.090" in line and "does not beat the published" in line


def test_partial_file_of_an_interrupted_run_merges_and_says_so(t3d, tmp_path):
    out = tmp_path / "t.json"
    t3d._save_partial(out, _meta("P"), [_run("i3d/imagenet", 0, 0.8, 0.8), _run("3d/scratch", 0, 0.6, 0.6)])
    partial = out.with_suffix(".partial.json")
    metas, runs = t3d.merge([partial])
    assert metas[0]["partial"] is True and len(runs) == 2
    assert "interrupted" in t3d.markdown(t3d.summarise(runs), metas)


def test_cells_with_fewer_seeds_than_the_table_say_so(t3d):
    runs = [_run("i3d/imagenet", s, 0.8, 0.8) for s in range(3)] + [_run("3d/scratch", 0, 0.6, 0.6)]
    text = t3d.markdown(t3d.summarise(runs), [_meta("A")])
    assert "| 0.800 ± 0.000 (0.800) |" in text and "| 0.600 (0.600, 1 of 3 seeds) |" in text
    assert "+0.200 AUC (scratch arm: one seed, no sd)" in text and "larger seed sd" not in text


def test_verdict_names_the_seed_count_when_the_winner_has_fewer_seeds(t3d):
    runs = [_run("i3d/imagenet", s, 0.8, 0.8) for s in range(3)] + [_run("acs/imagenet", 0, 0.85, 0.9)] + \
           [_run("3d/scratch", s, 0.6, 0.6) for s in range(3)]
    (line,) = t3d.verdicts(t3d.summarise(runs))
    assert "**acs/imagenet** (1 of 3 seeds; test 0.850)" in line
    assert "its scratch arm (acs/scratch) was not run" in line
    runs = [_run("i3d/imagenet", s, 0.8, 0.95) for s in range(3)] + [_run("acs/imagenet", 0, 0.85, 0.9)]
    (line,) = t3d.verdicts(t3d.summarise(runs))
    assert "**i3d/imagenet** (test 0.800 ± 0.000)" in line


def test_the_merge_command_in_the_docs_reproduces_the_committed_section(t3d):
    doc = (ROOT / "docs/benchmarks.md").read_text()
    command = doc.split("the table above is\n  `python benchmarks/transfer3d.py --merge ", 1)[1].split("`", 1)[0]
    files = [f for pattern in command.split() for f in sorted(ROOT.glob(pattern))]  # as the shell expands it
    metas, runs = t3d.merge(files)
    committed = doc.split(t3d.START + "\n", 1)[1].split(t3d.END, 1)[0]
    assert t3d.markdown(t3d.summarise(runs), metas) == committed


def test_the_recorded_command_can_be_pasted_into_a_shell(t3d, tmp_path, monkeypatch):
    monkeypatch.setattr(t3d, "run_one", lambda base, ds, arm, seed, epochs, extra, work, dry: _run(arm, seed, 0.7, 0.8, epochs, ds))
    out = tmp_path / "t.json"
    argv = ["--datasets", "adrenal28", "--arms", "i3d/imagenet", "--seeds", "0", "--epochs", "1",
            "--set", "name=a b;c", "--work-dir", str(tmp_path), "--out", str(out), "--doc", str(tmp_path / "d.md")]
    t3d.main(argv)
    command = json.loads(out.read_text())["meta"]["command"]
    assert shlex.split(command)[2:] == argv
