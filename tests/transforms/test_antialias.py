import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Resize, Resized

from medtl.transforms import Preprocessing
from medtl.transforms.antialias import AntiAliasd


@pytest.mark.parametrize("shape,size", [((1, 40, 50, 30), (16, 20, 30)), ((2, 100, 70), (32, 32)),
                                        ((1, 20, 20), (40, 10)), ((1, 9, 9), (9, 9))])
def test_antialias_then_resize_equals_monais_resize_with_anti_aliasing(shape, size):
    x = MetaTensor(torch.rand(shape, generator=torch.Generator().manual_seed(0)))
    mode = "trilinear" if len(size) == 3 else "bilinear"
    ref = Resize(size, mode=mode, anti_aliasing=True)(x)
    smoothed = AntiAliasd(["image"], size)({"image": x})["image"]
    got = Resized(["image"], size, mode=mode, anti_aliasing=False)({"image": smoothed})["image"]
    assert torch.equal(got.as_tensor(), ref.as_tensor())
    assert torch.equal(got.affine, ref.affine)


def test_shrinking_a_volume_keeps_memory_bounded():
    """A 60 x 256 x 256 volume shrunk to 8 x 16 x 16: MONAI's own filter unfolds it by its 61-tap kernel
    (about 1 GB); the pipeline's peak must stay within a few copies of the 16 MB volume."""
    code = textwrap.dedent("""
        import resource, numpy as np
        from medtl.transforms import Preprocessing
        prep = Preprocessing(spatial_dims=3, size=[8, 16, 16], window="none", normalize="none", orientation=None)
        prep(np.zeros((4, 4, 4), np.float32))
        vol = np.random.default_rng(0).random((256, 256, 60), dtype=np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = prep(vol)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(tuple(out.shape), grown // 1024)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shape, grown_mib = proc.stdout.split(")")
    assert shape == "(1, 8, 16, 16"
    assert int(grown_mib) < 200

