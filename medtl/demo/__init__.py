"""The built-in sample cohort and the end-to-end demo that runs on it.

- :mod:`medtl.demo.cohort`: the synthetic chest-CT cohort (DICOM, NIfTI, PNG, lesion
  masks, two sites): ``medtl sample-data``, tests, benchmarks and the app's examples.
- :mod:`medtl.demo.pipeline`: ``medtl demo``: train, evaluate on both sites, score,
  explain, write ``report.html``; runs from any folder with the shipped ``demo`` recipe.
"""

from medtl.demo.pipeline import run_demo

__all__ = ["run_demo"]
