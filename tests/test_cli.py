import errno
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtl.cli import main, metric_text, per_class_lines
from medtl.io import Scan, save_nifti


def test_info_json_reports_geometry(tmp_path, capsys):
    aff = np.diag([-0.8, -0.8, 2.0, 1.0])  # LPS-like axes in RAS space
    save_nifti(Scan(np.zeros((6, 5, 4), np.int16), aff, modality="CT"), tmp_path / "x.nii.gz")
    assert main(["info", str(tmp_path / "x.nii.gz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [6, 5, 4] and info["orientation"] == "LPS"
    assert info["spacing"] == [0.8, 0.8, 2.0] and info["modality"] == "CT"


def test_convert_writes_nifti_with_same_affine(tmp_path):
    aff = np.array([[0, 0.5, 0, 3], [-0.9, 0, 0, 4], [0, 0, 3, 5], [0, 0, 0, 1.0]])
    src = save_nifti(Scan(np.arange(24, dtype=np.float32).reshape(2, 3, 4), aff), tmp_path / "a.nii")
    assert main(["convert", str(src), str(tmp_path / "b.nii.gz")]) == 0
    img = nib.load(str(tmp_path / "b.nii.gz"))
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "junk.dcm"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "medtl.cli", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "junk.dcm" in lines[0]


def test_output_cut_short_by_its_reader_stops_quietly():
    # `medtl configs | head -0`: the reader closes the pipe before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "medtl.cli", "configs"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert (err, proc.returncode) == (b"", 141)


def test_weights_list_and_offline_fetch_error(capsys):
    assert main(["weights", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= {"resnet18", "resnet50", "densenet121", "efficientnet_lite0"}
    assert main(["weights", "fetch", "resnet18"]) == 2  # MEDTL_OFFLINE=1 in tests
    err = capsys.readouterr().err.strip()
    assert "resnet18-f37072fd.pth" in err and "medtl weights import" in err and "\n" not in err


def test_weights_fetch_finds_the_file_in_weights_dir(tmp_path, capsys, monkeypatch):
    """`medtl weights --weights-dir D fetch NAME` uses D as `list` does, instead of downloading."""
    import hashlib

    from medtl.models import weights as W

    folder = tmp_path / "usb"
    folder.mkdir()
    (folder / "resnet18-f37072fd.pth").write_bytes(b"a verified copy")
    spec = W.WEIGHTS["resnet18"]
    sha = hashlib.sha256(b"a verified copy").hexdigest()
    monkeypatch.setitem(W.WEIGHTS, "resnet18", W.WeightSpec(**{**spec.__dict__, "sha256": sha}))
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDTL_WEIGHTS_DIR", raising=False)
    assert main(["weights", "--weights-dir", str(folder), "fetch", "resnet18"]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "resnet18-f37072fd.pth")


def test_weights_import_refuses_a_modified_file(tmp_path, capsys):
    fake = tmp_path / "resnet18-f37072fd.pth"
    fake.write_bytes(b"not the published checkpoint")
    assert main(["weights", "import", str(fake)]) == 2
    err = capsys.readouterr().err
    assert "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec" in err



def test_weights_import_of_a_folder_says_it_is_a_folder(tmp_path, capsys):
    assert main(["weights", "import", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("is a folder (give the path of the downloaded checkpoint file in it)") and "\n" not in err

# --- a user's mistake is one line with the fix, exit 2 (a MedtlError), never the exit-3 safety net ---------

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
TRAIN_BASE = [f"data.path={SAMPLE / 'manifest.csv'}", "data.num_workers=0", "train.epochs=1"]
PNG_2D = ["data.filter={kind: png}", "preprocess.size=[32,32]"]
CT_3D = ["data.filter={kind: ct3d}", "preprocess.spatial_dims=3", "preprocess.size=[16,16,16]"]


def _user_error(capsys, argv: list[str], *needles: str) -> str:
    """Run ``medtl argv``; it must fail with exit 2 and one ``medtl: error:`` line holding ``needles``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err and err.count("medtl:") == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("medtl: error: "), err
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.mark.parametrize("overrides,needles", [
    ([*PNG_2D, "model.arch=resnet19"], ["'resnet19'", "model.arch", "did you mean 'resnet18'", "densenet121"]),
    ([*CT_3D, "model.inflate=foo"], ["'foo'", "model.inflate", "i3d", "central", "acs", "2.5d"]),
    ([*CT_3D, "model.inflate=2.5d", "model.kwargs={pool: median}"], ["'median'", "mean", "max", "attention"]),
    ([*PNG_2D, "model.kwargs={pool: max}"], ["pool", "model.kwargs", "preprocess.spatial_dims: 3"]),
    ([*PNG_2D, "preprocess.window=bogus"], ["preprocess.window", "'bogus'", "lung", "40/400"]),
    (["data.filter={kind: png}", "preprocess.spatial_dims=3", "preprocess.size=[16,16,16]"],
     [".png", "3D model", "preprocess.spatial_dims: 2"]),
])
def test_train_config_mistakes_are_one_line_with_the_fix(tmp_path, capsys, overrides, needles):
    argv = ["train", "--config", "sample_tiny", "--out", str(tmp_path / "run"), *TRAIN_BASE, *overrides]
    _user_error(capsys, argv, *needles)


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory) -> Path:
    """A run folder of an untrained 2D ResNet-18 (32x32 px): enough for input errors."""
    from .conftest import write_untrained_run

    return write_untrained_run(tmp_path_factory.mktemp("cli") / "run")


def test_predict_input_mistakes_are_one_line_with_the_fix(tmp_path, capsys, untrained_run):
    text = tmp_path / "some.txt"
    text.write_text("not a scan\n")
    run = str(untrained_run)
    _user_error(capsys, ["predict", "--model", run, str(text)], "some.txt", "DICOM", "NIfTI", "PNG")
    _user_error(capsys, ["predict", "--model", run, str(SAMPLE / "ct3d" / "P0031.nii.gz")],
                "P0031.nii.gz", "2D model", "preprocess.spatial_dims: 3")
    _user_error(capsys, ["predict", "--model", str(tmp_path), str(text)], str(tmp_path), "medtl train")


def test_cli_saliency_choices_are_medtl_explain_methods():
    from medtl import cli, explain

    assert cli.SALIENCY_METHODS == tuple(explain.METHODS)
    assert cli.DEFAULT_SALIENCY == explain.DEFAULT_METHOD
    args = cli.build_parser().parse_args(["predict", "--model", "r", "x.dcm"])
    assert args.method == explain.DEFAULT_METHOD


def test_train_warns_loudly_when_the_model_is_degenerate(tmp_path, monkeypatch, capsys):
    from medtl.train import run as train_run

    card = {"metrics": {"test": {"auc": 0.5, "accuracy": 0.5, "ci": {"auc": [0.5, 0.5]}}},
            "degenerate": {"degenerate": True, "reasons": ["near-constant outputs on the validation split"]}}
    monkeypatch.setattr(train_run, "train", lambda cfg, out, resume=False: train_run.RunResult(tmp_path, card))
    assert main(["train", "--config", "sample_tiny", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "WARNING: this model did not learn to separate the classes (near-constant outputs" in err


def test_demo_ends_with_the_command_that_serves_its_models(tmp_path, monkeypatch, capsys):
    """`medtl demo --serve` trains both models again: after a demo, the user is told how to serve its own."""
    from medtl import demo

    monkeypatch.setattr(demo, "run_demo", lambda out, size, epochs: Path(out) / "report.html")
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    runs = tmp_path / "d" / "runs"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"the app on these models: medtl app --model domain_shift={runs / 'domain_shift'} "
        f"--model baseline={runs / 'baseline'}")


def test_score_starts_the_fork_server_with_the_module_its_workers_load():
    """``medtl score`` names the readers' module before importing them; a rename must not leave it stale."""
    import inspect

    from medtl import cli
    from medtl.infer.engines import load_study

    assert f'warm_up(["{load_study.__module__}"])' in inspect.getsource(cli.cmd_score)


def test_overrides_on_both_sides_of_an_option_are_all_overrides(monkeypatch):
    """`medtl train --config X a=1 --out R b=2` failed with "unrecognized arguments: b=2"."""
    from medtl import cli

    seen = {}
    monkeypatch.setattr(cli, "cmd_train", lambda args: seen.update(overrides=args.overrides, out=args.out) or 0)
    assert cli.main(["train", "--config", "sample_tiny", "train.epochs=1", "--out", "R", "train.lr=0.01"]) == 0
    assert seen == {"overrides": ["train.epochs=1", "train.lr=0.01"], "out": "R"}
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", "sample_tiny", "--out", "R", "--nope"])


def test_predict_prints_medtl_warnings_on_one_line_and_no_library_warning_quoting_the_header(
        tmp_path, capsys, untrained_run, monkeypatch):
    """pydicom's warnings came out raw, two lines each with its source path, quoting header values."""
    import warnings

    import pydicom

    monkeypatch.delenv("MEDTL_DEBUG", raising=False)
    ds = pydicom.dcmread(SAMPLE / "ct2d" / "P0001_1.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SeriesInstanceUID = "Doe^Jane.1"  # pydicom warns: Invalid value for VR UI: 'Doe^Jane.1'
    ds.PixelSpacing = [0, 0]  # medtl warns: pixel size unknown
    ds.save_as(tmp_path / "odd.dcm")
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = shown  # as in a fresh interpreter, where warnings reach showwarning
        assert main(["predict", "--model", str(untrained_run), str(tmp_path / "odd.dcm")]) == 0
    err = capsys.readouterr().err
    assert "Doe^Jane" not in err
    assert err.splitlines() == [f"WARNING: {tmp_path / 'odd.dcm'}: invalid PixelSpacing '0.0\\\\0.0' (must be two "
                                "positive numbers of mm): pixel size unknown, 1 mm assumed"]
    assert warnings.showwarning is shown


def test_a_full_disk_is_one_line_naming_the_output_and_the_fix(tmp_path, capsys, untrained_run, monkeypatch):
    from PIL import Image

    def disk_full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "map.png"
    argv = ["predict", "--model", str(untrained_run), str(SAMPLE / "ct2d" / "P0001_1.dcm"), "--saliency", str(out)]
    assert main(argv) == 0
    earlier = out.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(Image.Image, "save", disk_full)
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"medtl: error: {out}: cannot write (No space left on device); "
                                       "free space on that disk or choose an output on another one\n")
    assert out.read_bytes() == earlier and sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]


def test_predict_target_picks_the_class_a_saliency_map_explains(tmp_path, capsys):
    """A map of 3 classes explained only the decision: no way to ask where the model sees another grade."""
    from .conftest import write_untrained_run

    names = ["mild", "normal", "sévère, grade 3"]
    run = str(write_untrained_run(tmp_path / "run", tuple(names)))
    scan, out = str(SAMPLE / "ct2d" / "P0001_1.dcm"), str(tmp_path / "map.png")
    for given, index in (("sévère, grade 3", 2), ("0", 0)):
        assert main(["predict", "--model", run, scan, "--saliency", out, "--target", given, "--json"]) == 0
        info = json.loads(capsys.readouterr().out)["saliency"]
        assert info["target"] == index and info["class_name"] == names[index]
    assert main(["predict", "--model", run, scan, "--saliency", out, "--target", "normal"]) == 0
    assert f"saliency (hirescam) of class 'normal' written to {out}" in capsys.readouterr().out
    _user_error(capsys, ["predict", "--model", run, scan, "--saliency", out, "--target", "3"],
                f"--target 3: not a class of this model; give one of {names} or an index 0..2")
    _user_error(capsys, ["predict", "--model", run, scan, "--target", "normal"],
                "--target normal: it picks the class a saliency map explains; give --saliency OUT too")


def test_predict_never_replaces_a_file_that_is_not_a_saliency_map_it_wrote(tmp_path, capsys, untrained_run):
    import shutil

    scan = str(SAMPLE / "ct2d" / "P0001_1.dcm")
    notes, volume = tmp_path / "notes.png", tmp_path / "scan.nii.gz"
    notes.write_text("my notes\n")
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", volume)
    before = volume.read_bytes()
    for out in (notes, volume):
        _user_error(capsys, ["predict", "--model", str(untrained_run), scan, "--saliency", str(out)],
                    f"{out}: exists and is not a saliency map medtl wrote; refusing to replace it")
    assert notes.read_text() == "my notes\n" and volume.read_bytes() == before
    for name in ("map.png", "map.nii.gz"):  # a map medtl wrote is replaced by the next one
        for _ in range(2):
            assert main(["predict", "--model", str(untrained_run), scan, "--saliency", str(tmp_path / name)]) == 0
    capsys.readouterr()


def test_convert_never_replaces_its_input_or_a_file_medtl_did_not_write(tmp_path, capsys):
    import shutil

    scan, other = tmp_path / "scan.nii.gz", tmp_path / "other.nii.gz"
    shutil.copy(SAMPLE / "ct3d" / "P0031.nii.gz", scan)
    shutil.copy(SAMPLE / "ct3d" / "P0032.nii.gz", other)
    before = {p: p.read_bytes() for p in (scan, other)}
    _user_error(capsys, ["convert", str(scan), str(scan)], f"{scan}: is the input; choose another output file")
    _user_error(capsys, ["convert", str(scan), str(other)], f"{other}: exists and was not written by medtl")
    assert {p: p.read_bytes() for p in (scan, other)} == before
    out = tmp_path / "out.nii.gz"
    for _ in range(2):  # its own output is replaced by the next conversion
        assert main(["convert", str(scan), str(out)]) == 0


@pytest.mark.parametrize("argv, message", [
    (["app", "--model", "RUN", "--port", "-5"], "argument --port: -5 is not a port number (0 to 65535)"),
    (["app", "--model", "RUN", "--port", "70000"], "argument --port: 70000 is not a port number (0 to 65535)"),
    (["score", "--model", "RUN", "IN", "--out", "s.csv", "--workers", "-3"], "argument --workers: -3 is not 0 or more"),
    (["score", "--model", "RUN", "IN", "--out", "s.csv", "--batch-size", "0"], "argument --batch-size: 0 is not 1 or more"),
    (["listen", "--model", "RUN", "--work", "W", "--settle", "nan"], "argument --settle: nan is not 0 or more"),
    (["listen", "--model", "RUN", "--work", "W", "--port", "x"], "argument --port: 'x' is not a port number (0 to 65535)"),
])
def test_numbers_out_of_range_are_refused_by_the_parser(argv, message, capsys):
    """``app --port -5`` was an internal error (the socket's OverflowError); ``score --workers -3`` and
    ``listen --settle -1`` were taken as 0 without a word."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"medtl {argv[0]}: error: {message}"


def test_an_output_under_a_file_is_one_line_naming_it(tmp_path, capsys):
    """``convert scan.dcm afile/x.nii.gz`` was ``internal error ... FileExistsError``."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["convert", str(SAMPLE / "ct2d" / "P0001_1.dcm"), str(blocker / "x.nii.gz")]) == 2
    assert capsys.readouterr().err == (f"medtl: error: {blocker}: a file stands where the path needs a folder: "
                                       "choose another path\n")
    assert blocker.read_text() == "x"


def test_series_on_one_file_is_refused_not_ignored(tmp_path, capsys):
    src = save_nifti(Scan(np.zeros((4, 4, 3), np.int16), np.eye(4)), tmp_path / "a.nii.gz")
    for argv in (["info", str(src), "--series", "1"], ["convert", str(src), str(tmp_path / "b.nii.gz"), "--series", "1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "a.nii.gz" in err[0] and "leave --series out" in err[0]
    assert not (tmp_path / "b.nii.gz").exists()
    assert main(["info", str(SAMPLE / "series" / "P0041"), "--series", "0", "--json"]) == 0  # a folder takes it


#: What evaluate_predictions writes for cases of class 1 only: AUC and specificity undefined (null).
_ONE_CLASS = {"n": 8, "auc": None, "accuracy": 0.75, "balanced_accuracy": 0.75, "sensitivity": 0.75,
              "specificity": None, "ece": 0.25, "threshold": 0.5, "confusion_matrix": [[0, 0], [2, 6]],
              "ci": {"auc": [None, None], "accuracy": [0.5, 1.0], "balanced_accuracy": [0.5, 1.0],
                     "sensitivity": [0.5, 1.0], "specificity": [None, None], "ece": [0.1, 0.4]}}


def test_evaluate_of_cases_of_one_class_says_which_figures_are_undefined(tmp_path, untrained_run, monkeypatch,
                                                                        capsys):
    from medtl.train import run as train_run

    monkeypatch.setattr(train_run, "evaluate", lambda *a, **k: dict(_ONE_CLASS))
    assert main(["evaluate", "--model", str(untrained_run), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{'auc':<18} undefined (no case of class a here)" in out
    assert f"{'specificity':<18} undefined (no case of class a here)" in out
    assert f"{'sensitivity':<18} 0.7500  (95% CI 0.500-1.000)" in out
    assert f"{'n':<18} 8" in out and f"{'threshold':<18} 0.5000" in out


def test_train_summary_of_a_test_split_of_one_class_says_auc_is_undefined(tmp_path, monkeypatch, capsys):
    from medtl.train import run as train_run

    card = {"class_names": ["normal", "nodule"], "metrics": {"test": dict(_ONE_CLASS)}}
    monkeypatch.setattr(train_run, "train", lambda cfg, out, resume=False: train_run.RunResult(tmp_path, card))
    assert main(["train", "--config", "sample_tiny", "--out", str(tmp_path)]) == 0
    assert ("test AUC undefined (no case of class normal here), accuracy 0.7500  (95% CI 0.500-1.000)"
            in capsys.readouterr().out)


def test_evaluate_of_more_classes_says_there_is_no_threshold(tmp_path, untrained_run, monkeypatch, capsys):
    from medtl.train import run as train_run

    three = {"n": 3, "auc": 0.5, "threshold": None, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "ci": {}}
    monkeypatch.setattr(train_run, "evaluate", lambda *a, **k: dict(three))
    assert main(["evaluate", "--model", str(untrained_run), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{'threshold':<18} none (more than two classes: the prediction is the most probable class)" in out
    assert f"{'auc (macro)':<18} 0.5000" in out  # which AUC of three classes: the one-vs-rest mean


def _graded_metrics() -> dict:
    """evaluate_predictions of three grades, 7 cases decided [0, 1, 1, 1, 2, 2, 0]: QWK 4/9, CI below 0 to 1."""
    from medtl.train.metrics import evaluate_predictions

    decided = [0, 1, 1, 1, 2, 2, 0]
    p = np.full((7, 3), 0.1)
    p[np.arange(7), decided] = 0.8
    return evaluate_predictions([0, 0, 1, 1, 2, 2, 2], p, bootstrap=100, class_names=["none", "mild", "severe"])


def test_evaluate_of_ordered_grades_prints_the_kappa_and_each_class(tmp_path, untrained_run, monkeypatch, capsys):
    """`medtl evaluate` of three grades printed no quadratic weighted kappa and nothing per class."""
    from scipy.stats import binomtest

    from medtl.train import run as train_run

    graded = _graded_metrics()
    lo, hi = graded["ci"]["qwk"]
    monkeypatch.setattr(train_run, "evaluate", lambda *a, **k: dict(graded))
    assert main(["evaluate", "--model", str(untrained_run), "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{'qwk':<18} 0.4444  (95% CI {lo:.3f} to {hi:.3f})" in out and lo < 0  # not "-0.207-1.000"
    mild = binomtest(2, 2).proportion_ci(0.95, method="exact"), binomtest(2, 3).proportion_ci(0.95, method="exact")
    auc_lo, auc_hi = graded["per_class"]["mild"]["ci"]["auc"]  # Newcombe's, checked in tests/train/test_metrics.py
    i = out.index("per class (one-vs-rest)")
    assert out[i + 2] == (f"  {'mild':<16} n=2     sensitivity 1.000 (95% CI {mild[0].low:.3f}-1.000), "
                          f"ppv 0.667 (95% CI {mild[1].low:.3f}-{mild[1].high:.3f}), "
                          f"auc 0.900 (95% CI {auc_lo:.3f}-{auc_hi:.3f})")
    assert [line.split()[0] for line in out[i + 1:]] == ["none", "mild", "severe"]
    absent = _graded_metrics()
    absent["per_class"]["mild"].update(support=0, sensitivity=None, ppv=None, auc=None)
    absent["per_class"]["severe"].update(auc=None)
    lines = per_class_lines(absent)
    assert "sensitivity undefined (no case of it), ppv undefined (never decided), auc undefined (no case of it)" \
        in lines[2]
    assert "auc undefined (no case of another class)" in lines[3]
    assert per_class_lines({"auc": 0.9, "ci": {}}) == []  # two classes, or results written before


def test_train_summary_of_ordered_grades_gives_the_kappa(tmp_path, monkeypatch, capsys):
    from medtl.train import run as train_run

    graded = _graded_metrics()
    card = {"class_names": ["none", "mild", "severe"], "metrics": {"test": graded}}
    monkeypatch.setattr(train_run, "train", lambda cfg, out, resume=False: train_run.RunResult(tmp_path, card))
    assert main(["train", "--config", "sample_tiny", "--out", str(tmp_path)]) == 0
    lo, hi = graded["ci"]["qwk"]
    assert f", qwk 0.4444  (95% CI {lo:.3f} to {hi:.3f})" in capsys.readouterr().out
    assert metric_text({"qwk": None}, "qwk") == "undefined (every case and every decision is of one same class)"


def test_train_summary_of_more_classes_names_its_auc_macro(tmp_path, monkeypatch, capsys):
    from medtl.train import run as train_run

    three = {"n": 3, "auc": 0.5, "accuracy": 1.0, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "ci": {}}
    card = {"class_names": ["a", "b", "c"], "metrics": {"test": three}}
    monkeypatch.setattr(train_run, "train", lambda cfg, out, resume=False: train_run.RunResult(tmp_path, card))
    assert main(["train", "--config", "sample_tiny", "--out", str(tmp_path)]) == 0
    assert "test macro AUC 0.5000, accuracy 1.0000" in capsys.readouterr().out


def _doc_commands() -> list[tuple[str, str, bool]]:
    """``(doc, command, whole)`` for every ``medtl ...`` command of README.md and docs/*.md: a line of a shell
    block (``whole``: pasted as it is, so all of it must parse) or an inline code span (its options must exist;
    the rest may be a placeholder such as ``...``)."""
    import re

    root = Path(__file__).resolve().parents[1]
    found = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        prose, shell, fence = [], [], None
        for line in doc.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
            if line.startswith("```"):
                fence = None if fence is not None else line[3:].strip()
            elif fence is None:
                prose.append(line)
            elif fence in ("", "bash", "sh"):
                shell.append(re.split(r"(?:^|\s)#", line, maxsplit=1)[0])
        for part in (p.strip() for line in shell for p in re.split(r"&&|;|&\s*$", line)):
            if part.startswith("medtl "):
                found.append((doc.name, part, True))
        for span in re.findall(r"`([^`]+)`", "\n".join(prose)):
            for m in re.finditer(r"\bmedtl ([a-z][^`;|&>]*)", span):
                found.append((doc.name, "medtl " + m.group(1).strip(), False))
    return found


def test_every_medtl_command_in_the_docs_parses_as_written():
    """Users paste the docs' commands: README's batch-scoring line once carried ``[--saliency-dir maps/]
    [--parquet]``, which `medtl score` refuses ("unrecognized arguments"). Every fenced ``medtl`` line must
    parse as it stands, and every option an inline command names must be one of that command's options."""
    import argparse
    import shlex

    from medtl.cli import build_parser, parse_command_line

    parser = build_parser()
    commands = _doc_commands()
    assert sum(whole for _, _, whole in commands) > 15 and len(commands) > 50
    for doc, command, whole in commands:
        argv = shlex.split(command)[1:]
        if whole:
            try:
                parse_command_line(parser, argv)
            except SystemExit:
                pytest.fail(f"{doc}: `{command}` does not parse")
            continue
        sub, options = parser, set()
        for word in argv:  # down to the (sub)command the span names
            choices = next((a.choices for a in sub._actions if isinstance(a, argparse._SubParsersAction)), {})
            if word not in choices:
                break
            sub = choices[word]
        options = {o for a in sub._actions for o in a.option_strings}
        unknown = [w.split("=")[0] for w in argv if w.startswith("--") and w.split("=")[0] not in options]
        assert not unknown, f"{doc}: `{command}` names {unknown}, not options of `{sub.prog}`"
