"""A deep ensemble: networks of one architecture, trained apart, whose class probabilities are averaged.

Members trained from different seeds disagree most where each is least sure, so their mean probability
ranks cases more reliably than any one of them (Lakshminarayanan et al. 2017; nnU-Net ensembles its
folds by default). :class:`Ensemble` looks like one medtl backbone to everything that serves a model:

- ``model(x)`` returns ``log(mean_j softmax(member_j(x)))``: a softmax of it is exactly the members'
  mean probability, so prediction, test-time views, metrics and thresholds need no special case;
- ``pooled(x)`` is the members' pooled features side by side and ``head(drop(f))`` the output above, so
  the out-of-distribution guard (:func:`medtl.guard.ood.features_and_logits`) sees every member;
- saliency explains each member and averages their maps (:func:`medtl.explain.saliency.explain`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["Ensemble"]


class Ensemble(nn.Module):
    """Members' class probabilities averaged; ``forward`` returns their log (see module docstring)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        classes = {getattr(m, "num_classes", None) for m in members}
        if len(classes) != 1 or None in classes:
            raise ValueError("ensemble members must share one classification head size, got "
                             f"{sorted(map(str, classes))}")
        self.members = nn.ModuleList(members)
        self.num_classes = classes.pop()
        self.spatial_dims = getattr(members[0], "spatial_dims", None)
        self.card: dict[str, Any] = {**members[0].card, "ensemble": len(members)}

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's pooled features, concatenated ``(B, sum of num_features)``."""
        return torch.cat([m.pooled(x) for m in self.members], dim=1)

    def drop(self, features: torch.Tensor) -> torch.Tensor:
        """Identity: an ensemble is only evaluated (its members' dropout is their own, in training)."""
        return features

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """``log`` of the mean of the members' softmax, from :meth:`pooled`'s concatenated features."""
        sizes = [m.num_features for m in self.members]
        chunks = torch.split(features, sizes, dim=1)
        probs = torch.stack([m.head(m.drop(f)).float().softmax(dim=1) for m, f in zip(self.members, chunks)])
        return probs.mean(dim=0).log()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pooled(x)))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """The members' shared input normalisation (they are one architecture from one recipe)."""
        return self.members[0].preprocess(x)
