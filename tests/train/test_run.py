"""End-to-end runs on the built-in sample cohort with a tiny setting (seconds on a CPU)."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medtl.cli import main
from medtl.config import load_config
from medtl.errors import ConfigError, MedtlError
from medtl.runs import load_run
from medtl.train.run import evaluate, train

from ..conftest import TINY_2D

TINY = list(TINY_2D)


def tiny_cfg(*extra):
    return load_config("sample_tiny", [*TINY, *extra])


@pytest.fixture(scope="module")
def tiny_run(tiny_run_2d):
    """The shared 2D tiny run (trained once per session, also served by the app tests)."""
    return tiny_run_2d


def test_run_directory_has_model_card_metrics_and_plots(tiny_run):
    card = json.loads((tiny_run / "model_card.json").read_text())
    test = card["metrics"]["test"]
    assert 0.0 <= test["auc"] <= 1.0 and 0.0 <= test["accuracy"] <= 1.0
    assert test["ci"]["auc"][0] <= test["auc"] <= test["ci"]["auc"][1]
    assert card["class_names"] == ["0", "1"] or len(card["class_names"]) == 2
    assert card["model"]["arch"] == "resnet18" and card["preprocessing"]["size"] == [32, 32]
    assert card["training"]["data"]["counts"]["train"]  # data summary
    assert "diagnosis" in card["intended_use"]
    for rel in card["files"]["plots"].values():
        assert (tiny_run / rel).stat().st_size > 1000
    rows = list(csv.DictReader(open(tiny_run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_auc" in rows[0]
    assert (tiny_run / "predictions_test.csv").exists()


def test_model_card_preprocessing_gives_bit_identical_inputs(tiny_run):
    from medtl.data import load_items
    from medtl.transforms import Preprocessing

    cfg = tiny_cfg()
    train_side = Preprocessing.from_config(cfg.preprocess).transforms()  # what validation/test used
    _, _, prep = load_run(tiny_run)
    item = load_items(cfg.data).split("test")[0]
    a = train_side({"image": item["image"]})["image"]
    b = prep(item["image"])
    assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)


def test_loaded_run_reproduces_test_predictions(tiny_run):
    model, card, prep = load_run(tiny_run)
    rows = list(csv.DictReader(open(tiny_run / "predictions_test.csv")))
    with torch.no_grad():
        p = torch.softmax(model(prep(rows[0]["image"])[None]), 1)[0].numpy()
    expected = [float(rows[0][f"p_{c}"]) for c in card["class_names"]]
    np.testing.assert_allclose(p, expected, atol=1e-5)


@pytest.mark.parametrize("extra", [["train.strategy=gradual"], ["train.strategy=full", "train.ema=0.9", "train.head_warmup=0.5", "train.mixup=0.4"],
                                   ["train.strategy=full", "train.swa=1", "train.cutmix=1.0"], ["train.strategy=full", "train.soup=2"]])
def test_resume_after_epoch_one_equals_uninterrupted(tmp_path, extra):
    cfg = tiny_cfg("augment.rotate_deg=10", "data.cache=none", *extra)
    train(cfg, tmp_path / "full", progress=False)
    train(cfg, tmp_path / "resumed", progress=False, max_epochs_this_run=1)
    assert not (tmp_path / "resumed" / "model_card.json").exists()
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    assert a.keys() == b.keys()
    for part in [p for p in ("model", "ema", "swa") if p in a]:
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    if "train.soup=2" in extra:  # the kept epochs travel in last.pt
        assert [e["epoch"] for e in a["soup"]] == [e["epoch"] for e in b["soup"]]
        assert all(torch.equal(x["weights"][k], y["weights"][k]) for x, y in zip(a["soup"], b["soup"]) for k in x["weights"])
    if "train.swa=1" in extra or "train.soup=2" in extra:  # the average is the run's model, resumed or not
        training = json.loads((tmp_path / "resumed" / "model_card.json").read_text())["training"]
        fa, fb = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("full", "resumed"))
        assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
        if "train.swa=1" in extra:
            assert training["swa"]["epochs_averaged"] == 2 and training["best_epoch"] == 2
            assert not all(torch.equal(fa[k], a["model"][k]) for k in fa if fa[k].is_floating_point())
        else:
            assert set(training["soup"]["epochs"]) <= {1, 2} and training["soup"]["considered"]


def test_resume_removes_the_half_written_files_of_a_killed_run_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg("train.epochs=2"), out, progress=False, max_epochs_this_run=1)
    stale = [out / "checkpoints" / ".last.pt.wtf8y7df.tmp.pt", out / ".model.safetensors.ab_1c2d3.tmp.safetensors"]
    kept = [out / "checkpoints" / ".notes.tmp", out / ".last.pt.wtf8y7df.tmp.txt", out / "checkpoints" / "mine.tmp.pt"]
    for p in stale + kept:
        p.write_bytes(b"x")
    threads = torch.get_num_threads()
    try:
        train(tiny_cfg("train.epochs=2", "train.threads=1"), out, resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [p.exists() for p in stale + kept] == [False] * len(stale) + [True] * len(kept)
    training = json.loads((out / "model_card.json").read_text())["training"]  # what a rerun must match
    assert (training["seed"], training["threads"], training["device"], training["torch"], training["loader_workers"]) \
        == (0, 1, "cpu", torch.__version__, 0)
    import monai
    import platform

    from medtl.data import load_items

    assert (training["monai"], training["numpy"], training["python"]) == (
        monai.__version__, np.__version__, platform.python_version())
    cfg = tiny_cfg()
    assert training["data"]["fingerprint"] == load_items(cfg.data, seed=cfg.train.seed).fingerprint()
    settings = training["settings"]  # the recipe travels in the card, not only in config.yaml beside it
    assert settings["train"]["threads"] == 1 and settings["train"]["head_warmup"] == 0.0
    assert set(settings["model"]) == {"dropout", "drop_path", "kwargs"}


@pytest.mark.parametrize("name", ["config.yaml", "metrics.csv"])
def test_train_never_replaces_a_file_in_a_folder_that_is_not_a_run(tmp_path, name):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("my own notes\n")
    with pytest.raises(MedtlError, match=rf"^{out / name}: exists in a folder that is not a medtl run; refusing"):
        train(tiny_cfg(), out, progress=False)
    assert [p.name for p in out.iterdir()] == [name] and (out / name).read_text() == "my own notes\n"
    with pytest.raises(MedtlError, match=rf"^{out / name}: is a file, not a folder; choose another --out"):
        train(tiny_cfg(), out / name, progress=False)


def test_refuses_to_overwrite_a_run_without_resume(tiny_run):
    from medtl.errors import MedtlError

    with pytest.raises(MedtlError, match="--resume"):
        train(tiny_cfg(), tiny_run, progress=False)


def test_evaluate_other_site_and_cli(tiny_run, tmp_path, capsys):
    m = evaluate(tiny_run, overrides=["data.filter.site=B"], split="test", out=str(tmp_path / "ev"), progress=False)
    assert m["n"] == 8 and (tmp_path / "ev" / "metrics.json").exists()
    # the confusion matrix's rows and columns are named (with more classes, no reader could guess their order)
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["class_names"] == ["0", "1"] and len(saved["confusion_matrix"]) == 2
    out = tmp_path / "cli"  # the session's shared run folder is not written into
    assert main(["evaluate", "--model", str(tiny_run), "--json", "--out", str(out), "data.filter.site=B"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 8 and (out / "metrics.json").is_file()


def test_evaluate_draws_its_plots_at_a_threshold_of_zero_as_its_metrics_take_it(tiny_run, tmp_path, monkeypatch):
    """A card's threshold 0.0 (eval.threshold=0 is allowed) became 0.5 in the plots (``or 0.5``), so the confusion
    matrix drawn disagreed with the one in metrics.json."""
    from medtl.train import plots

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("evaluations"))
    card = json.loads((run / "model_card.json").read_text())
    (run / "model_card.json").write_text(json.dumps({**card, "threshold": 0.0}))
    drawn = []
    monkeypatch.setattr(plots, "save_evaluation_plots", lambda *a, threshold, **k: drawn.append(threshold) or {})
    m = evaluate(run, out=str(tmp_path / "ev"), progress=False, bootstrap=0)
    assert drawn == [0.0] and m["threshold"] == 0.0 and m["sensitivity"] == 1.0 and m["specificity"] == 0.0


def test_a_config_changed_without_validation_is_refused_before_training(tmp_path):
    """``model_copy(update=...)`` skips pydantic's checks: a negative rate reached the optimiser."""
    cfg = tiny_cfg()
    bad = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": -1.0})})
    with pytest.raises(ConfigError, match=r"^train\.lr: Input should be greater than 0"):
        train(bad, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_an_override_it_would_not_read(tiny_run, tmp_path, capsys):
    """The card fixes the threshold and preprocessing: ``eval.threshold=0.3`` was dropped without a word,
    its metrics looking like the threshold's. ``augment.*`` is read only with test-time views on."""
    for item in ("eval.threshold=0.3", "preprocess.window=lung", "model.arch=resnet18", "augment.rotate_deg=5"):
        with pytest.raises(ConfigError, match=rf"^{re.escape(item)}: evaluate takes only data\.\*, train\.device"):
            evaluate(tiny_run, overrides=[item], progress=False)
    assert main(["evaluate", "--model", str(tiny_run), "--out", str(tmp_path / "ev"), "eval.threshold=0.3"]) == 2
    assert "eval.threshold=0.3: evaluate takes only" in capsys.readouterr().err and not (tmp_path / "ev").exists()
    m = evaluate(tiny_run, overrides=["eval.bootstrap=0", "train.seed=3", "augment.rotate_deg=5"], tta=True,
                 progress=False)
    assert m["n"] > 0 and m["evaluated_on"]["tta_views"] > 0


def test_evaluate_never_replaces_a_file_it_did_not_write_and_refuses_a_bad_out_up_front(tiny_run, tmp_path,
                                                                                         monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"mine": 1}')
    with pytest.raises(MedtlError, match=r"metrics.json: exists and was not written by `medtl evaluate`"):
        evaluate(tiny_run, out=str(mine), progress=False)
    (mine / "metrics.json").unlink()
    (mine / "predictions_test.csv").write_text("my,own\n")
    with pytest.raises(MedtlError, match=r"predictions_test.csv: exists and was not written by `medtl evaluate`"):
        evaluate(tiny_run, out=str(mine), progress=False)
    assert sorted(p.name for p in mine.iterdir()) == ["predictions_test.csv"]
    assert (mine / "predictions_test.csv").read_text() == "my,own\n"
    with pytest.raises(MedtlError, match=r"predictions_test.csv: is a file, not a folder; choose another --out"):
        evaluate(tiny_run, out=str(mine / "predictions_test.csv"), progress=False)
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only disk (root writes past chmod)
    with pytest.raises(MedtlError, match=r"cannot write there \(read-only or no permission\); choose another --out"):
        evaluate(tiny_run, out=str(tmp_path / "new" / "ev"), progress=False)
    monkeypatch.undo()
    ev = tmp_path / "ev"
    evaluate(tiny_run, out=str(ev), progress=False, bootstrap=0)
    assert evaluate(tiny_run, out=str(ev), progress=False, bootstrap=0)["n"] > 0  # its own folder: written again


def test_a_run_evaluates_from_any_folder_and_names_data_that_moved(tiny_run, tmp_path, monkeypatch):
    # the recipe's data.path is relative ("sample_data/manifest.csv"); the run keeps it absolute
    saved = load_config(tiny_run / "config.yaml").data.path
    assert Path(saved).is_absolute() and Path(saved).is_file()
    from medtl.train.run import _saved_config

    assert _saved_config(tiny_cfg("data.path=~/x.npz")).data.path == str(Path.home() / "x.npz")
    monkeypatch.chdir(tmp_path)
    assert evaluate(tiny_run, split="test", progress=False, bootstrap=0)["n"] > 0
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)
    cfg = load_config(moved / "config.yaml", ["data.path=/nowhere/manifest.csv"])
    cfg.save(moved / "config.yaml")
    with pytest.raises(MedtlError, match=r"^/nowhere/manifest.csv: the training data of .*moved.* pass --data PATH"):
        evaluate(moved, progress=False)


