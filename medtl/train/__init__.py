"""Fine-tuning: writes run folders (:mod:`medtl.runs`).

- :mod:`~medtl.train.config`: the ``train:``/``eval:`` config sections;
- :mod:`~medtl.train.strategy`: linear / partial / full / gradual unfreezing, optimiser, schedule;
- :mod:`~medtl.train.engine`: the loop (``fit``: set-up, epoch, record, early stop), AMP, DDP;
- :mod:`~medtl.train.metrics` (pure metrics, bootstrap CIs), :mod:`~medtl.train.logger`
  (CSV/TensorBoard), :mod:`~medtl.train.plots`;
- :mod:`~medtl.train.guarding`: training domain, OOD statistics, collapse check for the card;
- :mod:`~medtl.train.run`: ``train`` (config -> run folder) and ``evaluate``.
"""

from typing import Any

__all__ = ["RunResult", "evaluate", "find_learning_rate", "train"]


def __getattr__(name: str) -> Any:
    """``from medtl.train import train`` like the other parts' doors, loaded on first use: importing
    the ``train:`` config section (``medtl.config``) must not pull in the training loop."""
    if name in __all__:
        from medtl.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'medtl.train' has no attribute {name!r}")
