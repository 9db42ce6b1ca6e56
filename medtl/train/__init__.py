"""Fine-tuning: writes run folders (:mod:`medtl.runs`).

- :mod:`~medtl.train.config`: the ``train:``/``eval:`` config sections;
- :mod:`~medtl.train.strategy`: linear / partial / full / gradual unfreezing, optimiser, schedule;
- :mod:`~medtl.train.engine`: the loop (``fit``: set-up, epoch, record, early stop), AMP, DDP;
- :mod:`~medtl.train.metrics` (pure metrics, bootstrap CIs), :mod:`~medtl.train.logger`
  (CSV/TensorBoard), :mod:`~medtl.train.plots`;
- :mod:`~medtl.train.guarding`: training domain, OOD statistics, collapse check for the card;
- :mod:`~medtl.train.run`: ``train`` (config -> run folder) and ``evaluate``.
"""