def test_a_missing_sample_cohort_says_how_to_write_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="sample_data/manifest.csv: manifest not found: `medtl sample-data "
                                          "sample_data --size small`"):
        train(load_config("sample_tiny"), tmp_path / "run", progress=False)  # its own relative data.path


#: Settings under which two processes x 4 images per step are the same computation as one process x 8:
#: the DistributedSampler and the single-process sampler draw the same seeded permutation, so rank r's
#: batch k is perm[8k + r : 8k + 8 : 2] and the two ranks together hold the single run's batch perm[8k : 8k + 8];
#: DDP averages the two 4-image gradients, which is the 8-image mean. What would break the equality is
#: switched off: BatchNorm statistics over 4 instead of 8 images (frozen), random flips drawn in another
#: order per process (off). 20 training images: 10 per rank, 2 steps per epoch either way.
DDP_SAME = ["augment.flip=false", "train.batchnorm=freeze"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one_process(tmp_path):
    one = tmp_path / "one"
    train(tiny_cfg(*DDP_SAME), one, progress=False)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [*torchrun, "-m", "medtl.cli", "train", "--config", "sample_tiny", "--out", str(tmp_path / "ddp"),
           *TINY, *DDP_SAME, "train.batch_size=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp_rows = list(csv.DictReader(open(tmp_path / "ddp" / "metrics.csv")))
    one_rows = list(csv.DictReader(open(one / "metrics.csv")))
    assert list(ddp_rows[0].keys()) == list(one_rows[0].keys()) and len(ddp_rows) == len(one_rows) == 2
    # The same computation summed in another order (gradient all-reduce; one thread per process against
    # all cores here), so the runs differ by float32 rounding only. Measured on the 2-core CI box: 5e-8 on
    # the validation metrics, 4e-10 on the test metrics; on the weights 3e-5 after the first epoch and
    # 3.3e-4 after the second (1.1e-3 when the single process runs on one thread), the one kept since a tie
    # on validation AUC goes to the lower loss (the first epoch's loss is ~18 from scratch, which amplifies
    # rounding). Without DDP_SAME (4-image BatchNorm statistics, flips) the runs really differ: val_loss by
    # 2e-2, weights by 2.0. The tolerances sit between: 9-200x over rounding, 200-2000x under a real difference.
    metric_tol, weight_tol = 1e-5, 1e-2
    for d, o in zip(ddp_rows, one_rows):
        assert d["epoch"] == o["epoch"] and d["trainable_stages"] == o["trainable_stages"]
        assert float(d["lr"]) == pytest.approx(float(o["lr"]), rel=1e-12)  # same schedule, same step count
        # train_loss is rank 0's mean over its half of the images, train_images_per_s a timing: not compared
        for key in [k for k in o if k.startswith("val_")]:
            assert float(d[key]) == pytest.approx(float(o[key]), abs=metric_tol, nan_ok=True), key
    a, b = load_file(str(tmp_path / "ddp" / "model.safetensors")), load_file(str(one / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=weight_tol, msg=key)
    test_ddp = json.loads((tmp_path / "ddp" / "model_card.json").read_text())["metrics"]["test"]
    test_one = json.loads((one / "model_card.json").read_text())["metrics"]["test"]
    for key in ("auc", "accuracy", "nll", "brier"):
        assert test_ddp[key] == pytest.approx(test_one[key], abs=metric_tol), key


def test_batchnorm_reestimate_sets_statistics_from_the_data(tmp_path, monkeypatch):
    import medtl.models.batchnorm as bn

    seen = []
    real = bn.reestimate_batchnorm
    monkeypatch.setattr(bn, "reestimate_batchnorm", lambda m, batches, device=None: seen.append(real(m, batches, device)))
    train(tiny_cfg("train.batchnorm=reestimate", "train.epochs=1"), tmp_path / "bn", progress=False)
    assert seen and seen[0] > 0  # batches seen before the first epoch


def test_min_steps_lr_auto_and_channels_auto(tmp_path):
    """A small cohort gets epochs from ``min_steps``; ``lr=auto`` trains at the range test's suggestion."""
    out = tmp_path / "run"
    card = train(tiny_cfg("train.epochs=1", "train.min_steps=12", "train.lr=auto", "preprocess.channels=auto",
                          "train.lr_find_steps=20"),
                 out, progress=False).card
    tr = card["training"]
    assert tr["epochs"] == -(-12 // tr["steps_per_epoch"]) > 1
    with open(out / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == tr["epochs"]
    found = json.loads((out / "lr_find.json").read_text())
    assert found["start"] <= found["suggestion"] <= found["end"]
    assert found["lrs"][1] / found["lrs"][0] == pytest.approx((found["end"] / found["start"]) ** (1 / 19))  # 20 steps
    assert tr["lr"] == found["suggestion"] == load_config(out / "config.yaml").train.lr
    assert tr["lr_finder"]["plot"] == "plots/lr_find.png" and (out / "plots" / "lr_find.png").stat().st_size > 0
    assert card["preprocessing"]["channels"] == 1  # the sample cohort is gray


def test_channels_auto_reads_colour_from_the_data():
    from medtl.train.run import resolve_channels, sample_scans

    cfg = tiny_cfg("preprocess.channels=auto")
    rgb = [{"image": np.zeros((28, 28, 3), np.uint8), "label": 0}]
    gray = [{"image": np.zeros((28, 28), np.uint8), "label": 0}]
    assert resolve_channels(cfg, sample_scans(rgb)).preprocess.channels == 3
    assert resolve_channels(cfg, sample_scans(gray)).preprocess.channels == 1
    assert cfg.preprocess.channels == "auto"  # a copy is returned
    with pytest.raises(Exception, match="channels=auto"):
        resolve_channels(cfg, [])
    # a mixed cohort: the answer came from whichever image the seed's split put first
    import medtl.transforms.load as load
    from medtl.io import Scan

    mixed = [{"image": f"/data/{i:02d}.png", "label": 0} for i in range(20)]
    colour = {f"/data/{i:02d}.png" for i in range(10, 20)}

    def fake(image):
        return Scan(np.zeros((4, 4, 1, 3) if image in colour else (4, 4, 1), np.float32), np.eye(4))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load, "as_scan", fake)
        for order in (mixed, mixed[::-1], mixed[5:] + mixed[:5]):
            assert resolve_channels(cfg, sample_scans(order)).preprocess.channels == 3


def test_a_run_that_chose_its_learning_rate_reruns_exactly_from_its_config(tmp_path):
    """The range test of ``train.lr=auto`` drew on torch's random state, so the augmentation of
    ``train.batchnorm=reestimate``'s pass before the first epoch differed from a rerun of the run's
    ``config.yaml`` (which holds the chosen rate and runs no range test): other weights from one recipe."""
    cfg = tiny_cfg("train.epochs=1", "train.lr=auto", "train.lr_find_steps=8", "train.batchnorm=reestimate",
                   "augment.rotate_deg=10")
    train(cfg, tmp_path / "auto", progress=False)
    again = load_config(tmp_path / "auto" / "config.yaml")
    assert isinstance(again.train.lr, float) and again.train.batchnorm == "reestimate"
    train(again, tmp_path / "rerun", progress=False)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("auto", "rerun"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_find_lr_only_runs_the_range_test(tmp_path, capsys):
    out = tmp_path / "find"
    assert main(["train", "--config", "sample_tiny", "--out", str(out), "--find-lr", *TINY, "train.lr_find_steps=20"]) == 0
    text = capsys.readouterr().out
    found = json.loads((out / "lr_find.json").read_text())
    assert f"suggested learning rate {found['suggestion']:.3g}" in text and "train.lr=auto" in text
    assert (out / "plots" / "lr_find.png").is_file() and not (out / "model.safetensors").exists()


def test_predictions_csv_reads_back_the_probabilities_exactly(tmp_path):
    """Confident cases (p within 1e-12 of 1) keep their order when the ROC is drawn from the file."""
    from medtl.train.run import _write_predictions

    probs = np.array([[1e-12, 1 - 1e-12], [1e-13, 1 - 1e-13], [0.25, 0.75]])
    _write_predictions(tmp_path / "p.csv", [{"image": "a.dcm"}, {"image": "b.dcm"}, {"image": "c.dcm"}],
                       np.array([0, 1, 1]), probs, ["normal", "lesion"], 0.8)
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    back = np.array([[float(r["p_normal"]), float(r["p_lesion"])] for r in rows])
    np.testing.assert_array_equal(back, probs)
    assert [r["image"] for r in rows] == ["a.dcm", "b.dcm", "c.dcm"]
    assert [r["predicted"] for r in rows] == ["1", "1", "0"]  # at the threshold given: 0.75 < 0.8


def test_the_predicted_column_is_the_decision_the_confusion_matrix_counts(tiny_run, tmp_path):
    """predictions_*.csv had the probabilities alone: the decision at the card's threshold had to be redone."""
    from sklearn.metrics import confusion_matrix

    card = json.loads((tiny_run / "model_card.json").read_text())
    for path, cm in ((tiny_run / "predictions_test.csv", card["metrics"]["test"]["confusion_matrix"]),
                     (tmp_path / "eval" / "predictions_test.csv",
                      evaluate(tiny_run, out=str(tmp_path / "eval"), progress=False, bootstrap=0)["confusion_matrix"])):
        rows = list(csv.DictReader(open(path)))
        y, pred = [int(r["label"]) for r in rows], [int(r["predicted"]) for r in rows]
        assert confusion_matrix(y, pred, labels=[0, 1]).tolist() == cm
        p1 = np.array([float(r[f"p_{card['class_names'][1]}"]) for r in rows])
        assert pred == (p1 >= card["threshold"]).astype(int).tolist()


def test_tta_run_records_its_views_and_every_later_prediction_averages_them(train_tiny, tmp_path, capsys):
    from medtl.infer import Predictor
    from medtl.transforms.tta import apply_view, tta_views

    extra = ("eval.tta=true", "augment.rotate_deg=10", "augment.shift=0.05", "augment.flip=true")
    run = train_tiny("tiny2d_tta", *TINY_2D, *extra)
    card = json.loads((run / "model_card.json").read_text())
    views = tta_views(tiny_cfg(*extra).augment, 2)
    assert len(views) == 1 + 2 + 4 + 1 and card["tta"]["views"] == [v.to_dict() for v in views]
    # `medtl evaluate` reproduces the run's own test figures (same views, same threshold) ...
    again = evaluate(run, split="test", bootstrap=0, progress=False)
    assert again["evaluated_on"]["tta_views"] == len(views)
    assert again["auc"] == pytest.approx(card["metrics"]["test"]["auc"], abs=1e-12)
    assert again["accuracy"] == pytest.approx(card["metrics"]["test"]["accuracy"], abs=1e-12)
    assert evaluate(run, split="test", bootstrap=0, progress=False, tta=False)["evaluated_on"]["tta_views"] == 0
    assert main(["evaluate", "--model", str(run), "--tta", "off", "--json", "--out", str(tmp_path / "plain")]) == 0
    assert json.loads(capsys.readouterr().out)["evaluated_on"]["tta_views"] == 0
    # ... and the predictor (batch scoring, the app) averages the same views
    pred = Predictor.from_run(run, device="cpu")
    x = torch.rand(3, card["model"]["in_channels"], 32, 32)
    with torch.no_grad():
        want = torch.stack([torch.softmax(pred.model(apply_view(x, v)).double(), 1) for v in views]).mean(0)
    assert np.allclose(pred.predict_batch(x), want.numpy(), atol=1e-12)
    # a saliency map explains the image itself, and its label gives the probability the user is told
    from medtl.data import load_items

    item = load_items(tiny_cfg(*extra).data).split("test")[0]
    p = pred.predict(item["image"], saliency="gradcam", allow_other_domain=True)
    chosen = p.saliency_info["class_name"]
    assert p.saliency_info["probability"] == pytest.approx(p.probabilities[chosen], abs=1e-9)


def test_model_drop_path_reaches_the_built_model():
    from monai.networks.nets.efficientnet import MBConvBlock

    from medtl.train.run import build_model

    def rates(cfg_overrides: list[str]) -> list[float]:
        cfg = load_config("medmnist2d", ["model.weights=null", "preprocess.channels=1", *cfg_overrides])
        m = build_model(cfg, num_classes=2, progress=False)
        return [b.drop_connect_rate or 0.0 for b in m.modules() if isinstance(b, MBConvBlock)]

    assert max(rates([])) == pytest.approx(0.2 * 15 / 16)  # unset: Lite0's own
    assert rates(["model.drop_path=0"]) == [0.0] * 16
    assert max(rates(["model.drop_path=0.4"])) == pytest.approx(0.4 * 15 / 16)


def test_ensemble_run_averages_members_trained_as_single_runs_and_resumes(tmp_path, capsys):
    from medtl.train.run import member_config

    cfg = tiny_cfg("train.ensemble=2", "data.cache=none")
    result = train(cfg, tmp_path / "ens", progress=True)
    bars = capsys.readouterr().err  # the members' epoch bars under one bar that counts the members
    assert "ensemble of 2:" in bars and "member 2 of 2, seed 100" in bars and "2/2" in bars
    ens = tmp_path / "ens"
    # member 1 is exactly the single run with seed + 100 on the ensemble's cohort
    single = train(tiny_cfg("data.cache=none", "train.seed=100", "data.seed=0"), tmp_path / "single", progress=False)
    assert member_config(cfg, 1).train.seed == 100 and member_config(cfg, 1).data.seed == 0
    w1, ws = (load_file(str(d / "model.safetensors")) for d in (ens / "members" / "1", single.run_dir))
    assert w1.keys() == ws.keys() and all(torch.equal(w1[k], ws[k]) for k in w1)
    card = result.card
    assert card["model"]["ensemble"] == 2
    assert [m["seed"] for m in card["training"]["ensemble"]] == [0, 100]
    for j, m in enumerate(card["training"]["ensemble"]):  # what a rerun of each member must match
        member = json.loads((ens / "members" / str(j) / "model_card.json").read_text())["training"]
        assert {k: m[k] for k in ("threads", "torch", "monai", "numpy", "python")} == \
            {k: member[k] for k in ("threads", "torch", "monai", "numpy", "python")} and m["torch"]
    # the saved model's probabilities are the members' mean, on the test images the card was measured on
    model, _, prep = load_run(ens)
    members = [load_run(ens / "members" / str(j))[0] for j in range(2)]
    rows = list(csv.DictReader(open(ens / "predictions_test.csv")))
    x = torch.stack([prep(r["image"]) for r in rows])
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        torch.testing.assert_close(model(x).softmax(1), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([[float(r[f"p_{c}"]) for c in card["class_names"]] for r in rows], mean.numpy(),
                               atol=1e-5)
    assert card["metrics"]["test"]["auc"] is not None and (ens / card["files"]["ood"]).is_file()
    # the predictor (medtl predict, batch scoring, the app) serves it like any run: probability, guard, saliency
    from medtl.infer import Predictor

    p = Predictor.from_run(ens, device="cpu").predict(rows[0]["image"], saliency="gradcam", allow_other_domain=True)
    assert [p.probabilities[c] for c in card["class_names"]] == pytest.approx(mean[0].tolist(), abs=1e-5)
    assert p.ood_score is not None and p.out_of_distribution is not None and p.saliency is not None
    # stopped inside member 0, resumed: the same ensemble
    assert not train(cfg, tmp_path / "resumed", progress=False, max_epochs_this_run=1).card
    with pytest.raises(MedtlError, match="--resume"):
        train(cfg, tmp_path / "resumed", progress=False)
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("ens", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ensemble_refuses_torchrun_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(MedtlError, match="without torchrun"):
        train(tiny_cfg("train.ensemble=2"), tmp_path / "ens", progress=False)
    assert not (tmp_path / "ens").exists()


def _relabelled(tmp_path, relabel, name="manifest.csv"):
    """The sample cohort's CT slices with labels rewritten by ``relabel(label, split)`` (paths made absolute)."""
    src = Path(TINY[0].split("=", 1)[1])
    with open(src) as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "ct2d"]
    for r in rows:
        r["path"], r["label"] = str(src.parent / r["path"]), relabel(r["label"], r["split"])
    out = tmp_path / name
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return f"data.path={out}"


@pytest.mark.parametrize("relabel, message", [
    (lambda y, s: str(int(y) + 1),
     r"class '0' has no training image .* labelled 0: number the 2 classes from 0 without a gap \(0..1\)"),
    (lambda y, s: "1", r"hold only the class \['1'\]; a classifier needs images of at least two classes"),
    (lambda y, s: "Normal" if y == "0" and s == "train" else ("normal" if y == "0" else "Pneumonia"),
     r"labels 'Normal' and 'normal' differ only in case"),
])
def test_labels_a_classifier_cannot_learn_from_are_refused_before_training(tmp_path, relabel, message):
    with pytest.raises(MedtlError, match=message):
        train(tiny_cfg(_relabelled(tmp_path, relabel)), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything of a run was written


def test_integer_labels_with_a_gap_are_refused_naming_the_missing_label():
    """Labels 0, 1 and 3 were told 'labels 1 and 2 leave class 0 empty', a fixed example naming neither the
    cohort's labels nor the class that is empty."""
    from medtl.data import Cohort
    from medtl.train.run import check_classes

    cohort = Cohort(items=[{"image": "a", "label": k, "split": "train"} for k in (0, 1, 3)],
                    class_names=["0", "1", "2", "3"])
    with pytest.raises(MedtlError) as err:
        check_classes(cohort, "m.csv")
    assert str(err.value) == ("m.csv: class '2' has no training image (of ['0', '1', '2', '3']); integer labels are "
                              "class indices 0..K-1 and no training image is labelled 2: number the 3 classes from 0 "
                              "without a gap (0..2), or use class names")


def test_class_names_differing_only_in_unicode_form_are_refused():
    """'sévère' composed (NFC, as typed) and decomposed (NFD, as macOS writes file names) trained as two classes."""
    import unicodedata

    from medtl.data import Cohort
    from medtl.train.run import check_classes

    nfc, nfd = unicodedata.normalize("NFC", "sévère"), unicodedata.normalize("NFD", "sévère")
    cohort = Cohort(items=[{"image": "a", "label": k, "split": "train"} for k in (0, 1, 2)],
                    class_names=["normal", nfc, nfd])
    with pytest.raises(MedtlError) as err:
        check_classes(cohort, "m.csv")
    assert str(err.value) == (f"m.csv: labels {nfc!r} and {nfd!r} differ only in Unicode form (an accent composed "
                              "in one, combined in the other: NFC and NFD), so they would train as two classes: "
                              "write them alike")


def test_an_empty_class_among_thousands_is_named_in_a_short_line():
    """A manifest with 10,000 labels listed every one of them in the error (over 100 KB of one line)."""
    from medtl.data import Cohort
    from medtl.train.run import check_classes

    names = [f"L{i}" for i in range(10_000)]
    cohort = Cohort(items=[{"image": "a", "label": k, "split": "train"} for k in (0, 1)], class_names=names)
    with pytest.raises(MedtlError) as err:
        check_classes(cohort, "m.csv")
    assert str(err.value) == ("m.csv: class 'L2' has no training image (of 10,000 classes, e.g. ['L0', 'L1', 'L2', "
                              "'L3', 'L4']); give it training images, or leave it out of data.class_names")


def test_a_refused_training_leaves_no_run_folder_behind(tmp_path):
    """A bad data path used to leave OUT holding only its lock: an empty 'run' that later commands reject."""
    missing = f"data.path={tmp_path / 'missing.csv'}"
    with pytest.raises(MedtlError, match="manifest not found"):
        train(tiny_cfg(missing), tmp_path / "runs" / "pneu", progress=False)
    assert not (tmp_path / "runs").exists()  # nor the parent it made for it
    (tmp_path / "mine").mkdir()  # a folder the user made stays, as it was
    with pytest.raises(MedtlError, match="manifest not found"):
        train(tiny_cfg(missing), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir()


def test_resume_of_a_folder_without_a_run_is_refused_before_reading_the_data(tmp_path):
    with pytest.raises(MedtlError, match=r"new: no run to resume \(no checkpoints/last.pt\); run without --resume"):
        train(tiny_cfg(f"data.path={tmp_path / 'missing.csv'}"), tmp_path / "new", resume=True, progress=False)
    assert not (tmp_path / "new").exists()


def test_a_validation_split_of_one_class_monitors_the_loss_and_keeps_a_model(tmp_path):
    """Validation AUC is undefined every epoch there: no epoch was kept and the run ended without a model."""
    one = _relabelled(tmp_path, lambda y, s: "0" if s == "val" else y)
    run = train(tiny_cfg(one, "train.epochs=1"), tmp_path / "run", progress=False)
    assert run.card["training"]["monitor"] == "loss" and run.card["training"]["best_epoch"] == 1
    assert load_config(tmp_path / "run" / "config.yaml").train.monitor == "loss"


def test_a_multiclass_cohort_monitors_the_loss_when_validation_lacks_a_class_and_refuses_two_class_figures(
        tmp_path, caplog):
    """A validation split without one of 3 classes made AUC NaN every epoch (no epoch kept, patience stopping the
    run); `train.monitor=f1` of 3 classes was never a number either, said only at the end. Its card's test
    figures name each class (they were keyed by index)."""
    seen = iter(range(1000))
    three = _relabelled(tmp_path, lambda y, s: "g2" if s == "train" and next(seen) % 3 == 0 else f"g{y}")
    with pytest.raises(MedtlError, match=r"train.monitor=f1 is a two-class figure and this cohort has 3 classes"):
        train(tiny_cfg(three, "train.monitor=f1"), tmp_path / "f1", progress=False)
    assert not (tmp_path / "f1").exists()
    # a threshold of the second class's probability was recorded in config.yaml and ignored, the card's null
    with pytest.raises(MedtlError, match=r"eval.threshold=0.3 is a threshold on the second class's probability and "
                                         r"this cohort has 3 classes"):
        train(tiny_cfg(three, "eval.threshold=0.3"), tmp_path / "thr", progress=False)
    assert not (tmp_path / "thr").exists()
    run = train(tiny_cfg(three, "train.epochs=1", "train.patience=1"), tmp_path / "run", progress=False)
    assert "the validation split holds 2 of the 3 classes: train.monitor=auc is undefined there" in caplog.text
    assert run.card["training"]["monitor"] == "loss" and run.card["training"]["best_epoch"] == 1
    for split in ("val", "test"):
        figures = run.card["metrics"][split]
        assert list(figures["per_class"]) == ["g0", "g1", "g2"] and "qwk" in figures["ci"]


def test_ordered_grades_can_keep_the_epoch_of_the_best_validation_kappa(tmp_path):
    """The quadratic weighted kappa was reported but could not choose the checkpoint; of two classes it is refused
    before anything is written (it is never computed there)."""
    seen = iter(range(1000))
    three = _relabelled(tmp_path, lambda y, s: "g2" if next(seen) % 3 == 0 else f"g{y}")
    run = train(tiny_cfg(three, "train.epochs=2", "train.monitor=qwk"), tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "metrics.csv") as fh:
        epochs = list(csv.DictReader(fh))
    top = max(float(r["val_qwk"]) for r in epochs)  # a tie goes to the lower validation loss
    assert run.card["training"]["monitor"] == "qwk" and run.card["training"]["best_score"] == pytest.approx(top)
    assert run.card["training"]["best_epoch"] in {int(r["epoch"]) for r in epochs if float(r["val_qwk"]) == top}
    with pytest.raises(MedtlError, match=r"train.monitor=qwk is the kappa of ordered grades, computed for more than "
                                         r"two classes; this cohort has two"):
        train(tiny_cfg("train.monitor=qwk"), tmp_path / "binary", progress=False)
    assert not (tmp_path / "binary").exists()


def test_monitor_names_are_checked_and_the_metrics_csv_column_is_accepted():
    assert tiny_cfg("train.monitor=val_loss").train.monitor == "loss"
    with pytest.raises(ConfigError, match="train.monitor: Input should be 'auc', 'loss'"):
        tiny_cfg("train.monitor=acc")


def test_a_monitored_figure_that_is_never_a_number_keeps_the_last_epoch(tmp_path, monkeypatch, caplog):
    """No epoch is ever 'best' then: the run ended by loading a model.safetensors that was never written."""
    import medtl.train.engine as engine

    monkeypatch.setattr(engine, "_monitored", lambda tc, row: float("nan"))
    run = train(tiny_cfg("train.epochs=1"), tmp_path / "run", progress=False)
    assert run.card["training"]["best_epoch"] is None and (tmp_path / "run" / "model.safetensors").is_file()
    assert "validation auc was never a number in 1 epochs; the last epoch's weights are the model" in caplog.text


def test_other_data_is_evaluated_whole_without_the_runs_filter_into_its_own_folder(tiny_run, tmp_path, capsys):
    """A second site's manifest has no split column and none of the training manifest's filter columns: all of
    it is evaluated, and siteB/manifest.csv and siteC/manifest.csv do not share a results folder."""
    src = Path(TINY[0].split("=", 1)[1])
    with open(src) as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "ct2d"]
    for site in ("siteB", "siteC"):
        (tmp_path / site).mkdir()
        with open(tmp_path / site / "manifest.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label"])
            w.writerows([str(src.parent / r["path"]), r["label"]] for r in rows)
    m = evaluate(tiny_run, data=str(tmp_path / "siteB" / "manifest.csv"), progress=False, bootstrap=0)
    assert m["n"] == len(rows) and m["evaluated_on"]["split"] == "all"
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("evaluations"))
    for site in ("siteB", "siteC"):
        assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / site / "manifest.csv"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["n"] == len(rows)
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == ["all_siteB-manifest.csv",
                                                                       "all_siteC-manifest.csv"]
    with pytest.raises(MedtlError, match="split 'vall': choose train, val, test or all"):
        evaluate(tiny_run, split="vall", progress=False)


def test_other_data_of_some_of_the_models_classes_is_mapped_to_them_by_name(tiny_run, tmp_path):
    """Another site's folder of class '1' only, or a manifest naming 2 of a model's 3 classes, was refused as
    'classes differ from the model's'; its labels are the model's classes, by name."""
    src = Path(TINY[0].split("=", 1)[1])
    with open(src) as fh:
        ones = [r["path"] for r in csv.DictReader(fh) if r["kind"] == "ct2d" and r["label"] == "1"]
    (tmp_path / "site" / "1").mkdir(parents=True)
    for rel in ones:
        shutil.copy(src.parent / rel, tmp_path / "site" / "1" / Path(rel).name)
    m = evaluate(tiny_run, data=str(tmp_path / "site"), out=str(tmp_path / "eval"), progress=False, bootstrap=0)
    assert m["n"] == len(ones) and m["confusion_matrix"][0] == [0, 0] and sum(m["confusion_matrix"][1]) == len(ones)
    with open(tmp_path / "eval" / "predictions_all.csv") as fh:
        assert {r["label"] for r in csv.DictReader(fh)} == {"1"}
    from medtl.data import Cohort
    from medtl.train.run import in_model_classes

    model = ["mild disease", "normal", "sévère, grade 3"]
    two = Cohort(items=[{"image": "a", "label": 0}, {"image": "b", "label": 1}], class_names=model[1:])
    mapped = in_model_classes(two, model, "m.csv")
    assert mapped.class_names == model and [it["label"] for it in mapped.items] == [1, 2]
    with pytest.raises(MedtlError, match=r"m.csv: classes \['normal', 'other'\] differ from the model's"):
        in_model_classes(Cohort(items=two.items, class_names=["normal", "other"]), model, "m.csv")


def test_other_data_is_not_told_to_reorder_classes_the_model_card_fixes(tmp_path, recwarn):
    """A site with 'abnormal' and 'normal' of a 3-class model was warned that 'normal' became class 1 and told to set
    data.class_names: evaluation takes the classes and their order from the card."""
    from PIL import Image

    from tests.conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run", ("abnormal", "mild", "normal"))
    rng = np.random.default_rng(0)
    for name in ("abnormal", "normal"):
        (tmp_path / "site" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / "site" / name / f"{i}.png")
    m = evaluate(run, data=str(tmp_path / "site"), progress=False, bootstrap=0)
    assert m["class_names"] == ["abnormal", "mild", "normal"] and [sum(r) for r in m["confusion_matrix"]] == [2, 0, 2]
    assert list(m["per_class"]) == m["class_names"] and m["per_class"]["mild"]["support"] == 0
    assert not [w for w in recwarn if "sorted alphabetically" in str(w.message)]


def test_other_data_mixing_2d_and_3d_says_which_filter_keeps_the_models_kind(tiny_run):
    """The whole sample manifest (CT slices, volumes, PNGs) given to the 2D run: the refusal named only a 3D
    model as the way out; it now says a data.filter override keeps the model's images, and the run's own."""
    from medtl.errors import DimensionError

    src = TINY[0].split("=", 1)[1]
    with pytest.raises(DimensionError, match=r"slices was given to a 2D model \(keep only the images this model "
                                             r"takes with a data.filter.COLUMN=VALUE override; it was trained with "
                                             r"data.filter.kind=ct2d\)"):
        evaluate(tiny_run, data=src, progress=False, bootstrap=0)
    assert evaluate(tiny_run, data=src, overrides=["data.filter.kind=ct2d"], progress=False, bootstrap=0)["n"] > 0


def test_a_learning_rate_must_be_positive_and_a_bad_override_is_named_as_such():
    with pytest.raises(ConfigError, match=r"^train.lr: Input should be greater than 0; or Input should be 'auto' .*fix the override\)$"):
        tiny_cfg("train.lr=-1")
    assert tiny_cfg("train.lr=auto").train.lr == "auto"


def test_resume_takes_the_runs_own_config_and_an_unfinished_run_says_how_to_finish(tmp_path, capsys):
    """`--resume` with the recipe again (not the `train.epochs=4` the run started with) ended the run at the
    recipe's 3 epochs and rewrote config.yaml; predict/evaluate on the unfinished run said only "no card"."""
    out = tmp_path / "run"
    train(tiny_cfg("train.epochs=4"), out, progress=False, max_epochs_this_run=1)
    with pytest.raises(MedtlError, match=r"did not finish \(interrupted\?\).*medtl train --out .* --resume"):
        load_run(out)
    assert main(["train", "--config", "sample_tiny", "--out", str(out), "--resume"]) == 0
    assert "resuming with" in capsys.readouterr().err
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["epochs"] == card["training"]["epochs_run"] == 4
    assert load_config(out / "config.yaml").train.epochs == 4


def test_resume_that_would_stretch_a_one_cycle_schedule_is_refused_before_rewriting_the_run(tmp_path, capsys):
    """`--resume train.epochs=4` of a 2-epoch one-cycle run ended in an internal error ("Tried to step 5 times")
    after config.yaml had been rewritten to 4 epochs; a constant schedule may be extended."""
    out = tmp_path / "run"
    train(tiny_cfg(), out, progress=False)
    saved = (out / "config.yaml").read_bytes()
    assert main(["train", "--out", str(out), "--resume", "train.epochs=4"]) == 2
    assert ("resuming with train.epochs=4 (the run was laid out with 2): a onecycle schedule cannot be stretched"
            in capsys.readouterr().err)
    assert (out / "config.yaml").read_bytes() == saved
    train(tiny_cfg("train.schedule=constant"), tmp_path / "const", progress=False)
    train(tiny_cfg("train.schedule=constant", "train.epochs=3"), tmp_path / "const", resume=True, progress=False)
    assert [r["epoch"] for r in csv.DictReader(open(tmp_path / "const" / "metrics.csv"))] == ["1", "2", "3"]


def test_two_trainings_into_one_run_folder_are_refused_while_the_first_runs(tmp_path):
    """Both used to finish, config.yaml from one and the card and metrics from the other."""
    from medtl._fileutil import hold_lock

    out = tmp_path / "run"
    out.mkdir()
    held = subprocess.Popen([sys.executable, "-c", "import sys, time; from medtl._fileutil import hold_lock; "
                             f"h = hold_lock({str(out / '.train.lock')!r}); print(h is not None, flush=True); "
                             "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline().strip() == "True"
        with pytest.raises(MedtlError, match=rf"another `medtl train` \(pid {held.pid}\) is writing this run folder"):
            train(tiny_cfg("train.epochs=1"), out, progress=False)
        assert not (out / "config.yaml").exists()
    finally:
        held.kill()
        held.wait()
    assert hold_lock(out / ".train.lock") is not None  # freed by the OS when its holder died


def test_a_patient_in_two_given_splits_is_refused_without_naming_them(tmp_path):
    """The README promises no patient in two splits; a manifest's own split column could break it silently."""
    src = Path(TINY[0].split("=", 1)[1])
    with open(src) as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "ct2d"]
    test_patient = next(r["patient_id"] for r in rows if r["split"] == "test")
    train_row = next(r for r in rows if r["split"] == "train")
    train_row["patient_id"] = test_patient  # one training image of a test patient
    for r in rows:
        r["path"] = str(src.parent / r["path"])
    with open(tmp_path / "leak.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(MedtlError, match=r"1 patient\(s\) have images in more than one split \(test and train\)") as e:
        train(tiny_cfg(f"data.path={tmp_path / 'leak.csv'}"), tmp_path / "run", progress=False)
    assert test_patient not in str(e.value)


def test_domain_shift_on_raw_intensities_says_the_preset_expects_a_window():
    from medtl.train.run import domain_shift_note

    note = domain_shift_note(tiny_cfg("preprocess.window=none", "augment.domain_shift=strong"))
    assert "augment.domain_shift=strong" in note and "preprocess.window=auto" in note and "\n" not in note
    assert domain_shift_note(tiny_cfg("preprocess.window=auto", "augment.domain_shift=strong")) is None
    assert domain_shift_note(tiny_cfg("preprocess.window=none", "augment.domain_shift=none")) is None


def test_window_auto_on_a_cohort_scaled_two_ways_says_so_and_how_to_make_it_one(tmp_path, caplog):
    """8-bit images are divided by 255 and 16-bit ones stretched between percentiles under window auto;
    CT files bring their own windows: a cohort mixing them gets one warning naming the fix."""
    from PIL import Image

    from medtl.io import Scan
    from medtl.train.run import auto_window_note, prepare_data

    def scan(dtype, window=None, modality="OT"):
        meta = {} if window is None else {"window_center": window[0], "window_width": window[1]}
        return Scan(np.zeros((4, 4, 1), dtype), np.eye(4), modality=modality, metadata=meta)

    cfg = tiny_cfg("preprocess.window=auto")
    assert auto_window_note(cfg, [scan(np.uint8), scan(np.uint8)]) is None
    note = auto_window_note(cfg, [scan(np.uint8), scan(np.uint16)])
    assert "/255 (8-bit); a percentile stretch" in note and "preprocess.window=percentile" in note
    note = auto_window_note(cfg, [scan(np.int16, (40, 400), "CT"), scan(np.int16, (-600, 1500), "CT")])
    assert "the file's window 40/400; the file's window -600/1500" in note
    assert "wide CT window" in auto_window_note(cfg, [scan(np.int16, (40, 400), "CT"), scan(np.int16, None, "CT")])
    assert auto_window_note(tiny_cfg("preprocess.window=percentile"), [scan(np.uint8), scan(np.uint16)]) is None

    rng = np.random.default_rng(0)
    for c, cls in enumerate(("a", "b")):
        (tmp_path / cls).mkdir()
        for i in range(6):
            bits = np.uint8 if i % 2 else np.uint16
            top = 255 if bits is np.uint8 else 4095
            Image.fromarray(rng.integers(0, top, (16, 16)).astype(bits)).save(tmp_path / cls / f"{i}.png")
    with caplog.at_level("WARNING", logger="medtl"):
        prepare_data(tiny_cfg(f"data.path={tmp_path}", "data.filter={}", "preprocess.window=auto", "data.cache=none",
                              "preprocess.spatial_dims=2"), progress=False)
    assert sum("scales these images differently" in r.getMessage() for r in caplog.records) == 1


def test_a_cohort_without_modality_says_the_model_cannot_refuse_another_kind(tmp_path, caplog):
    """PNGs carry no modality: without data.modality the model's header check can refuse nothing by
    modality (a CT slice passed a chest X-ray model's), and training now says so, naming the fix."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "pngs" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (16, 16)).astype(np.uint8)).save(tmp_path / "pngs" / cls / f"{i}.png")
    common = [f"data.path={tmp_path / 'pngs'}", "data.filter={}", "preprocess.window=auto", "train.epochs=1",
              "data.cache=none", "eval.bootstrap=10"]
    with caplog.at_level("WARNING", logger="medtl"):
        train(tiny_cfg(*common), tmp_path / "unknown", progress=False)
    said = [r.getMessage() for r in caplog.records if "record no modality" in r.getMessage()]
    assert len(said) == 1 and "set data.modality (e.g. DX for chest X-rays" in said[0]
    n_val = json.loads((tmp_path / "unknown" / "model_card.json").read_text())["ood"]["n_calibration"]
    assert n_val < 20 and any(f"only {n_val} validation images: the out-of-distribution threshold" in r.getMessage()
                              for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="medtl"):
        train(tiny_cfg(*common, "data.modality=DX"), tmp_path / "declared", progress=False)
    assert not any("record no modality" in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / "declared" / "model_card.json").read_text())["domain"]["families"] == ["X-ray"]


def test_domain_shift_imitates_the_cohorts_modality(tmp_path):
    # the MR ingredients (Rician noise, k-space spikes) were never used: training did not pass the modality
    from medtl.io import Scan
    from medtl.train.run import augment_modality, prepare_data

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None]
    np.savez(tmp_path / "mr.npz", **arrays)

    def names(*extra):
        cfg = tiny_cfg(f"data.path={tmp_path / 'mr.npz'}", "data.filter={}", "augment.domain_shift=strong", *extra)
        return {type(t).__name__ for t in prepare_data(cfg, progress=False).train_transform.transforms}

    mr = names("data.modality=MR")
    assert {"RandRicianNoised", "RandKSpaceSpikeNoised"} <= mr and "RandGaussianNoised" not in mr
    dx = names("data.modality=DX")
    assert "RandGaussianNoised" in dx and not {"RandRicianNoised", "RandKSpaceSpikeNoised"} & dx
    scans = [Scan(np.zeros((4, 4, 1), np.float32), np.eye(4), modality=m) for m in ("MR", "MR", "CT")]
    cfg = tiny_cfg()
    assert augment_modality(cfg, scans[:2]) == "MR"
    assert augment_modality(cfg, scans) is None  # mixed: the general (Gaussian) noise
    assert augment_modality(tiny_cfg("data.modality=DX"), scans[:2]) == "DX"


def test_missing_imagenet_weights_fail_before_the_data_is_read(tmp_path, monkeypatch):
    """Offline without the file: the one-line weights error comes first, not after decoding the cohort."""
    import medtl.train.run as run_module
    from medtl.errors import WeightsError

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the weights were looked for")

    monkeypatch.setattr(run_module, "prepare_data", no_data)
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDTL_WEIGHTS_DIR", raising=False)
    cfg = tiny_cfg("model.arch=resnet18", "model.weights=imagenet")
    with pytest.raises(WeightsError, match="resnet18-f37072fd.pth"):
        train(cfg, tmp_path / "run")
    cfg = tiny_cfg(f"model.weights={tmp_path / 'tuned.pth'}")
    with pytest.raises(WeightsError, match="tuned.pth: weights file not found"):
        train(cfg, tmp_path / "run")
    with pytest.raises(WeightsError, match="tuned.pth: weights file not found"):  # `medtl train --find-lr`
        run_module.find_learning_rate(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()



@pytest.mark.parametrize("strategy,warned", [("linear", True), ("partial", True), ("full", False)])
def test_a_frozen_random_backbone_is_warned_about(tmp_path, monkeypatch, caplog, strategy, warned):
    import medtl.train.run as run_module

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(run_module, "prepare_data", stop)
    with caplog.at_level("WARNING", logger="medtl"), pytest.raises(Stop):
        train(tiny_cfg("model.weights=null", f"train.strategy={strategy}"), tmp_path / "run", progress=False)
    assert any("keeps stages of a random network frozen" in r.getMessage() for r in caplog.records) == warned


def test_the_training_door_is_importable_from_the_package_and_only_on_use():
    """``from medtl.train import train`` raised ImportError (every other part exports its door); the
    config's ``train:`` section must still load without the training loop."""
    from medtl import train as part
    from medtl.train import run

    assert [getattr(part, n) for n in part.__all__] == [run.RunResult, run.evaluate, run.find_learning_rate,
                                                          run.train]
    code = "import sys, medtl.config; print('medtl.train.run' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.parametrize("given", ["sample_tiny", {"train": {"epochs": 1}}])
def test_train_given_a_recipe_name_or_dict_says_to_load_a_config(tmp_path, given):
    """It failed with ``AttributeError: 'str' object has no attribute 'model'`` from inside."""
    from medtl.train import find_learning_rate

    for fn in (train, find_learning_rate):
        with pytest.raises(ConfigError, match=r"\(\) takes a Config, got (str|dict) \(cfg = medtl.config.load_config"):
            fn(given, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("folder", ["site B #2", "site: B"])
def test_other_data_at_any_path_is_evaluated(tiny_run, tmp_path, folder):
    """``data`` went into a ``data.path=...`` override read as YAML: ``#`` cut the path short, ``: `` made
    it a mapping."""
    src = Path(TINY[0].split("=", 1)[1])
    with open(src) as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "ct2d"]
    where = tmp_path / folder
    where.mkdir()
    with open(where / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label"], *([str(src.parent / r["path"]), r["label"]] for r in rows)])
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("evaluations"))
    m = evaluate(run, data=where / "m.csv", progress=False, bootstrap=0)
    assert m["n"] == len(rows) and m["evaluated_on"]["data"] == str(where / "m.csv")


def test_evaluation_of_relative_data_names_its_files_absolutely(tiny_run, tmp_path, monkeypatch):
    """``medtl evaluate --data m.csv`` wrote ``m.csv`` and ``ct2d/...`` into metrics.json and the predictions:
    paths relative to the folder it ran in, naming nothing from anywhere else."""
    src = Path(TINY[0].split("=", 1)[1])
    shutil.copytree(src.parent / "ct2d", tmp_path / "ct2d")
    with open(src) as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "ct2d"]
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label"], *([r["path"], r["label"]] for r in rows)])
    monkeypatch.chdir(tmp_path)
    m = evaluate(tiny_run, data="m.csv", out="ev", progress=False, bootstrap=0)
    assert m["evaluated_on"]["data"] == str(tmp_path / "m.csv")
    written = [r["image"] for r in csv.DictReader(open(tmp_path / "ev" / "predictions_all.csv"))]
    assert written == [str(tmp_path / r["path"]) for r in rows]


@pytest.mark.parametrize("nth", [1, 3, 6])
def test_evaluate_on_a_full_disk_leaves_the_previous_evaluation_whole(tiny_run, tmp_path, monkeypatch, nth):
    """The disk filling up at the ``nth`` of the six files left new metrics beside the previous plots;
    now the previous evaluation stays whole (byte for byte) and the error names the file."""
    import errno

    out = tmp_path / "ev"
    evaluate(tiny_run, split="test", out=str(out), bootstrap=0, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert len(before) == 6
    real_replace, count = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        if Path(dst).parent.name.endswith(".staging"):
            count[0] += 1
            if count[0] == nth:
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        with pytest.raises(OSError) as info:
            evaluate(tiny_run, split="test", out=str(out), overrides=["data.filter.site=B"], bootstrap=0,
                     progress=False)
    assert info.value.errno == errno.ENOSPC and Path(info.value.filename).parent == out
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == before
    assert not list(out.glob(".evaluate.*.staging"))
    evaluate(tiny_run, split="test", out=str(out), overrides=["data.filter.site=B"], bootstrap=0, progress=False)
    assert json.loads((out / "metrics.json").read_text())["evaluated_on"]["overrides"] == ["data.filter.site=B"]


def test_evaluate_overrides_given_as_one_text_say_so(tiny_run):
    """``evaluate(run, overrides="data.filter.site=B")`` was refused as "override 'd' must look like ..."."""
    with pytest.raises(ConfigError, match=r"^overrides are a list of key=value items, got the text "
                                          r"'data.filter.site=B' \(write \['data.filter.site=B'\]\)$"):
        evaluate(tiny_run, overrides="data.filter.site=B", progress=False)
