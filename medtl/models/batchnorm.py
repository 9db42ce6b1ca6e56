"""BatchNorm statistics re-estimated on the target data (AdaBN, Li et al. 2016).

ImageNet running statistics describe natural RGB images; a CT volume through an
inflated, ACS or 2.5D network produces other activation statistics. Re-estimating
them (weights untouched) before fine-tuning, or before training a frozen backbone's
head, is the third BatchNorm option next to "train" and "freeze" (keep ImageNet's).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable, device: torch.device | str | None = None,
                         max_batches: int | None = None, keep: Iterable[nn.Module] = ()) -> int:
    """Recompute every BatchNorm's running mean/var (but those in ``keep``, which normalise with their
    own, e.g. a frozen stage's) as the exact average over ``batches``.

    ``batches`` yields input tensors, or tuples/lists/dicts whose first item / ``"image"``
    is the input (a DataLoader works). Only the running statistics change: weights,
    biases, dropout and the model's train/eval mode are restored. Uses torch's
    cumulative moving average (``momentum=None``), as ``torch.optim.swa_utils.update_bn``.
    Returns the number of batches seen.
    """
    kept = {id(m) for m in keep}
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in kept]
    if not bns:
        return 0
    was_training = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.eval()
    for bn in bns:
        bn.train()
    n = 0
    try:
        for batch in batches:
            if max_batches is not None and n >= max_batches:
                break
            x = batch["image"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (tuple, list)) else batch
            if device is not None:
                x = x.to(device)
            model(x)
            n += 1
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, mode in was_training.items():
            m.train(mode)
    return n


def set_bn_momentum(model: nn.Module, momentum: float | None) -> int:
    """Set the running-statistics momentum of every BatchNorm layer; returns how many were set.

    MONAI's EfficientNet builds its BatchNorm with TF's momentum 0.01: over the few dozen
    steps of a small fine-tuning run the running statistics then barely follow the
    weights, and eval-mode outputs differ from training-mode ones. ``train.bn_momentum``.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.momentum = momentum
    return len(bns)
