"""BatchNorm re-estimation on target data: exact batch statistics, nothing else changes."""

from __future__ import annotations

import torch
from torch import nn

from medtl.models.batchnorm import reestimate_batchnorm


def test_running_stats_become_the_data_statistics_and_weights_stay():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))
    with torch.no_grad():
        net[1].running_mean.fill_(7.0)
        net[1].weight.fill_(2.0)
    net.eval()
    batches = [torch.randn(3, 1, 6, 6) + i for i in range(4)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert reestimate_batchnorm(net, [(b, 0) for b in batches]) == 4
    feats = torch.cat([net[0](b) for b in batches])  # equal-sized batches: mean of means is the mean
    assert torch.allclose(net[1].running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    per_batch_var = torch.stack([net[0](b).var(dim=(0, 2, 3)) for b in batches])  # unbiased, as BN stores
    assert torch.allclose(net[1].running_var, per_batch_var.mean(0), atol=1e-4)
    assert not net.training and not net[1].training and net[1].momentum == 0.1
    for k in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert torch.equal(net.state_dict()[k], before[k])


def test_max_batches_and_dict_batches():
    net = nn.Sequential(nn.BatchNorm1d(2))
    net.train()
    seen = reestimate_batchnorm(net, ({"image": torch.randn(4, 2)} for _ in range(10)), max_batches=3)
    assert seen == 3 and net.training
    assert int(net[0].num_batches_tracked) == 3


def test_set_bn_momentum_reaches_every_batchnorm_of_a_3d_lite0():
    from medtl.models import create
    from medtl.models.batchnorm import set_bn_momentum

    net = create("efficientnet_lite0", weights=None, spatial_dims=3, in_channels=1, num_classes=2)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and {bn.momentum for bn in bns} == {0.01}  # MONAI's EfficientNet: TF's 0.99 decay
    assert set_bn_momentum(net, 0.1) == len(bns)
    assert {bn.momentum for bn in bns} == {0.1}
