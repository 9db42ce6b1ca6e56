"""Know when not to answer: checks that stand between a scan and a probability.

- :mod:`medtl.guard.domain`: the training domain a model card records (modalities,
  photometric kinds, dims, spacing) and the hard header checks before any prediction;
- :mod:`medtl.guard.ood`: out-of-distribution scores on penultimate features and
  logits (Mahalanobis, k-NN, energy, max softmax), thresholds calibrated on validation;
- :mod:`medtl.guard.collapse`: a model whose validation outputs are constant or at
  chance is flagged, never served silently.

``medtl.train`` fits and records these; ``medtl.infer`` and the app apply them.
"""

from medtl.guard.collapse import check_outputs
from medtl.guard.domain import check_scan, family, record_domain
from medtl.guard.ood import DEFAULT_METHOD, METHODS, OODDetector, features_and_logits, fit, logit_scores

__all__ = ["DEFAULT_METHOD", "METHODS", "OODDetector", "check_outputs", "check_scan", "family", "features_and_logits", "fit",
           "logit_scores", "record_domain"]
