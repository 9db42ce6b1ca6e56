"""The ``medtl`` command line: one entry point, one subcommand per task.

Parsing imports neither torch nor MONAI: each handler imports its stack when it
runs, so ``medtl --help`` answers in well under a second. Any
:class:`~medtl.errors.MedtlError` is printed as one line (no traceback), exit
code 2; anything else is a bug, printed as one line too (``MEDTL_DEBUG=1`` shows
the traceback), exit code 3. ``predict``/``score`` exit 1 when a study failed.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from medtl import __version__
from medtl._fileutil import CANNOT_WRITE
from medtl.errors import MedtlError, _printable

Handler = Callable[[argparse.Namespace], int]
#: Saliency methods offered on the command line: ``medtl.explain.METHODS`` and its default, copied here
#: so that parsing imports no torch (tests/test_cli.py keeps them equal).
SALIENCY_METHODS = ("hirescam", "gradcam", "gradcam++", "layercam", "occlusion", "integrated_gradients", "smoothgrad")
DEFAULT_SALIENCY = "hirescam"


def _port(text: str) -> int:
    """An argparse type: a TCP port (0 to 65535; the socket's own error was an internal error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0 to 65535)")
    return value


def _at_least(low: float, kind: type = int) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` that is ``low`` or more (a negative count was taken as 0)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        if not value >= low:  # NaN too
            raise argparse.ArgumentTypeError(f"{text} is not {low:g} or more")
        return value

    return parse


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --- info / convert / sample-data -------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    from medtl.io import detect_format, list_series, load_scan

    path = Path(args.path)
    _check_series_source(path, args.series)
    scan = load_scan(path, series=args.series, progress=None if not args.json else False)
    info = scan.summary()
    if detect_format(path) in ("folder", "zip"):
        info["series_found"] = list_series(path)
    if args.json:
        _print_json(info)
        return 0
    for key, value in info.items():
        if key == "series_found":
            print(f"series found: {len(value)}")
            for s in value:
                mark = "*" if s.get("series_uid") == scan.metadata.get("series_uid") else " "
                print(f"  {mark}[{s.get('index')}] {s.get('modality', '?'):<4} {s.get('n_files', '?'):>5} files  "
                      f"{s.get('description') or ''}  {s.get('series_uid')}"
                      f"{'' if s.get('is_image', True) else '  (not an image)'}")
        elif key == "slice_report" and isinstance(value, dict):
            print("slice report: " + ", ".join(f"{k}={v}" for k, v in value.items()))
        else:
            print(f"{key.replace('_', ' ')}: {value}")
    return 0


def _check_series_source(path: Path, series: str | None) -> None:
    """``--series`` picks among a DICOM folder's or zip's series; on one file it would be ignored silently."""
    if series is None or not path.is_file():
        return
    from medtl.io import detect_format

    if detect_format(path) != "zip":
        raise MedtlError(f"{path}: --series picks a series of a DICOM folder or .zip, and this is one file: "
                         "leave --series out, or give the folder")


def _check_convert_output(output: Path, input: Path) -> None:
    """Refuse to replace the input, or a file that is not a NIfTI medtl wrote (description ``medtl:...``)."""
    if not output.exists():
        return
    if output.resolve() == input.resolve():
        raise MedtlError(f"{output}: is the input; choose another output file")
    try:
        import nibabel as nib

        ours = bytes(nib.load(output).header["descrip"]).startswith(b"medtl:")
    except Exception:  # noqa: BLE001 - not a NIfTI medtl could have written
        ours = False
    if not ours:
        raise MedtlError(f"{output}: exists and was not written by medtl; refusing to replace it: move it or "
                         "choose another output file")


def cmd_convert(args: argparse.Namespace) -> int:
    from medtl.io import load_scan, save_nifti

    _check_convert_output(Path(args.output), Path(args.input))
    _check_series_source(Path(args.input), args.series)
    scan = load_scan(args.input, series=args.series, grayscale=args.grayscale)
    out = save_nifti(scan, args.output)
    print(f"wrote {out} shape={list(scan.shape)} spacing={[round(s, 4) for s in scan.spacing]} "
          f"orientation={scan.orientation}")
    return 0


def cmd_sample_data(args: argparse.Namespace) -> int:
    from medtl.demo.cohort import make_cohort

    manifest = make_cohort(args.out, size=args.size, seed=args.seed, progress=True)
    print(f"wrote sample cohort: {manifest}")
    return 0


# --- weights ---------------------------------------------------------------------------------

def cmd_weights(args: argparse.Namespace) -> int:
    from medtl.models import weights as W

    if args.weights_cmd == "list":
        rows = W.list_weights(weights_dir=args.weights_dir)
        for r in rows:
            local = Path(r["local"]) if r.get("local") else None
            r["size_mb"] = round(local.stat().st_size / 2**20, 1) if local else None
        if args.json:
            _print_json(rows)
            return 0
        print(f"{'name':<20} {'file':<34} {'size':>9}  available at")
        for r in rows:
            size = f"{r['size_mb']:.1f} MB" if r["size_mb"] else "-"
            print(f"{r['name']:<20} {r['filename']:<34} {size:>9}  {r['local'] or 'not here (medtl weights fetch/import)'}")
        return 0
    if args.weights_cmd == "fetch":
        print(W.fetch(args.name, weights_dir=args.weights_dir))
        return 0
    if args.weights_cmd == "import":
        print(f"imported into cache: {W.import_file(args.file, name=args.name)}")
        return 0
    if args.weights_cmd == "verify":
        rows = W.verify(args.name, weights_dir=args.weights_dir)
        bad = 0
        for r in rows:
            if r["path"] is None:
                print(f"--  {r['name']:<20} not available")
            elif r["ok"]:
                print(f"OK  {r['name']:<20} {r['path']}")
            else:
                bad += 1
                print(f"BAD {r['name']:<20} {r['path']}  expected sha256 {r['expected']}, actual {r['actual']}")
        return 1 if bad else 0
    raise MedtlError(f"unknown weights command {args.weights_cmd!r}")


def cmd_configs(args: argparse.Namespace) -> int:
    from medtl._recipes import list_recipes, recipe_path

    if args.reference:
        if args.name:
            raise MedtlError("medtl configs: give a recipe name or --reference, not both")
        from medtl.config import reference_markdown

        print(reference_markdown(), end="")
        return 0
    if args.name:
        print(recipe_path(args.name).read_text(), end="")
        return 0
    import shutil
    import textwrap

    recipes = list_recipes()
    width = max(map(len, recipes), default=0) + 2
    columns = max(shutil.get_terminal_size().columns, width + 40)
    for name, about in recipes.items():
        print(textwrap.fill(about, columns - 1, initial_indent=f"{name:<{width}}", subsequent_indent=" " * width))
    print("\nuse one with `medtl train --config NAME`; `medtl configs NAME` prints it (copy it to edit)")
    return 0


# --- train / evaluate --------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from medtl.config import load_config
    from medtl.train.run import find_learning_rate, train

    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file() and not args.find_lr:
        # the run's own settings, not a recipe that may have changed since (overrides still apply on top:
        # train.epochs=N extends a constant schedule; a one-cycle or cosine one is refused, see check_schedule_unchanged)
        if args.config:
            print(f"medtl: resuming with {saved} (the run's own settings) and the overrides given; --config "
                  f"{args.config} is not read", file=sys.stderr)
        cfg = load_config(saved, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    if args.find_lr:
        found = find_learning_rate(cfg, args.out)
        end = " (the loss diverged before the end of the sweep)" if found.stopped_early else ""
        print(f"suggested learning rate {found.suggestion:.3g} (range test {found.start:g} to {found.end:g} over "
              f"{len(found.lrs)} steps{end}); plot: {Path(args.out) / 'plots' / 'lr_find.png'}\n"
              f"use it with train.lr={found.suggestion:.3g}, or let every run pick its own with train.lr=auto")
        return 0
    try:
        result = train(cfg, args.out, resume=args.resume)
    except KeyboardInterrupt:
        if (Path(args.out) / "checkpoints" / "last.pt").is_file():
            print(f"medtl: the run stopped after its last finished epoch; continue it with "
                  f"`medtl train --out {args.out} --resume`", file=sys.stderr)
        raise
    test = result.metrics.get("test", {})
    if test:
        names = result.card.get("class_names") or []
        auc = "macro AUC" if _is_multiclass(test) else "AUC"
        qwk = f", qwk {metric_text(test, 'qwk', names)}" if "qwk" in test else ""
        print(f"test {auc} {metric_text(test, 'auc', names)}, accuracy {metric_text(test, 'accuracy', names)}{qwk}")
    verdict = result.card.get("degenerate") or {}
    if verdict.get("degenerate"):
        print(f"WARNING: this model did not learn to separate the classes ({'; '.join(verdict['reasons'])}); "
              f"predictions will carry this warning. Try more data or epochs, or train.batchnorm=reestimate for "
              f"small 3D batches.", file=sys.stderr)
    print(f"run written to {result.run_dir} (model card: {result.run_dir / 'model_card.json'})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run; without --out the results go to RUN/evaluations/SPLIT_DATA[_OVERRIDES]/ (never over
    the training's own evaluation in RUN/). Which data and split were used goes to stderr (stdout stays the
    metrics, JSON with --json)."""
    import re

    from medtl.runs import read_card
    from medtl.train.run import evaluate

    card = read_card(args.model)  # a mistyped --model is named before a results folder is made inside it
    out = args.out
    made: list[Path] = []
    args.split = args.split or ("all" if args.data else "test")
    if out is None:  # the data's folder too: siteB/manifest.csv and siteC/manifest.csv are two evaluations
        data_part = "-".join(Path(args.data).resolve().parts[-2:]) if args.data else "training-data"
        slug = "_".join([args.split, data_part, *args.overrides, *([f"tta-{args.tta}"] if args.tta != "card" else [])])
        folder = Path(args.model) / "evaluations" / (re.sub(r"[^A-Za-z0-9._=+-]+", "-", slug).strip("-") or "eval")
        try:
            made = [d for d in (folder.parent, folder) if not d.exists()]
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(str(folder))
            out = str(folder)
        except OSError:
            print(f"medtl: cannot write into the run folder ({folder}); the results are printed only: pass "
                  "--out FOLDER to keep them", file=sys.stderr)
    try:
        metrics = evaluate(args.model, data=args.data, split=args.split, out=out, overrides=args.overrides,
                           tta={"card": None, "on": True, "off": False}[args.tta])
    except BaseException:
        for d in reversed(made):  # a refused evaluation leaves no empty results folder behind
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    on = metrics.get("evaluated_on") or {}
    where = on.get("data") or args.data or "the training data"
    extra = f", {' '.join(args.overrides)}" if args.overrides else ""
    extra += f", {on['tta_views']} test-time views" if on.get("tta_views") else ""
    print(f"evaluated {args.model} on {where}, split {on.get('split', args.split)} ({metrics.get('n', '?')} cases"
          f"{extra})", file=sys.stderr)
    if out:
        print(f"results written to {out}/ (metrics.json, predictions_{args.split}.csv, plots)", file=sys.stderr)
    if args.json:
        _print_json(metrics)
        return 0
    names = card.get("class_names") or []
    for key in ("n", "auc", "accuracy", "balanced_accuracy", "qwk", "sensitivity", "specificity", "ece", "threshold"):
        if key in metrics:
            label = "auc (macro)" if key == "auc" and _is_multiclass(metrics) else key
            print(f"{label:<18} {metric_text(metrics, key, names)}")
    for line in per_class_lines(metrics):
        print(line)
    return 0


def per_class_lines(metrics: dict[str, Any]) -> list[str]:
    """The printed table of ``metrics["per_class"]`` (more than two classes): a line per class with its case
    count, sensitivity, PPV and one-vs-rest AUC, 3 decimals and 95% CI; none for two classes or older results."""
    from medtl.runs import ci_text  # here: the CLI parses without torch, which medtl.runs imports

    per_class = metrics.get("per_class") or {}
    if not per_class:
        return []
    lines = ["per class (one-vs-rest)"]
    for name, entry in per_class.items():
        texts = []
        for key in ("sensitivity", "ppv", "auc"):
            value = entry.get(key)
            if value is None:  # why it is null (medtl.train.metrics.per_class_metrics)
                why = "never decided" if key == "ppv" else "no case of it" if not entry.get("support") else \
                    "no case of another class"
                texts.append(f"{key} undefined ({why})")
                continue
            texts.append(f"{key} {value:.3f}{ci_text(entry, key)}")
        lines.append(f"  {name:<16} n={entry.get('support', '?'):<5} " + ", ".join(texts))
    return lines


def _is_multiclass(metrics: dict[str, Any]) -> bool:
    """More than two classes in ``metrics`` (its confusion matrix): its AUC is the macro one-vs-rest mean."""
    return len(metrics.get("confusion_matrix") or []) > 2


def metric_text(metrics: dict[str, Any], key: str, class_names: Sequence[str] = ()) -> str:
    """``metrics[key]`` for the printed summary: 4 decimals and its 95% CI, a count or threshold as it is, or,
    where ``metrics.json`` holds null, why it is undefined (the classes absent from the cases, read off the
    confusion matrix) rather than a crash on formatting None."""
    value = metrics.get(key)
    if key == "threshold" and value is None:
        return "none (more than two classes: the prediction is the most probable class)"
    if key == "qwk" and value is None:
        return "undefined (every case and every decision is of one same class)"
    if key in ("n", "threshold"):
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    if value is None:
        cm = metrics.get("confusion_matrix") or []
        absent = [str(class_names[i]) if i < len(class_names) else str(i) for i, row in enumerate(cm) if not sum(row)]
        why = f"no case of class {', '.join(absent)} here" if absent else "no case it is computed on"
        return f"undefined ({why})"
    from medtl.runs import ci_text  # here: the CLI parses without torch, which medtl.runs imports

    span = ci_text(metrics, key)
    return f"{value:.4f} {span}" if span else f"{value:.4f}"  # two spaces before the CI, as a column gap


# --- predict / score ----------------------------------------------------------------------

def _class_index(given: str, names: Sequence[str]) -> int:
    """The index of class ``given``: its name, else its index 0..K-1 (``--target``)."""
    if given in names:
        return list(names).index(given)
    if given.isdigit() and int(given) < len(names):
        return int(given)
    raise MedtlError(f"--target {given}: not a class of this model; give one of {list(names)} or an index "
                     f"0..{len(names) - 1}")


def cmd_predict(args: argparse.Namespace) -> int:
    from medtl.infer import Predictor, write_saliency
    from medtl.infer.predictor import OOD_WARNING, check_saliency_output
    from medtl.io import load_scan

    out = Path(args.saliency) if args.saliency else None
    if out is not None and not out.name.lower().endswith((".png", ".nii", ".nii.gz")):
        raise MedtlError(f"{out}: --saliency must end in .png (overlay) or .nii/.nii.gz (map in the scan's geometry)")
    if out is not None:
        check_saliency_output(out)  # before minutes of saliency, not after
    if args.target is not None and out is None:
        raise MedtlError(f"--target {args.target}: it picks the class a saliency map explains; give --saliency OUT too")
    _check_series_source(Path(args.scan), args.series)
    predictor = Predictor.from_run(args.model, device=args.device, allow_other_domain=args.allow_other_domain)
    target = None if args.target is None else _class_index(args.target, predictor.class_names)
    scan = load_scan(args.scan, series=args.series, progress=False)
    pred = predictor.predict(scan, saliency=args.method if out is not None else None, target=target,
                             progress=not args.json)  # occlusion's windows (a 3D map takes minutes) on stderr
    if out is not None and pred.saliency is not None:
        write_saliency(out, scan, pred.saliency, warning=OOD_WARNING if pred.out_of_distribution else "")
    if args.json:
        info: dict[str, Any] = pred.to_dict()
        info["model"] = predictor.model_id
        if out is not None:
            info.setdefault("saliency", {})["path"] = str(out)
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"study: {pred.source}  shape {'x'.join(str(s) for s in pred.shape)}")
    print(f"model: {predictor.model_id}")
    for warning in pred.warnings:
        print(f"WARNING: {warning}")
    shown = pred.threshold_texts(4) if pred.threshold is not None else None
    for name, p in pred.probabilities.items():
        print(f"  p({name}) = {shown[0] if shown and name == pred.positive_class else f'{p:.4f}'}")
    if shown:
        print(f"decision: {pred.decision}  (positive class '{pred.positive_class}' when p >= {shown[1]})")
    else:
        print(f"decision: {pred.decision}  (most probable class)")
    print(f"preprocessing: {pred.preprocessing_text}")
    if pred.ood_score is not None:
        verdict = "OUTSIDE the training distribution" if pred.out_of_distribution else "within the training distribution"
        print(f"out-of-distribution score ({pred.ood_method}): {pred.ood_score:.4g} (threshold "
              f"{pred.ood_threshold:.4g}): {verdict}")
    if out is not None:
        print(f"saliency ({args.method}) of class '{pred.saliency_info['class_name']}' written to {out}")
        if pred.saliency_info.get("note"):
            print(f"WARNING: {pred.saliency_info['note']}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    if args.engine == "local" and args.workers > 0:
        from medtl import _forkserver

        # the workers' fork server imports the readers (about 3 s) while this process imports its own
        _forkserver.warm_up(["medtl.infer.engines"])
    from medtl.infer import score

    summary = score(args.model, args.input, args.out, workers=args.workers, batch_size=args.batch_size,
                    engine=args.engine, saliency_dir=args.saliency_dir, saliency_method=args.method,
                    parquet=args.parquet, progress=not args.no_progress and not args.json,
                    errors_csv=args.errors, device=args.device, ray_address=args.ray_address,
                    allow_other_domain=args.allow_other_domain,
                    study_timeout=args.study_timeout)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        print(summary.text())
    return summary.exit_code


# --- pacs / listen ------------------------------------------------------------------------------

def _pacs_setup(args: argparse.Namespace) -> Any:
    try:
        from medtl.pacs import load_pacs_config
        import dicomweb_client  # noqa: F401 - fail early with the install hint
        import highdicom  # noqa: F401
        import pynetdicom  # noqa: F401
    except ModuleNotFoundError as exc:
        raise MedtlError(f"PACS commands need {exc.name}: pip install 'medtl[pacs]'") from None
    import logging

    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return load_pacs_config(args.pacs_config)


def _pacs_query(args: argparse.Namespace) -> Any:
    from medtl.pacs import Query

    return Query(patient_id=args.patient_id, study_uid=args.study_uid, accession=args.accession,
                 modality=args.modality, date_from=args.date_from, date_to=args.date_to,
                 series_description=args.series_description, series_uid=args.series_uid)


def cmd_pacs(args: argparse.Namespace) -> int:
    config = _pacs_setup(args)
    from medtl.pacs import workflow

    if args.pacs_cmd == "echo":
        if args.via == "dicomweb":
            workflow.connect(config, "dicomweb").ping()
        else:
            workflow.connect(config, "dimse").echo()
        print(f"OK: {config.describe()}")
        return 0
    if args.pacs_cmd == "find":
        refs = workflow.find(config, _pacs_query(args), via=args.via)
        if args.json:
            _print_json([r.to_dict() for r in refs])
            return 0
        if refs:
            print(f"{'date':<8}  {'mod':<4} {'inst':>5}  study UID  series UID  description")
        for r in refs:
            n = "?" if r.n_instances is None else r.n_instances
            print(f"{r.study_date or '-':<8}  {r.modality or '-':<4} {n:>5}  {r.study_uid}  {r.series_uid}  "
                  f"{r.description}")
        print(f"{len(refs)} series")
        return 0
    if args.pacs_cmd == "pull":
        summary = workflow.PacsRunSummary(errors_csv=str(Path(args.out) / "errors.csv"))
        workflow.check_errors_file(Path(args.out) / "errors.csv", "--out")
        failures: list[dict[str, str]] = []
        workflow.pull(config, _pacs_query(args), args.out, via=args.via, summary=summary, failures=failures)
        workflow.append_errors(Path(args.out) / "errors.csv", failures, "--out")
        print(summary.text().splitlines()[0] + f" -> {args.out}")
        return 1 if failures else 0
    workflow.check_errors_file(Path(args.work) / "errors.csv")  # before the model loads, not after
    from medtl.infer import Predictor

    predictor = Predictor.from_run(args.model, device=args.device, allow_other_domain=args.allow_other_domain)
    if args.pacs_cmd == "score":
        summary = workflow.pacs_score(predictor, config, _pacs_query(args), args.work, via=args.via,
                                      push=not args.no_push, push_via=args.push_via, method=args.method,
                                      workers=args.workers, progress=not args.json)
    else:  # push: results of an earlier `score --no-push`, or pushes that failed
        summary = workflow.PacsRunSummary(errors_csv=str(Path(args.work) / "errors.csv"))
        failures = []
        workflow.push_scored(predictor, config, args.work, via=args.push_via, method=args.method, summary=summary,
                             failures=failures)
        workflow.append_errors(Path(args.work) / "errors.csv", failures)
        summary.failures = failures
    if args.json:
        _print_json(summary.to_dict())
    else:
        print(summary.text() if args.pacs_cmd == "score" else "\n".join(summary.text().splitlines()[2:]))
    return summary.exit_code


def cmd_listen(args: argparse.Namespace) -> int:
    config = _pacs_setup(args)
    if args.port:
        config = config.with_(listen_port=args.port)
    from medtl.infer import Predictor
    from medtl.pacs.listen import Listener

    predictor = Predictor.from_run(args.model, device=args.device, allow_other_domain=args.allow_other_domain)
    return Listener(predictor, config, args.work, settle=args.settle, push=not args.no_push,
                    method=args.method, keep_incoming=args.keep_incoming).run()


# --- app ---------------------------------------------------------------------------------------

def cmd_app(args: argparse.Namespace) -> int:
    try:
        from medtl.app import serve
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "gradio":
            raise
        raise MedtlError("`medtl app` needs Gradio: pip install 'medtl[app]'") from None
    return serve(args.model, host=args.host, port=args.port, device=args.device,
                 pacs_config=getattr(args, "pacs_config", None))


def cmd_demo(args: argparse.Namespace) -> int:
    from medtl.demo import run_demo

    report = run_demo(args.out, size=args.size, epochs=args.epochs)
    print(f"open {report}")
    runs = Path(args.out) / "runs"
    models = [f"{name}={runs / name}" for name in ("domain_shift", "baseline")]
    if args.serve:
        return cmd_app(argparse.Namespace(model=models, host=args.host, port=args.port, device="auto"))
    # `medtl demo --serve` would train both models again: say how to serve these
    print("the app on these models: medtl app " + " ".join(f"--model {m}" for m in models))
    return 0


# --- parser ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtl", description="medtl: transfer learning for medical imaging (load, adapt, fine-tune, explain, serve).")
    parser.add_argument("--version", action="version", version=f"medtl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="describe a scan: format, modality, shape, spacing, orientation, series")
    p.add_argument("path", help="DICOM file, DICOM folder or .zip, NIfTI, PNG/JPEG/TIFF")
    p.add_argument("--series", help="series index or SeriesInstanceUID (folders/zips)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="convert any supported scan to NIfTI with its geometry")
    p.add_argument("input")
    p.add_argument("output", help="OUT.nii or OUT.nii.gz")
    p.add_argument("--series", help="series index or SeriesInstanceUID (folders/zips)")
    p.add_argument("--grayscale", action="store_true", help="convert colour images to luminance")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("sample-data", help="write the synthetic sample cohort (DICOM, NIfTI, PNG + manifest)")
    p.add_argument("out", help="output folder")
    p.add_argument("--size", choices=["small", "full"], default="small",
                   help="small: the cohort the docs' examples use (about 3 MB); full: about 400 2D images and 60 "
                        "volumes (what `medtl demo` trains on)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("weights", help="list, fetch, import (air-gapped) and verify pretrained weights")
    p.add_argument("--weights-dir", help="folder of weight files (also MEDTL_WEIGHTS_DIR)")
    wsub = p.add_subparsers(dest="weights_cmd", metavar="ACTION", required=True)
    w = wsub.add_parser("list", help="name, file, size and whether it is available")
    w.add_argument("--json", action="store_true")
    w = wsub.add_parser("fetch", help="download into the cache (progress bar, SHA-256 check)")
    w.add_argument("name")
    w = wsub.add_parser("import", help="verify a file's SHA-256 and copy it into the cache (offline sites)")
    w.add_argument("file")
    w.add_argument("--name", help="registry name, when the file name does not tell")
    w = wsub.add_parser("verify", help="re-check the SHA-256 of available weight files")
    w.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("configs", help="list the recipes shipped with medtl, print one, or the reference of every key")
    p.add_argument("name", nargs="?", help="recipe to print (e.g. sample_tiny)")
    p.add_argument("--reference", action="store_true",
                   help="print the reference of every config key (type, default, allowed values; docs/config.md)")
    p.set_defaults(func=cmd_configs)

    p = sub.add_parser("train", help="fine-tune a backbone on a cohort (YAML config + key=value overrides)")
    p.add_argument("--config", help="YAML file, or the name of a shipped recipe (`medtl configs` lists them)")
    p.add_argument("--out", required=True, help="run directory (model, model card, metrics, plots)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoints/last.pt, with OUT/config.yaml (+ the overrides given)")
    p.add_argument("--find-lr", action="store_true",
                   help="only run a learning-rate range test: suggest train.lr, plot in OUT/plots/lr_find.png")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.epochs=5 data.path=x.npz")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained run on a dataset split (metrics with 95%% CIs)")
    p.add_argument("--model", required=True, help="run directory written by `medtl train`")
    p.add_argument("--data", help="dataset (manifest CSV, class folders, .npz); default: the training data")
    p.add_argument("--split", choices=("train", "val", "test", "all"),
                   help="split to evaluate (default: test of the training data; all of other --data)")
    p.add_argument("--out", help="folder for metrics JSON and plots (default: RUN/evaluations/SPLIT_DATA[_OVERRIDES])")
    p.add_argument("--json", action="store_true")
    p.add_argument("--tta", choices=("card", "on", "off"), default="card",
                   help="test-time views: the model card's (default), the run's training augmentation's, or none")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data.* overrides, e.g. data.filter.site=B")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="the whole pipeline on the built-in sample cohort (CPU, offline, minutes)")
    p.add_argument("--out", default="demo_out", help="output folder (report.html, runs, scores)")
    p.add_argument("--size", choices=["small", "full"], default="full", help="sample cohort size")
    p.add_argument("--epochs", type=int, help="override the training epochs")
    p.add_argument("--serve", action="store_true",
                   help="after the demo, open the app on the models it trained (trains them anew; for an earlier "
                        "demo's models: medtl app --model OUT/runs/domain_shift)")
    p.add_argument("--host", default="127.0.0.1", help="with --serve: address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=7860, help="with --serve: port (default 7860)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "predict", help="classify one scan with a trained run: probabilities, decision at the card's threshold")
    p.add_argument("--model", required=True, help="run directory written by `medtl train`")
    p.add_argument("scan", help="DICOM file, DICOM folder or .zip, NIfTI, PNG/JPEG/TIFF")
    p.add_argument("--series", help="series index or SeriesInstanceUID (folders/zips)")
    p.add_argument("--saliency", metavar="OUT",
                   help="write a saliency map: OUT.png (overlay; 3D: the axial slice where the map peaks) or "
                        "OUT.nii.gz (3D map)")
    p.add_argument("--method", choices=SALIENCY_METHODS, default=DEFAULT_SALIENCY,
                   help="saliency method (default: the best pointing game measured, docs/benchmarks.md)")
    p.add_argument("--target", metavar="CLASS",
                   help="with --saliency: the class the map explains, by name or index (default: the decision)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--allow-other-domain", action="store_true",
                   help="predict even when the header says the scan is not what the model was trained on")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "score", help="score a folder of studies or a manifest CSV into a CSV (streamed, resumable)",
        description="Score every study under INPUT. Re-running the same command resumes: studies already in "
                    "OUT are skipped. Failures go to OUT's errors file (scores.csv -> scores.errors.csv); exit code 1 "
                    "when any study failed. Size limits: MEDTL_MAX_BYTES, MEDTL_MAX_VOXELS, MEDTL_MAX_FRAME_PIXELS, "
                    "MEDTL_MAX_FRAMES "
                    "(see README, 'Limits and hostile input').")
    p.add_argument("--model", required=True, help="run directory written by `medtl train`")
    p.add_argument("input", help="folder of studies (DICOM series, NIfTI, images) or a manifest CSV (path column)")
    p.add_argument("--out", required=True, help="scores CSV (appended to; resumable)")
    p.add_argument("--errors", help="errors CSV (default: OUT's name with .errors.csv, e.g. scores.errors.csv); "
                   "never replaces a file medtl did not write")
    p.add_argument("--study-timeout", type=float, default=None, metavar="SECONDS",
                   help="wall-clock limit per study; a study past it is stopped and listed in the errors file "
                        "(default: MEDTL_STUDY_TIMEOUT or 600; 0: none)")
    p.add_argument("--workers", type=_at_least(0), default=2, help="decoding worker processes (0: in the main process)")
    p.add_argument("--batch-size", type=_at_least(1), default=16, help="studies per model call")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local worker processes, or Ray tasks (pip install 'medtl[ray]')")
    p.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--saliency-dir", help="write one saliency map per study here (PNG for 2D, NIfTI for 3D)")
    p.add_argument("--method", choices=SALIENCY_METHODS, default=DEFAULT_SALIENCY,
                   help="saliency method (default: the best pointing game measured, docs/benchmarks.md)")
    p.add_argument("--parquet", action="store_true", help="also write OUT with .parquet (pip install 'medtl[parquet]')")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-other-domain", action="store_true",
                   help="score studies whose header says they are not what the model was trained on (noted per row)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_score)

    pacs_common = argparse.ArgumentParser(add_help=False)
    pacs_common.add_argument("--pacs-config", metavar="FILE",
                             help="PACS settings (YAML; default MEDTL_PACS_CONFIG, then ~/.config/medtl/pacs.yaml; "
                                  "MEDTL_PACS_* variables override). Credentials go there, never on the command line")
    pacs_common.add_argument("-v", "--verbose", action="store_true", help="log each step (UIDs only, no patient data)")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--patient-id", help="PatientID (wildcards * ?)")
    filters.add_argument("--study-uid", help="StudyInstanceUID")
    filters.add_argument("--accession", help="AccessionNumber (wildcards * ?)")
    filters.add_argument("--modality", help="e.g. CT, CR, DX, MR")
    filters.add_argument("--date-from", metavar="YYYY-MM-DD", help="study date from (inclusive)")
    filters.add_argument("--date-to", metavar="YYYY-MM-DD", help="study date to (inclusive)")
    filters.add_argument("--series-description", help="SeriesDescription (wildcards * ?)")
    filters.add_argument("--series-uid", help="SeriesInstanceUID")
    model_opts = argparse.ArgumentParser(add_help=False)
    model_opts.add_argument("--model", required=True, help="run directory written by `medtl train`")
    model_opts.add_argument("--method", choices=SALIENCY_METHODS, default=DEFAULT_SALIENCY,
                   help="saliency method (default: the best pointing game measured, docs/benchmarks.md)")
    model_opts.add_argument("--push-via", choices=("dicomweb", "dimse"),
                            help="STOW-RS or C-STORE (default: the config's push)")
    model_opts.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    model_opts.add_argument("--allow-other-domain", action="store_true",
                            help="push results even for studies outside the model's training domain")
    model_opts.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("pacs", help="query a PACS, pull studies, score them and push the results back as DICOM",
                       description="DICOMweb (QIDO/WADO/STOW) or DIMSE (C-FIND/C-GET/C-MOVE/C-STORE). Settings and "
                                   "credentials come from --pacs-config or MEDTL_PACS_* (see README, 'With a PACS').")
    psub = p.add_subparsers(dest="pacs_cmd", metavar="ACTION", required=True)
    a = psub.add_parser("echo", parents=[pacs_common], help="check that the PACS answers (and accepts the credentials)")
    a.add_argument("--via", choices=("dicomweb", "dimse"), default="dicomweb")
    a = psub.add_parser("find", parents=[pacs_common, filters],
                        help="list matching series (UIDs, modality, date, size and the series description, free text "
                             "the site typed; no patient names or IDs)")
    a.add_argument("--via", choices=("dicomweb", "dimse"), default="dicomweb", help="QIDO-RS or C-FIND")
    a.add_argument("--json", action="store_true")
    a = psub.add_parser("pull", parents=[pacs_common, filters], help="retrieve matching series into a folder (resumable)")
    a.add_argument("--out", required=True, help="folder (OUT/<study>/<series>/<instance>.dcm)")
    a.add_argument("--via", choices=("dicomweb", "cget", "cmove"), default="dicomweb", help="WADO-RS, C-GET or C-MOVE")
    a = psub.add_parser("score", parents=[pacs_common, filters, model_opts],
                        help="pull, score (resumable) and push SR + overlay + saliency SEG into each source study")
    a.add_argument("--work", required=True, help="work folder: incoming/, scores.csv, errors.csv, pushed.csv")
    a.add_argument("--via", choices=("dicomweb", "cget", "cmove"), default="dicomweb", help="WADO-RS, C-GET or C-MOVE")
    a.add_argument("--no-push", action="store_true", help="score only (push later with `medtl pacs push`)")
    a.add_argument("--workers", type=_at_least(0), default=0, help="decoding worker processes (0: in the main process)")
    a = psub.add_parser("push", parents=[pacs_common, model_opts],
                        help="push results of a work folder's scored studies not pushed yet")
    a.add_argument("--work", required=True, help="work folder of `medtl pacs score`")
    p.set_defaults(func=cmd_pacs)

    p = sub.add_parser("listen", parents=[pacs_common],
                       help="DICOM storage SCP: score each study routed to medtl once complete, push the results back",
                       description="Receives studies (C-STORE) as the configured AE title on dimse.listen_port, "
                                   "scores a study when no instance came for --settle seconds, pushes the results. "
                                   "Safe to kill and restart: nothing is scored or pushed twice.")
    p.add_argument("--model", required=True, help="run directory written by `medtl train`")
    p.add_argument("--work", required=True, help="work folder: incoming/, scores.csv, pushed.csv, studies.csv")
    p.add_argument("--settle", type=_at_least(0, float), default=10.0,
                   help="seconds without a new instance = study complete")
    p.add_argument("--port", type=_port, help="listen port (default: the config's dimse.listen_port)")
    p.add_argument("--method", choices=SALIENCY_METHODS, default=DEFAULT_SALIENCY,
                   help="saliency method (default: the best pointing game measured, docs/benchmarks.md)")
    p.add_argument("--no-push", action="store_true", help="score only")
    p.add_argument("--keep-incoming", action="store_true",
                   help="keep a study's received instances after its results are pushed (default: deleted then; "
                        "a study with a failure, or not pushed, keeps them)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    p.add_argument("--allow-other-domain", action="store_true",
                   help="push results even for studies outside the model's training domain")
    p.set_defaults(func=cmd_listen)

    p = sub.add_parser("app", help="serve the browser app for clinicians: upload a scan, see prediction and saliency")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]RUN_DIR",
                   help="run folder written by `medtl train`; repeat to offer several models")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--pacs-config", metavar="FILE",
                   help="PACS settings (YAML, as for `medtl pacs`): adds a 'From PACS' panel (search, open a series, "
                        "send the result back). Default: MEDTL_PACS_CONFIG, then ~/.config/medtl/pacs.yaml when present")
    p.set_defaults(func=cmd_app)
    return parser


def _suggest_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """``medtl trian`` -> a one-line hint naming ``train`` (argparse alone lists every choice)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if first is None or first in sub.choices:
        return None
    close = difflib.get_close_matches(first, list(sub.choices), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f" (commands: {', '.join(sub.choices)})"
    return f"unknown command {first!r}{hint}"


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed as ``medtl`` parses it, without running the command (the docs' commands are checked
    with it); a mistake exits 2 with argparse's one-line error."""
    args, extra = parser.parse_known_args(argv)
    if extra:  # KEY=VALUE overrides after an option (`--config X a=1 --out R b=2`) are still overrides
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A warning as one line on stderr when medtl raised it (a missing slice, an unknown pixel size). A
    library's is dropped: not the user's to act on, and pydicom's quote header values verbatim
    (``Invalid value for VR UI: '...'``), which must not reach a terminal or a log. MEDTL_DEBUG=1 shows all."""
    if str(Path(filename).resolve()).startswith(_PACKAGE_DIR):
        print(f"WARNING: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("MEDTL_DEBUG"):
        return _main(argv)
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return _main(argv)
    finally:
        warnings.showwarning = shown


def _main(argv: list[str]) -> int:
    parser = build_parser()
    wrong = _suggest_command(parser, argv)
    if wrong:
        parser.print_usage(sys.stderr)
        print(f"medtl: error: {wrong}", file=sys.stderr)
        return 2
    args = parse_command_line(parser, argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so a reader that left (`| head`) is caught below
        return code
    except MedtlError as exc:
        print(f"medtl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medtl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `medtl ... | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail again
        return 141
    except OSError as exc:
        problem = _path_problem(exc)
        if problem is None or os.environ.get("MEDTL_DEBUG"):
            return _internal_error(args, exc)
        print(f"medtl: error: {problem}", file=sys.stderr)
        return 2
    except Exception as exc:
        return _internal_error(args, exc)


#: What a path the user gave can be wrong with, and the fix (an output under a file, a folder given for a file).
_PATH_FIXES = {
    errno.ENOTDIR: "a file stands where the path needs a folder: choose another path",
    errno.EEXIST: "a file stands where the path needs a folder: choose another path",
    errno.EISDIR: "is a folder: give the name of a file",
    errno.EACCES: "permission denied: choose a path you may use or fix its permissions",
    errno.EPERM: "permission denied: choose a path you may use or fix its permissions",
    errno.ENAMETOOLONG: "name too long: choose a shorter path",
}


def _path_problem(exc: OSError) -> str | None:
    """One line for an OSError that says what is wrong with a path the user gave (a full disk, a file where
    a folder is needed...); None for one that says nothing a user can fix (a bug: an internal error)."""
    if exc.errno in CANNOT_WRITE:
        return _cannot_write(exc)
    if exc.errno in _PATH_FIXES and exc.filename:
        return f"{_printable(str(exc.filename))}: {_PATH_FIXES[exc.errno]}"
    return None


def _cannot_write(exc: OSError) -> str:
    """One line for an output the disk could not take: which file, why, and the fix."""
    where = f"{_printable(str(exc.filename))}: " if exc.filename else ""
    fix = ("choose an output on a writable disk" if exc.errno == errno.EROFS else
           "free space on that disk or choose an output on another one")
    return f"{where}cannot write ({exc.strerror}); {fix}"


def _internal_error(args: argparse.Namespace, exc: Exception) -> int:
    """A bug, not bad input: one line, the traceback only on request."""
    if os.environ.get("MEDTL_DEBUG"):
        raise exc
    where = next((str(getattr(args, k)) for k in ("scan", "input", "path", "config", "model")
                  if getattr(args, k, None)), "")
    print(f"medtl: internal error{' on ' + where if where else ''}: {type(exc).__name__}: "
          f"{str(exc).splitlines()[0] if str(exc) else ''} (MEDTL_DEBUG=1 shows the traceback; "
          f"please report it)", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
