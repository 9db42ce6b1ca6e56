"""A run folder and its model card: written by ``medtl.train``, read by ``medtl.infer`` and the app.

``runs/<name>/`` holds:

- ``model.safetensors`` (best validation weights) and ``model_card.json``
  (architecture, adaptation, preprocessing, class names, threshold, data
  summary, metrics with 95% CIs, intended use);
- ``config.yaml`` (the resolved config), ``metrics.csv`` + ``tensorboard/``
  (per epoch), ``predictions_test.csv`` (each test case's label, ``predicted`` class at the card's
  threshold and class probabilities);
- ``plots/``: learning curves, ROC, PR, confusion matrix, reliability diagram;
- ``checkpoints/last.pt`` (for ``--resume``).

This module is the only contract between training and serving: prediction loads
a run with :func:`load_run` and never imports the training stack.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtl._fileutil import atomic_path, lock_held, lock_holder, read_small_text, write_json
from medtl.errors import MedtlError, one_line

__all__ = [
    "CARD_FORMAT", "CARD_KEYS", "INTENDED_USE", "LIMITATIONS", "card_hash", "card_path", "load_run", "read_card",
    "resolve_device", "save_weights", "write_card",
]

CARD_FORMAT = "medtl-model-card/1"
#: The largest model card read: a card is a few KB (its metrics and data summary); 500 MB took seconds and GBs.
MAX_CARD_BYTES = 1 << 24
#: Keys every model card has; :func:`read_card` refuses a card without them.
CARD_KEYS = ("format", "name", "class_names", "model", "preprocessing", "files")
INTENDED_USE = (
    "Research use: a classifier fine-tuned from ImageNet-pretrained weights on the cohort summarised here. "
    "Not a medical device; not for diagnosis without review by a qualified clinician."
)
LIMITATIONS = (
    "Performance is measured only on the test split of the training data source; expect it to drop on other "
    "scanners, sites or populations (domain shift). Check calibration and threshold locally before any use."
)


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` is the first CUDA GPU when there is one, else the CPU; other names as torch reads them."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MedtlError(f"device {name!r} is not a torch device (use auto, cpu, cuda, cuda:1 or mps)") from None
    if device.type == "cuda":  # torch itself fails later, in the middle of loading, with an AssertionError
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise MedtlError(f"device {name!r}: this machine has no CUDA GPU that torch can use; use auto or cpu")
        if device.index is not None and device.index >= count:
            raise MedtlError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}; "
                             "choose one of them, auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MedtlError(f"device {name!r}: Apple's MPS is not available on this machine; use auto or cpu")
    return device


def channels_last(spatial_dims: int) -> torch.memory_format:
    """The channels-last layout of ``spatial_dims``-D inputs: ``channels_last`` in 2D, ``channels_last_3d`` in 3D."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def memory_format(device: torch.device, spatial_dims: int) -> torch.memory_format:
    """The layout convolutions run fastest in on ``device``: channels-last on a GPU, and on a CPU in 2D only.

    On a CPU, channels-last trains the ``medmnist2d`` recipe (EfficientNet-Lite0, 96 px, batch 32) 1.5x as
    fast as the default layout; in 3D the gain depends on the shape (1.3x at 64^3 batch 16, 0.9x at
    32x64x64 batch 4), so 3D keeps the default (``benchmarks/bench_train.py --formats``; docs/benchmarks.md).
    Other devices (e.g. ``mps``) keep the default layout: not measured.
    """
    if device.type == "cuda" or (device.type == "cpu" and spatial_dims == 2):
        return channels_last(spatial_dims)
    return torch.contiguous_format


def to_memory_format(model: nn.Module, fmt: torch.memory_format) -> nn.Module:
    """``model`` with its parameters and buffers of the rank ``fmt`` applies to in that layout, in place.

    ``model.to(memory_format=torch.channels_last_3d)`` raises on the 2D kernels that 3D models built from 2D
    ones keep (ACS convolutions, 2.5D slice backbones); those stay as they are here.
    """
    rank = {torch.channels_last: 4, torch.channels_last_3d: 5}.get(fmt)
    return model._apply(lambda t: t.contiguous(memory_format=fmt) if t.dim() == rank else
                        t.contiguous() if rank is None and t.dim() in (4, 5) else t)


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Weights as safetensors (no pickle), written atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def write_card(run_dir: str | os.PathLike, card: dict[str, Any]) -> Path:
    """Write ``model_card.json`` atomically (a reader never sees half a card)."""
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise MedtlError(f"{run_dir}: model card lacks {', '.join(missing)}")
    path = Path(run_dir) / "model_card.json"
    write_json(path, card)
    return path


def card_path(run_dir: str | os.PathLike) -> Path:
    """``RUN/model_card.json``, or the one-line reason a folder has none (no such folder, a training still
    writing it, an interrupted run to resume), so that every command that takes a run says the same."""
    path = Path(run_dir) / "model_card.json"
    if not path.is_file():
        if not Path(run_dir).is_dir():
            raise MedtlError(f"{run_dir}: no such folder (give a run directory written by `medtl train`)")
        lock = Path(run_dir) / ".train.lock"
        if lock_held(lock):
            raise MedtlError(f"{run_dir}: a `medtl train`{lock_holder(lock)} is writing this run now, so it has no "
                             "model card yet: wait for it to finish")
        if (Path(run_dir) / "checkpoints" / "last.pt").is_file():
            raise MedtlError(f"{run_dir}: the run did not finish (interrupted?), so it has no model card yet: "
                             f"resume it with `medtl train --out {run_dir} --resume`")
        raise MedtlError(f"{run_dir}: no model_card.json (give a run directory written by `medtl train`)")
    return path


