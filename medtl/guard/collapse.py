"""A model that learnt nothing must say so: near-constant outputs, or chance-level AUC.

Checked on the validation split at the end of training; the verdict goes into the model
card (``degenerate``), is printed loudly by ``medtl train`` and shown as a banner by
``medtl predict`` and the app.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medtl.guard.ood import FEW_VALIDATION

__all__ = ["MIN_OUTPUT_SPREAD", "check_outputs"]

#: Below this standard deviation of the positive-class probability over validation images,
#: the model gives (nearly) the same answer to everything.
MIN_OUTPUT_SPREAD = 1e-3


def check_outputs(probs: np.ndarray, labels: np.ndarray, auc_ci: tuple[float, float] | None = None) -> dict[str, Any]:
    """``{"degenerate": bool, "reasons": [...], "output_sd": float, "n": int, "chance_judged": bool}`` for
    validation ``probs (N, K)``.

    Degenerate when the outputs barely vary (sd of every class probability below
    :data:`MIN_OUTPUT_SPREAD`) or when the AUC's 95% CI (``auc_ci``) contains 0.5. The second is judged on
    :data:`~medtl.guard.ood.FEW_VALIDATION` images or more only (``chance_judged``): below, an honest AUC
    interval spans 0.5 whatever the model learned (Newcombe's for a perfect ranking of 2 + 2 images is
    0.386-1), so it would flag every model trained with so small a validation split.
    """
    p = np.asarray(probs, dtype=np.float64)
    reasons = []
    sd = float(p.std(axis=0).max()) if len(p) > 1 else 0.0
    if len(p) > 1 and sd < MIN_OUTPUT_SPREAD:
        reasons.append(f"near-constant outputs on the validation split (sd of the probabilities {sd:.1e})")
    judged = len(p) >= FEW_VALIDATION
    if judged and auc_ci is not None and None not in auc_ci and auc_ci[0] <= 0.5 <= auc_ci[1]:  # undefined: 1 class
        reasons.append(f"validation AUC indistinguishable from chance (95% CI {auc_ci[0]:.3f}-{auc_ci[1]:.3f} "
                       f"contains 0.5)")
    return {"degenerate": bool(reasons), "reasons": reasons, "output_sd": sd, "n": int(len(p)),
            "chance_judged": judged}
