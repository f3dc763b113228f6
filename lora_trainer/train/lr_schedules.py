"""Learning-rate schedules as pure functions of the optimizer step (kohya-format.md §3.7).

`step` is 0-based and is the number of optimizer steps already taken, so the LR of the first
update is `lr_at(0)`: exactly what transformers' LambdaLR schedulers (which kohya uses) give, where
warmup starts at 0. Every schedule but REX is a factor times the group's base LR, so the UNet
and text-encoder groups share one curve; REX has an absolute floor (`min_lr`) instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial", "rex")

# REX as the XL Colab configures it (LoraEasyCustomOptimizer.RexAnnealingWarmRestarts).
REX_GAMMA = 0.9  # each restart peaks at gamma times the previous peak
REX_D = 0.9  # curvature of the Rex decay (Chen et al. 2021, "REX: Revisiting Budgeted Training")
REX_MIN_LR = 1e-9
POLYNOMIAL_LR_END = 1e-7  # transformers' get_polynomial_decay_schedule_with_warmup default


def warmup_steps_for(scheduler: str, warmup_ratio: float, total_steps: int, num_cycles: int = 1) -> int:
    """Warmup steps of a run: int(total x ratio) as the Colab computes it.

    0 for "constant" (kohya refuses warmup there). REX warms up at the start of every cycle:
    round(total x ratio) // cycles, as the XL notebook passes it.
    """
    if scheduler == "constant" or warmup_ratio <= 0:
        return 0
    if scheduler == "rex":
        return round(total_steps * warmup_ratio) // max(1, num_cycles)
    return int(total_steps * warmup_ratio)


@dataclass(frozen=True)
class LRSchedule:
    """One schedule over a run. `lr_at(step, base_lr)` is the LR of optimizer step `step`."""

    name: str  # one of SCHEDULERS
    total_steps: int  # optimizer steps in the run
    warmup_steps: int = 0  # REX: per cycle
    num_cycles: int = 1  # cosine_with_restarts: hard restarts; rex: cycles
    power: float = 1.0  # polynomial
    lr_end: float = POLYNOMIAL_LR_END  # polynomial: absolute final LR
    rex_gamma: float = REX_GAMMA
    rex_d: float = REX_D
    rex_min_lr: float = REX_MIN_LR

    def __post_init__(self) -> None:
        if self.name not in SCHEDULERS:
            raise ValueError(f"lr_scheduler {self.name!r}: must be one of {', '.join(SCHEDULERS)}")

    def lr_at(self, step: int, base_lr: float) -> float:
        if self.name == "rex":
            return self._rex(step, base_lr)
        if self.name == "polynomial":
            return self._polynomial(step, base_lr)
        return base_lr * self.factor(step)

    def factor(self, step: int) -> float:
        """LR / base LR (not defined for REX and polynomial, whose floors are absolute)."""
        w, t = self.warmup_steps, self.total_steps
        if self.name == "constant":
            return 1.0
        if step < w:  # linear warmup from 0, shared by all transformers schedules
            return step / max(1, w)
        p = (step - w) / max(1, t - w)  # progress after warmup, 0..1
        if self.name == "constant_with_warmup":
            return 1.0
        if self.name == "linear":
            return max(0.0, (t - step) / max(1, t - w))
        if self.name == "cosine":  # half a cosine down to 0
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * p)))
        if self.name == "cosine_with_restarts":  # N equal decays, each jumping back to the peak
            if p >= 1.0:
                return 0.0
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((self.num_cycles * p) % 1.0))))
        raise ValueError(f"factor() is not defined for {self.name!r}; use lr_at()")

    def _polynomial(self, step: int, base_lr: float) -> float:
        """(lr - lr_end) x remaining^power + lr_end (transformers)."""
        w, t = self.warmup_steps, self.total_steps
        if step < w:
            return base_lr * step / max(1, w)
        if step > t:
            return self.lr_end
        remaining = 1 - (step - w) / max(1, t - w)
        return (base_lr - self.lr_end) * remaining**self.power + self.lr_end

    def cycle_steps(self) -> int:
        """REX: steps per cycle, total // cycles (the XL notebook's first_cycle_max_steps)."""
        return max(1, self.total_steps // max(1, self.num_cycles))

    def _rex(self, step: int, base_lr: float) -> float:
        """Cycles of length total/N: warmup from min_lr, then min + range x (1-p) / ((1-d) + d(1-p)),
        each cycle's peak gamma times the last (RexAnnealingWarmRestarts with cycle_multiplier 1)."""
        length = self.cycle_steps()
        cycle, s = divmod(step, length)
        floor = self.rex_min_lr if self.rex_min_lr < base_lr else 0.0
        peak = base_lr * self.rex_gamma**cycle
        if peak <= floor:
            return floor
        span = peak - floor
        w = min(self.warmup_steps, length - 1)
        if s < w:
            return floor + span * s / w
        p = (s - w) / (length - w)
        return floor + span * (1 - p) / ((1 - self.rex_d) + self.rex_d * (1 - p))


def make_schedule(
    name: str,
    total_steps: int,
    warmup_ratio: float = 0.0,
    num_cycles: int = 1,
    power: float = 1.0,
) -> LRSchedule:
    """The schedule of a run from the guide's settings (lr_scheduler, lr_warmup_ratio, lr_scheduler_number)."""
    warmup = warmup_steps_for(name, warmup_ratio, total_steps, num_cycles)
    return LRSchedule(name, total_steps, warmup, max(1, num_cycles), power)


def lr_at(step: int, base_lr: float, name: str, total_steps: int, warmup_steps: int = 0, num_cycles: int = 1, power: float = 1.0) -> float:
    """Function form of `LRSchedule(...).lr_at(step, base_lr)`."""
    return LRSchedule(name, total_steps, warmup_steps, num_cycles, power).lr_at(step, base_lr)