def read_card(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The model card of a run folder, checked for its format and required keys."""
    path = card_path(run_dir)
    text = read_small_text(path, MAX_CARD_BYTES, MedtlError, "model card")
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MedtlError(f"{path}: damaged model card ({exc.msg}); retrain, or restore the file") from None
    except RecursionError:
        raise MedtlError(f"{path}: damaged model card (nested too deeply); retrain, or restore the file") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        fmt = card.get("format") if isinstance(card, dict) else None
        raise MedtlError(f"{path}: unknown model card format {fmt!r} (expected {CARD_FORMAT})")
    missing = [k for k in CARD_KEYS if k not in card]
    if missing:
        raise MedtlError(f"{path}: model card lacks {', '.join(missing)} (retrain, or restore the file)")
    _check_card_values(card, path)
    return card


def _check_card_values(card: dict[str, Any], path: Path) -> None:
    """Refuse card values that no training writes and that prediction would act on without a word (a
    threshold of 1e308 says no to every scan, class_names "ab" read as classes a and b) or size a network
    by (num_classes 10^9 asked torch for terabytes)."""
    names, model, threshold = card["class_names"], card["model"], card.get("threshold")
    problem = None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, (str, int)) for n in names):
        problem = "class_names is not a list of two or more class names"
    elif not isinstance(model, dict) or model.get("num_classes") != len(names):
        got = model.get("num_classes") if isinstance(model, dict) else None
        problem = f"model.num_classes is {str(got)[:20]}, not the number of class_names ({len(names):,})"
    elif threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                    or not 0 <= threshold <= 1):
        problem = f"threshold {str(threshold)[:20]!r} is not a probability between 0 and 1"
    if problem:
        raise MedtlError(f"{path}: {problem} (retrain, or restore model_card.json)")


def card_hash(run_dir: str | os.PathLike) -> str:
    """First 12 hex digits of the card's SHA-256: names the exact model in score files."""
    return hashlib.sha256((Path(run_dir) / "model_card.json").read_bytes()).hexdigest()[:12]


def ci_text(figures: dict[str, Any], key: str) -> str:
    """`` (95% CI lo-hi)`` of ``figures["ci"][key]`` (a card's or ``metrics.json``'s metrics), 3 decimals, bounds
    joined by "to" where one is negative (a kappa's can be, and "-0.2--0.1" misreads); empty where there is no
    interval or a bound is null."""
    ci = (figures.get("ci") or {}).get(key) or []
    if not (len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)):
        return ""
    return f" (95% CI {ci[0]:.3f}{' to ' if min(ci) < 0 else '-'}{ci[1]:.3f})"


def card_views(card: dict[str, Any]) -> list[Any] | None:
    """The test-time augmentation views a model card records (``eval.tta``), or None: plain prediction."""
    from medtl.transforms.tta import View

    entry = card.get("tta") or {}
    views = [View.from_dict(v) for v in entry.get("views", [])]
    return views or None


def _ensemble_size(weights: Path) -> int:
    """How many ensemble members (``members.<j>.`` key prefixes) a weights file holds, from its header alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return len({k.split(".")[1] for k in f.keys() if k.startswith("members.")})
    except (SafetensorError, OSError):
        return 0  # unreadable: the count does not match, and the error says which file


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any], Any]:
    """``(model, card, preprocessing)`` of a finished run; the model in eval mode on ``device`` (an
    :class:`~medtl.models.ensemble.Ensemble` when the card's ``model.ensemble`` counts its members)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from medtl.models import create
    from medtl.transforms import Preprocessing

    card = read_card(run_dir)
    try:
        prep = Preprocessing.from_dict(card["preprocessing"])
    except (MedtlError, ValueError, TypeError) as exc:
        raise MedtlError(f"{Path(run_dir) / 'model_card.json'}: its preprocessing is not valid ({one_line(exc)}); "
                         "retrain, or restore model_card.json") from None
    m = card["model"]
    if m.get("in_channels") != prep.channels:  # training builds the network for the preprocessing's channels
        raise MedtlError(f"{Path(run_dir) / 'model_card.json'}: model.in_channels is {str(m.get('in_channels'))[:20]}, "
                         f"not the preprocessing's {prep.channels} channel(s) (retrain, or restore model_card.json)")
    weights = Path(run_dir) / card["files"]["weights"]
    if not weights.is_file():
        raise MedtlError(f"{weights}: model weights missing from the run directory (retrain or restore the file)")
    members = m.get("ensemble", 1)  # cards without the key: one network
    if not isinstance(members, int) or isinstance(members, bool) or members < 1 or (
            members > 1 and members != _ensemble_size(weights)):  # never build more networks than the file holds
        raise MedtlError(f"{run_dir}: model card's model.ensemble is {members!r}, not the member count of "
                         f"{weights.name} (retrain, or restore model_card.json)")
    nets = [create(m["arch"], weights=None, in_channels=m["in_channels"], spatial_dims=m["spatial_dims"],
                   num_classes=m["num_classes"],
                   inflate=m.get("inflate") if m["spatial_dims"] == 3 else None)  # a 2D card's is unused
            for _ in range(members)]
    if len(nets) > 1:
        from medtl.models.ensemble import Ensemble

        model = Ensemble(nets)
    else:
        model = nets[0]
    try:
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedtlError(f"{weights}: weights do not load into {m['arch']} ({first})") from None
    model.card.update({k: v for k, v in m.items() if k in ("weights", "input_adaptation", "normalization")})
    model.to(device).eval()
    return model, card, prep
