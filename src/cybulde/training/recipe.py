"""What the recipe knobs of `train.*` turn into: the loss setting and the callbacks that shape a run.

- `train.loss: focal` -> the heads' focal loss with `train.focal_gamma` (`ce`: gamma 0, the plain loss);
- `train.max_steps` -> a quick run that stops there, validating the weights it stops with;
- `train.max_time_s` -> Lightning's Timer: stop after that many seconds, with a validation at the stop;
- `train.ema_decay` -> an exponential moving average of the weights, validated and exported.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from lightning.pytorch.callbacks import Timer

from cybulde.training.callbacks import AveragedWeights, StopAtMaxSteps

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from cybulde.config.schema import Config


def focal_gamma(cfg: Config) -> float:
    """The focal loss's gamma, 0.0 (the plain cross-entropy) unless `train.loss` is `focal`."""
    return float(cfg.train.focal_gamma) if cfg.train.loss.value == "focal" else 0.0


def recipe_callbacks(cfg: Config) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = []
    if cfg.train.max_steps > 0:
        callbacks.append(StopAtMaxSteps(cfg.train.max_steps))
    if cfg.train.max_time_s > 0:
        # Checked after every step and broadcast from rank 0, so all ranks stop at the same step.
        callbacks.append(Timer(duration=timedelta(seconds=cfg.train.max_time_s), interval="step"))
    if cfg.train.ema_decay > 0:
        callbacks.append(AveragedWeights(cfg.train.ema_decay))
    return callbacks
