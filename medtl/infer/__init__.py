"""Inference with a trained run: one study (:class:`Predictor`) or a whole folder (:func:`score`).

Reads run folders through :mod:`medtl.runs`; never imports :mod:`medtl.train`.

- :mod:`~medtl.infer.predictor`: :class:`Predictor` / :class:`Prediction`: training-domain
  checks, probabilities, the decision at the model card's threshold, the OOD score, optional
  saliency (``medtl predict``).
- :mod:`~medtl.infer.studies`: :func:`discover` / :class:`Study`: how a folder or manifest
  becomes keyed studies.
- :mod:`~medtl.infer.engines` (+ :mod:`~medtl.infer.isolate`): studies -> decoded items in
  worker processes (per-study time limit) or Ray tasks.
- :mod:`~medtl.infer.sinks`: the scores CSV (append, resume, lock), the errors file, Parquet.
- :mod:`~medtl.infer.score`: :func:`score` / :class:`ScoreSummary`, the orchestration
  (``medtl score``).
"""

from medtl.infer.engines import load_study
from medtl.infer.predictor import Prediction, Predictor, describe_preprocessing, write_saliency
from medtl.infer.score import ScoreSummary, score
from medtl.infer.sinks import ERROR_COLUMNS, score_columns
from medtl.infer.studies import COMPANION_SUFFIXES, Discovery, Study, StudyError, discover, discover_manifest

__all__ = [
    "COMPANION_SUFFIXES", "ERROR_COLUMNS", "Discovery", "Prediction", "Predictor", "ScoreSummary", "Study",
    "StudyError", "describe_preprocessing", "discover", "discover_manifest", "load_study", "score",
    "score_columns", "write_saliency",
]
