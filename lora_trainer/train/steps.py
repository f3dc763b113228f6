"""How many steps a run takes, counted exactly as kohya counts them, and the guide's preview.

The Colab prints "N images x R repeats = S steps; S / batch B = P per epoch; E epochs = T steps"
(colab-settings.md §2.1). Its estimate ignores buckets; kohya splits each bucket's images x repeats
into batches separately, so a bucket's last batch may be partial and an epoch can be a few steps
longer. We count kohya's way and say so when the two differ.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .buckets import Size

MAX_SENSIBLE_STEPS = 10_000  # the Colab aborts above this: "You probably made a mistake"


@dataclass(frozen=True)
class FolderCount:
    """One image folder as it enters an epoch."""

    path: str
    images: int  # readable images in the folder
    repeats: int  # the folder's own repeats (kohya num_repeats)
    is_regularization: bool = False
    used: int | None = None  # regularization: images x repeats actually used after balancing

    @property
    def steps(self) -> int:
        """images x repeats (for regularization, what balancing made of it)."""
        return self.used if self.used is not None else self.images * self.repeats


def balance_regularization(train_total: int, reg_repeats: Sequence[int]) -> list[int]:
    """Effective repeats of each regularization image, in order (kohya `DreamBoothDataset`).

    Regularization images are used until they add up to as many samples as the training images
    (x repeats): first each with its own repeats, stopping as soon as the total is reached (so
    later images may be unused: repeats 0), then one more repeat each, round-robin, until it is.
    An epoch with regularization is therefore about twice as long.
    """
    out = [0] * len(reg_repeats)
    if not reg_repeats or train_total <= 0:
        return out
    n = 0
    for i, r in enumerate(reg_repeats):
        out[i] = r
        n += r
        if n >= train_total:
            return out
    while n < train_total:
        for i in range(len(out)):
            out[i] += 1
            n += 1
            if n >= train_total:
                break
    return out


def batches_per_epoch(bucket_counts: Mapping[Size, int], batch_size: int) -> int:
    """sum over buckets of ceil(count / batch): each batch comes from one bucket."""
    return sum(math.ceil(n / batch_size) for n in bucket_counts.values() if n > 0)


@dataclass(frozen=True)
class StepPlan:
    """The length of a run. `total_steps` counts optimizer steps (what the LR schedule spans)."""

    folders: tuple[FolderCount, ...]
    bucket_counts: dict[Size, int] = field(default_factory=dict)  # {bucket: images x repeats}
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    unit: str = "epochs"  # "epochs" | "steps": which number the user gave
    batches_per_epoch: int = 0  # kohya: sum over buckets of ceil(count / batch)
    steps_per_epoch: int = 0  # ceil(batches / grad accumulation)
    epochs: int = 0  # in steps mode: ceil(total / steps per epoch); the last one may be partial
    total_steps: int = 0
    warmup_steps: int = 0

    @property
    def samples_per_epoch(self) -> int:
        """S: images x repeats over all folders (regularization included)."""
        return sum(self.bucket_counts.values()) if self.bucket_counts else sum(f.steps for f in self.folders)

    @property
    def guide_steps_per_epoch(self) -> float:
        """The Colab's estimate S / B, which ignores buckets."""
        return self.samples_per_epoch / self.batch_size

    @property
    def too_long(self) -> bool:
        return self.total_steps > MAX_SENSIBLE_STEPS

    def epoch_of_step(self, step: int) -> int:
        """1-based epoch that optimizer step `step` (0-based) belongs to."""
        return step // max(1, self.steps_per_epoch) + 1

    def preview(self) -> str:
        """The guide's step preview, one line per folder then the totals."""
        lines = []
        for f in self.folders:
            tag = " (regularization)" if f.is_regularization else ""
            if f.is_regularization and f.used is not None and f.used != f.images * f.repeats:
                lines.append(f"{f.path}{tag}: {f.images} images, balanced to {f.used} samples to match the training images.")
            else:
                lines.append(f"{f.path}{tag}: {f.images} images x {f.repeats} repeats = {f.steps} steps.")
        s, b = self.samples_per_epoch, self.batch_size
        per_epoch = f"{s} steps / batch size {b} = {self.steps_per_epoch} steps per epoch"
        extra = self.batches_per_epoch - math.ceil(s / b)
        if extra > 0:
            per_epoch += f" ({extra} more than {s}/{b} because each of the {len(self.bucket_counts)} buckets ends in its own partial batch)"
        if self.gradient_accumulation_steps > 1:
            per_epoch += f", {self.batches_per_epoch} batches accumulated {self.gradient_accumulation_steps} at a time"
        lines.append(per_epoch + ".")
        if self.unit == "steps":
            lines.append(f"{self.total_steps} steps, divided into {self.epochs} epochs" + (
                " (the last one partial)." if self.total_steps % max(1, self.steps_per_epoch) else "."))
        else:
            lines.append(f"{self.epochs} epochs = {self.total_steps} total steps.")
        if self.warmup_steps:
            lines.append(f"The learning rate warms up over the first {self.warmup_steps} steps.")
        if self.too_long:
            lines.append(f"That is over {MAX_SENSIBLE_STEPS} steps: probably a mistake (check repeats and epochs).")
        return "\n".join(lines)


def plan_steps(
    folders: Sequence[FolderCount],
    bucket_counts: Mapping[Size, int],
    batch_size: int,
    unit: str = "epochs",
    max_train_epochs: int = 10,
    max_train_steps: int = 0,
    gradient_accumulation_steps: int = 1,
    warmup_steps: int = 0,
) -> StepPlan:
    """The run length from the bucket counts (images x repeats per bucket, regularization balanced).

    An empty `bucket_counts` falls back to the guide's count (all folders in one bucket).
    """
    if batch_size < 1 or gradient_accumulation_steps < 1:
        raise ValueError(f"batch size {batch_size} and gradient accumulation {gradient_accumulation_steps} must be 1 or more")
    counts = dict(bucket_counts) or {(0, 0): sum(f.steps for f in folders)}
    batches = batches_per_epoch(counts, batch_size)
    per_epoch = math.ceil(batches / gradient_accumulation_steps)
    if unit == "steps":
        total = max(0, max_train_steps)
        epochs = math.ceil(total / per_epoch) if per_epoch else 0
    elif unit == "epochs":
        epochs = max(0, max_train_epochs)
        total = epochs * per_epoch
    else:
        raise ValueError(f"unit {unit!r}: must be 'epochs' or 'steps'")
    return StepPlan(
        tuple(folders), dict(bucket_counts), batch_size, gradient_accumulation_steps, unit,
        batches, per_epoch, epochs, total, min(warmup_steps, total),
    )
