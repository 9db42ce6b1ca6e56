"""The ``train:`` and ``eval:`` sections: the fine-tuning recipe and how it is evaluated."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from medtl._schema import Section as _Section


class TrainConfig(_Section):
    """The fine-tuning recipe: what trains when, optimiser, schedule, regularisation, devices, seed."""

    config_key: ClassVar[str] = "train"

    strategy: Literal["linear", "partial", "full", "gradual"] = Field(
        "gradual", description="What trains: linear (the head, backbone frozen), partial (the last "
        "train.unfreeze_stages stages and the head), full (everything) or gradual (the head first, then one more "
        "stage each epoch with discriminative learning rates, like fastai's fine_tune).")
    epochs: int = Field(10, ge=1, description="Training epochs (raised by train.min_steps for a small cohort).")
    min_steps: int = Field(0, ge=0, description="At least this many optimiser steps: a small cohort gets more "
                           "epochs (epochs = max(epochs, ceil(min_steps / batches per epoch))), so the schedule "
                           "does not shrink with it; 0: off.")
    freeze_epochs: int = Field(1, ge=0, description="gradual: epochs with only the head training.")
    head_warmup: float = Field(0.0, ge=0, lt=1, description="full/partial from pretrained weights: this fraction "
                               "of the epochs (rounded up) trains the head alone first, so a random head's first "
                               "gradients do not reach the pretrained features (LP-FT); 0: off.")
    unfreeze_stages: int = Field(2, ge=1, description="partial: how many of the last backbone stages train.")
    batch_size: int = Field(64, ge=1, description="Images (or volumes) per optimiser step.")
    lr: Union[Annotated[float, Field(gt=0)], Literal["auto"]] = Field(
        1e-3, description="Peak learning rate, or auto: a learning-rate range test (medtl train --find-lr) picks "
        "it.")
    lr_find_steps: int = Field(100, ge=5, description="Optimiser steps of that range test (fastai's num_it).")
    lr_decay: float = Field(0.3, gt=0, le=1, description="gradual/partial: discriminative learning rates, each "
                            "earlier stage at this times the rate of the stage above it.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW's decoupled weight decay.")
    schedule: Literal["onecycle", "cosine", "constant"] = Field(
        "onecycle", description="Learning-rate schedule, stepped per batch: onecycle, cosine (with linear "
        "warm-up) or constant.")
    warmup: float = Field(0.1, ge=0, lt=1, description="Fraction of the steps spent warming the learning rate "
                          "up (onecycle, cosine).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss; 0: "
                                   "off.")
    l2sp: float = Field(0.0, ge=0, description="L2-SP (Li et al. 2018), decoupled as AdamW decouples its decay: "
                        "with pretrained weights, every backbone kernel decays toward its starting value instead of "
                        "toward zero (each step w -= lr * l2sp * (w - w_start), replacing weight_decay there; the "
                        "new head keeps it), so a small cohort adapts the ImageNet features less far. 0: off (and "
                        "off for a random start).")
    mixup: float = Field(0.0, ge=0, description="mixup's Beta(alpha, alpha) (0: off): each training image blended "
                         "with another of its batch, the loss with both labels in the same proportion (Zhang et al. "
                         "2018).")
    cutmix: float = Field(0.0, ge=0, description="CutMix's Beta(alpha, alpha) (0: off): a box of each training "
                          "image replaced by the same box of another of its batch, the loss with both labels in "
                          "proportion to the area (Yun et al. 2019).")
    ema: Optional[float] = Field(None, gt=0, lt=1, description="Exponential moving average of the weights (decay "
                                 "per step, e.g. 0.99; null: off): validation, the best checkpoint and the saved "
                                 "model use the average (BatchNorm statistics averaged too).")
    swa: Optional[float] = Field(None, gt=0, le=1, description="Stochastic weight averaging (Izmailov et al. "
                                 "2018): the weights at the end of each of the last this fraction of epochs "
                                 "(rounded up), averaged with equal weight and their BatchNorm statistics "
                                 "recomputed on the training data, are the run's model instead of the best "
                                 "validation epoch; an average over the annealed tail lies in a flatter region "
                                 "(SWAD, Cha et al. 2021, for unseen sites). null: off.")
    soup: int = Field(0, ge=0, description="Greedy model soup over epochs (Wortsman et al. 2022): the weights of "
                      "this many best validation epochs kept; from the best down, each is averaged in when "
                      "validation does not drop, and the soup is the run's model (medtl.train.soup). 0 or 1: off "
                      "(the best epoch alone).")
    ensemble: int = Field(1, ge=1, description="A deep ensemble: this many runs of the recipe, one after another "
                          "on the same cohort (member j with seed seed + 100 j), whose class probabilities the "
                          "saved model averages (medtl.models.ensemble); each member's run folder is kept under "
                          "`members/<j>`. 1: one network.")
    balance: Literal["none", "loss", "sampler"] = Field(
        "none", description="Class imbalance: none, loss (cross-entropy weighted N / (K * n_class)) or "
        "sampler (training images drawn with replacement, each class equally likely).")
    batchnorm: Literal["auto", "train", "freeze", "reestimate"] = Field(
        "auto", description="BatchNorm statistics. train: update them; freeze: keep ImageNet's; reestimate: "
        "recompute them on the training data before the first epoch (AdaBN), then train; auto: reestimate for 3D "
        "batches under 8 volumes (where plain training collapsed to one output), else train.")
    bn_momentum: Optional[float] = Field(None, gt=0, le=1, description="BatchNorm running-statistics momentum "
                                         "while fine-tuning (null: the backbone's own; MONAI's EfficientNet uses "
                                         "TF's 0.01, so after a few dozen steps its eval-mode statistics still lag "
                                         "the weights; 0.1 is torch's and the ResNets' default).")
    monitor: Literal["auc", "loss", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv",
                     "f1", "nll", "brier", "ece", "qwk"] = Field(
        "auc", description="Validation metric for the best checkpoint and early stopping (val_loss is read as "
        "loss); a tie goes to the lower validation loss. qwk (quadratic weighted kappa) is for more than two "
        "classes that are ordered grades.")
    keep_epochs: bool = Field(False, description="Also write the weights validation scored after every epoch, as "
                              "checkpoints/epoch_NNN.safetensors (the size of model.safetensors each), so a run's "
                              "whole trajectory can be re-scored later, e.g. another way to choose its epoch "
                              "(benchmarks/selection.py).")
    patience: int = Field(0, ge=0, description="Early stopping: stop after this many epochs without a better "
                          "train.monitor; 0: off.")
    device: str = Field("auto", description="auto (the first CUDA GPU, else the CPU), cpu, cuda, cuda:1, mps.")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="Mixed precision. auto: bf16 (else "
                                                        "fp16) on a GPU, none on a CPU.")
    channels_last: bool = Field(True, description="Channels-last memory layout where it measured faster "
                                "(medtl.runs.memory_format): on a GPU, and for 2D on a CPU (1.5x the recipe's "
                                "training speed); 3D on a CPU keeps the default layout.")
    compile: bool = Field(False, description="torch.compile the training step (GPUs; the first steps are slow).")
    threads: int = Field(0, ge=0, description="CPU threads (0: all cores). Another count sums in another order "
                         "and ends with other weights.")
    seed: int = Field(0, description="Seeds weights, augmentation and order (and the split unless data.seed is "
                      "set); the same config and seed give bit-identical results on a CPU at the same thread and "
                      "worker counts.")
    deterministic: bool = Field(False, description="torch.use_deterministic_algorithms(True, warn_only=True): "
                                "deterministic GPU kernels where torch has them (slower), for repeatable GPU runs.")

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

    threshold: Union[Annotated[float, Field(ge=0, le=1)], Literal["youden", "val_youden"]] = Field(
        "val_youden", description="Two classes: the decision threshold on the positive class's probability, a "
        "number, or youden / val_youden (the Youden point of the validation split; 0.5 when it lacks a class). More "
        "classes predict the most probable class: a number is refused there.")
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for the 95% confidence intervals of the "
                           "test metrics; 0: none.")
    tta: bool = Field(False, description="Test-time augmentation: the final validation/test figures, and every "
                      "later prediction of the model (the views go into its card), average the probabilities over "
                      "fixed small versions of each input taken from the training augmentation "
                      "(medtl.transforms.tta); checkpoint choice stays plain.")
