"""Inference with a trained run: one study (:class:`Predictor`) or a whole folder (:func:`score`).

- :class:`Predictor` / :class:`Prediction`: probabilities, the decision at the model card's
  threshold, the preprocessing used, optional saliency (``medtl predict``).
- :func:`score` / :class:`ScoreSummary`: streamed, resumable batch scoring to CSV (and
  Parquet), failures to ``errors.csv``, local or Ray engine (``medtl score``).
- :func:`discover` / :class:`Study`: how a folder or manifest becomes keyed studies.
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
