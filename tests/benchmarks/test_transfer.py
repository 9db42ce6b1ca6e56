"""benchmarks/transfer.py: its command line, and the command it records beside its figures."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def tr(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("transfer", ROOT / "benchmarks/transfer.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "transfer", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "MEDMNIST", tmp_path)
    monkeypatch.setattr(mod, "REPO", tmp_path)
    monkeypatch.setattr(mod, "weights_available", lambda arch, weights_dir: False)

    def fake_run(arm, runs_dir, seed, extra):
        return {"arm": arm.name, "dataset": arm.dataset, "arch": arm.arch, "weights": arm.weights,
                "train_fraction": arm.fraction, "seed": seed, "seconds": 12.0, "val_auc": 0.9,
                "test_auc": 0.8, "test_accuracy": 0.7, "test_auc_ci": [0.75, 0.85], "size": [64, 64]}

    monkeypatch.setattr(mod, "run_arm", fake_run)
    return mod


def test_help_exits_cleanly(tr, capsys):
    with pytest.raises(SystemExit) as exc:
        tr.main(["--help"])
    assert exc.value.code == 0
    assert "2% of the data" in capsys.readouterr().out


def test_the_recorded_command_is_the_one_that_ran(tr, tmp_path):
    out = tmp_path / "t.json"
    argv = ["--datasets", "pneumoniamnist", "--fractions", "1.0", "--out", str(out), "--md", "doc.md"]
    tr.main(argv)
    command = f"python benchmarks/transfer.py --datasets pneumoniamnist --fractions 1.0 --out {out} --md doc.md"
    assert json.loads(out.read_text())["command"] == command
    assert f"command: `{command}`" in (tmp_path / "doc.md").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("dataset", ["pneumoniamnist", "adrenalmnist3d"])
def test_each_arm_loads_its_shipped_recipe(dataset, tmp_path, monkeypatch):
    """run_arm trains the recipe the arm names (the recipes ship inside the package, not at the repository root)."""
    spec = importlib.util.spec_from_file_location("transfer_arm", ROOT / "benchmarks/transfer.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "transfer_arm", mod)
    spec.loader.exec_module(mod)
    seen = {}

    class Result:
        metrics = {"test": {"auc": 0.8, "accuracy": 0.7}, "val": {"auc": 0.9}}

    def fake_train(cfg, out, progress):
        seen["cfg"] = cfg
        return Result()

    monkeypatch.setattr("medtl.train.run.train", fake_train)
    arm = mod.make_arms("reduced", [dataset], [0.1], None)[0]
    row = mod.run_arm(arm, tmp_path, 3, ["train.threads=1"])
    cfg = seen["cfg"]
    assert (cfg.train.seed, cfg.train.threads, cfg.data.train_fraction, row["test_auc"]) == (3, 1, 0.1, 0.8)
    assert cfg.preprocess.size == ([64, 64] if dataset == "pneumoniamnist" else [32, 32, 32])
