"""The GPU paths of training (autocast in bf16/fp16, loss scaling, channels-last, ``torch.compile``) on a real
CUDA device. Skipped without one: CI has no GPU, so these run where one is lent (docs/benchmarks.md, GPU)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from medtl.config import load_config
from medtl.runs import load_run
from medtl.train.engine import _to_device, train_step
from medtl.train.run import train

from ..conftest import TINY_2D

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def batch(n: int = 16) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(n, 1, 32, 32, generator=g), "label": torch.randint(0, 3, (n,), generator=g)}


def step(model: nn.Module, device: torch.device, amp: torch.dtype | None, channels_last: bool = False,
         steps: int = 1) -> tuple[list[float], nn.Module]:
    """``steps`` SGD steps of ``model`` on :func:`batch` through medtl's own ``_to_device`` and ``train_step``."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    x, y = _to_device(batch(), device, channels_last)
    losses = [float(train_step(model, x, y, nn.CrossEntropyLoss(), opt, scaler, amp)) for _ in range(steps)]
    return losses, model.cpu()


@pytest.fixture
def no_tf32():
    """Full fp32 matmuls/convolutions, so a GPU step can be compared with a CPU one to float32 rounding."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_gpu_fp32_channels_last_steps_equal_cpu_steps(no_tf32):
    cpu_loss, cpu = step(small_cnn(), torch.device("cpu"), None, steps=3)
    gpu_loss, gpu = step(small_cnn(), torch.device("cuda"), None, channels_last=True, steps=3)
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=1e-5)
    for (name, a), b in zip(cpu.state_dict().items(), gpu.state_dict().values()):
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_mixed_precision_step_tracks_fp32(amp, no_tf32):
    """Autocast changes the rounding, not the step: the losses stay within the half type's precision of fp32's,
    the weights stay float32 and finite, and fp16's loss scaler is in use."""
    ref, _ = step(small_cnn(), torch.device("cuda"), None, steps=3)
    got, model = step(small_cnn(), torch.device("cuda"), amp, steps=3)
    np.testing.assert_allclose(got, ref, rtol=3e-2)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def test_compiled_step_equals_eager_step(no_tf32):
    eager_loss, eager = step(small_cnn(), torch.device("cuda"), None, steps=3)
    compiled = torch.compile(small_cnn().cuda())
    compiled_loss, _ = step(compiled, torch.device("cuda"), None, steps=3)
    np.testing.assert_allclose(compiled_loss, eager_loss, rtol=1e-4)
    for a, b in zip(eager.state_dict().values(), compiled._orig_mod.cpu().state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("extra", [["train.amp=bf16"], ["train.amp=fp16"], ["train.compile=true", "train.amp=off"]])
def test_run_trained_on_gpu_serves_on_cpu(tmp_path, extra):
    """A whole run on the GPU (mixed precision, or compiled) saves float32 weights that a CPU-only site loads:
    the loaded model's probabilities match the ones the run recorded on the GPU, to autocast's rounding."""
    cfg = load_config("sample_tiny", [*TINY_2D, "train.device=cuda", *extra])
    train(cfg, tmp_path / "run", progress=False)
    model, card, prep = load_run(tmp_path / "run")
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in model.state_dict().values()
               if t.is_floating_point())
    assert card["metrics"]["test"]["auc"] is not None
    rows = list(csv.DictReader(open(tmp_path / "run" / "predictions_test.csv")))
    with torch.no_grad():
        p = torch.softmax(model(torch.stack([prep(r["image"]) for r in rows])).double(), 1).numpy()
    recorded = np.array([[float(r[f"p_{c}"]) for c in card["class_names"]] for r in rows])
    np.testing.assert_allclose(p, recorded, atol=0.03)
