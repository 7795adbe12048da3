"""The E-ATT paper's learning-rate schedule (Sec. 4.2):

    lr(t) = peak * min(t / warmup, 1, (plateau / t) ** 0.5)

linear warm-up to ``peak`` over ``warmup`` updates, constant until ``plateau`` updates, then inverse square root
decay. ``t`` is the 1-based index of the update about to be taken, so the first update does not use lr = 0.
"""
import math
from dataclasses import dataclass, field
from typing import List

from fairseq.dataclass import FairseqDataclass
from fairseq.optim.lr_scheduler import FairseqLRScheduler, register_lr_scheduler
from omegaconf import II


def eatt_lr(step: int, peak: float, warmup: int, plateau: int) -> float:
    t = max(int(step), 1)
    warm = t / warmup if warmup > 0 else 1.0
    return peak * min(warm, 1.0, math.sqrt(plateau / t) if plateau > 0 else 1.0)


@dataclass
class EattScheduleConfig(FairseqDataclass):
    warmup_updates: int = field(default=8000, metadata={"help": "linear warm-up over this many updates (paper: 8000)"})
    plateau_updates: int = field(
        default=20000,
        metadata={"help": "keep the peak lr until this update, then decay as (plateau/t)^0.5 (paper: 20000)"},
    )
    lr: List[float] = II("optimization.lr")


@register_lr_scheduler("eatt", dataclass=EattScheduleConfig)
class EattSchedule(FairseqLRScheduler):
    """lr = peak * min(t/warmup, 1, (plateau/t)^0.5), the schedule of the E-ATT paper; peak is --lr."""

    def __init__(self, cfg: EattScheduleConfig, optimizer):
        super().__init__(cfg, optimizer)
        if len(cfg.lr) > 1:
            raise ValueError("--lr-scheduler eatt takes a single peak --lr, got a list: " + str(list(cfg.lr)))
        if cfg.warmup_updates < 0 or cfg.plateau_updates < 0:
            raise ValueError(
                f"--warmup-updates and --plateau-updates must be >= 0, got {cfg.warmup_updates}, {cfg.plateau_updates}"
            )
        if cfg.plateau_updates < cfg.warmup_updates:
            raise ValueError(
                f"--plateau-updates ({cfg.plateau_updates}) must be >= --warmup-updates ({cfg.warmup_updates})"
            )
        self.peak = cfg.lr[0]
        self.lr = self._lr_at(0)
        self.optimizer.set_lr(self.lr)

    def _lr_at(self, num_updates: int) -> float:
        return eatt_lr(num_updates + 1, self.peak, self.cfg.warmup_updates, self.cfg.plateau_updates)

    def step(self, epoch, val_loss=None):
        super().step(epoch, val_loss)
        return self.optimizer.get_lr()

    def step_update(self, num_updates):
        self.lr = self._lr_at(num_updates)
        self.optimizer.set_lr(self.lr)
        return self.lr
