"""The ``train:`` and ``eval:`` sections: the fine-tuning recipe and how it is evaluated."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from medtl._schema import Section as _Section


class TrainConfig(_Section):
    """The fine-tuning recipe: what trains when, optimiser, schedule, regularisation, devices, seed."""

    config_key: ClassVar[str] = "train"

    strategy: Literal["linear", "partial", "full", "gradual"] = "gradual"
    epochs: int = Field(10, ge=1)
    #: at least this many optimiser steps: a small cohort gets more epochs (epochs =
    #: max(epochs, ceil(min_steps / batches per epoch))), so the schedule does not shrink with it
    min_steps: int = Field(0, ge=0)
    freeze_epochs: int = Field(1, ge=0)  #: gradual: epochs with only the head training
    #: full/partial from pretrained weights: this fraction of the epochs (rounded up) trains the head
    #: alone first, so a random head's first gradients do not reach the pretrained features (LP-FT)
    head_warmup: float = Field(0.0, ge=0, lt=1)
    unfreeze_stages: int = Field(2, ge=1)  #: partial: how many last stages train
    batch_size: int = Field(64, ge=1)
    #: peak learning rate, or ``auto``: a learning-rate range test (``medtl train --find-lr``) picks it
    lr: Union[Annotated[float, Field(gt=0)], Literal["auto"]] = 1e-3
    lr_find_steps: int = Field(100, ge=5)  #: optimiser steps of that range test (fastai's ``num_it``)
    lr_decay: float = Field(0.3, gt=0, le=1)  #: discriminative lr: each earlier stage x this
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = Field(0.1, ge=0, lt=1)  #: fraction of steps
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    #: L2-SP (Li et al. 2018), decoupled as AdamW decouples its decay: with pretrained weights, every
    #: backbone kernel decays toward its starting value instead of toward zero (each step
    #: ``w -= lr * l2sp * (w - w_start)``, replacing ``weight_decay`` there; the new head keeps it), so
    #: a small cohort adapts the ImageNet features less far. 0: off (and off for a random start)
    l2sp: float = Field(0.0, ge=0)
    #: mixup's Beta(alpha, alpha) (0: off): each training image blended with another of its batch, the
    #: loss with both labels in the same proportion (Zhang et al. 2018)
    mixup: float = Field(0.0, ge=0)
    #: CutMix's Beta(alpha, alpha) (0: off): a box of each training image replaced by the same box of
    #: another of its batch, the loss with both labels in proportion to the area (Yun et al. 2019)
    cutmix: float = Field(0.0, ge=0)
    #: exponential moving average of the weights (decay per step, e.g. 0.99; null: off): validation,
    #: the best checkpoint and the saved model use the average (BatchNorm statistics averaged too)
    ema: Optional[float] = Field(None, gt=0, lt=1)
    #: stochastic weight averaging (Izmailov et al. 2018): the weights at the end of each of the last
    #: this fraction of epochs (rounded up), averaged with equal weight and their BatchNorm statistics
    #: recomputed on the training data, are the run's model instead of the best validation epoch; an
    #: average over the annealed tail lies in a flatter region (SWAD, Cha et al. 2021, for unseen sites).
    #: null: off
    swa: Optional[float] = Field(None, gt=0, le=1)
    #: greedy model soup over epochs (Wortsman et al. 2022): the weights of this many best validation
    #: epochs kept; from the best down, each is averaged in when validation does not drop, and the soup
    #: is the run's model (``medtl.train.soup``). 0 or 1: off (the best epoch alone)
    soup: int = Field(0, ge=0)
    #: a deep ensemble: this many runs of the recipe, one after another on the same cohort (member j with
    #: seed ``seed + 100 j``), whose class probabilities the saved model averages
    #: (``medtl.models.ensemble``); each member's run folder is kept under ``members/<j>``. 1: one network
    ensemble: int = Field(1, ge=1)
    balance: Literal["none", "loss", "sampler"] = "none"
    #: train: update statistics; freeze: keep ImageNet's; reestimate: recompute them on the
    #: training data before the first epoch (AdaBN), then train; auto: reestimate for 3D
    #: batches under 8 volumes (where plain training collapsed to one output), else train
    batchnorm: Literal["auto", "train", "freeze", "reestimate"] = "auto"
    #: BatchNorm running-statistics momentum while fine-tuning (null: the backbone's own; MONAI's
    #: EfficientNet uses TF's 0.01, so after a few dozen steps its eval-mode statistics still lag the
    #: weights; 0.1 is torch's and the ResNets' default)
    bn_momentum: Optional[float] = Field(None, gt=0, le=1)
    #: validation metric for best checkpoint / early stopping (``val_loss`` is read as ``loss``)
    monitor: Literal["auc", "loss", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv",
                     "f1", "nll", "brier", "ece"] = "auc"
    #: also write the weights validation scored after every epoch, as ``checkpoints/epoch_NNN.safetensors``
    #: (the size of ``model.safetensors`` each), so a run's whole trajectory can be re-scored later, e.g.
    #: another way to choose its epoch (``benchmarks/selection.py``)
    keep_epochs: bool = False
    patience: int = Field(0, ge=0)  #: early stopping (0 = off)
    device: str = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  #: auto: bf16 (else fp16) on a GPU, none on a CPU
    #: channels-last memory layout where it measured faster (``medtl.runs.memory_format``): on a GPU, and
    #: for 2D on a CPU (1.5x the recipe's training speed); 3D on a CPU keeps the default layout
    channels_last: bool = True
    compile: bool = False
    threads: int = Field(0, ge=0)  #: CPU threads (0 = all cores)
    seed: int = 0
    deterministic: bool = False

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        """YAML 1.1 reads a bare ``off``/``on`` (``amp: off``, ``train.amp=off``) as a boolean."""
        if isinstance(v, bool):
            return "auto" if v else "off"
        return "auto" if v == "on" else v  # a command-line `on` stays text (medtl.config reads YAML 1.2 booleans)

    @field_validator("monitor", mode="before")
    @classmethod
    def _metric_name(cls, v: Any) -> Any:
        """``metrics.csv`` names the column ``val_auc``; the metric is ``auc``."""
        return v[4:] if isinstance(v, str) and v.startswith("val_") else v

    @model_validator(mode="after")
    def _one_average(self) -> "TrainConfig":
        chosen = [k for k, on in (("ema", self.ema is not None), ("swa", self.swa is not None),
                                  ("soup", self.soup > 1)) if on]
        if len(chosen) > 1:
            raise ValueError(f"train.{' and train.'.join(chosen)} are all weight averages: keep one of them "
                             "(ema/swa: null, soup: 0)")
        if self.mixup > 0 and self.cutmix > 0:
            raise ValueError("train.mixup and train.cutmix both mix images: keep one of them (the other: 0)")
        return self


class EvalConfig(_Section):
    """How a finished run is scored: decision threshold, bootstrap CIs, test-time views."""

    config_key: ClassVar[str] = "eval"

    threshold: Union[float, Literal["youden", "val_youden"]] = "val_youden"
    bootstrap: int = Field(1000, ge=0)  #: resamples for 95% CIs
    #: test-time augmentation: the final validation/test figures, and every later prediction of the
    #: model (the views go into its card), average the probabilities over fixed small versions of each
    #: input taken from the training augmentation (medtl.transforms.tta); checkpoint choice stays plain
    tta: bool = False
