"""Aspect-ratio bucketing as kohya's `BucketManager` does it (kohya-format.md §3.5).

Every image trains at a "bucket" size: a width x height in `step`-pixel units whose area is at
most resolution^2. An image is scaled to cover its bucket and centre-cropped to it, so nothing is
padded and the aspect ratio is nearly kept. Pure functions of numbers; no image is opened here.

Sizes are (width, height) tuples throughout, as in kohya.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Size = tuple[int, int]  # (width, height)


def round_bucket_bounds(min_reso: int, max_reso: int, step: int) -> tuple[int, int]:
    """min down and max up to multiples of `step` (kohya `adjust_min_max_bucket_reso_by_steps`)."""
    if min_reso % step:
        min_reso -= min_reso % step
    if max_reso % step:
        max_reso += step - max_reso % step
    return min_reso, max_reso


def bucket_resolutions(resolution: Size, min_reso: int = 256, max_reso: int = 1024, step: int = 64) -> list[Size]:
    """The predefined buckets: the largest square, then for each width the tallest height that
    keeps the area within resolution^2 (kohya `make_bucket_resolutions`). Sorted, as kohya sorts.

    512 with 256/1024/64 gives 17 buckets: 256x832..256x1024, 320x704, 320x768, 384x640,
    448x576, 512x512 and their transposes.
    """
    max_area = resolution[0] * resolution[1]
    side = int(math.sqrt(max_area) // step) * step
    resos: set[Size] = {(side, side)}
    width = min_reso
    while width <= max_reso:
        height = min(max_reso, int((max_area // width) // step) * step)
        if height >= min_reso:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


@dataclass(frozen=True)
class Placement:
    """Where one image goes: its bucket, the size it is resized to, and the crop into the bucket."""

    original: Size  # the image's own size (after EXIF orientation)
    bucket: Size  # the training size; latents are bucket / 8
    resized: Size  # resize to this first (covers the bucket on both axes)
    crop_left: int  # then crop bucket-size pixels starting here (centre crop)
    crop_top: int
    ar_error: float  # bucket w/h minus image w/h (kohya logs the mean of this)

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in the resized image, as Pillow's `crop` takes it."""
        return (self.crop_left, self.crop_top, self.crop_left + self.bucket[0], self.crop_top + self.bucket[1])

    def sdxl_crop_top_left(self, flipped: bool = False) -> tuple[int, int]:
        """SDXL's crop conditioning (top, left), computed kohya's way (`get_crop_ltrb`), quirk included."""
        left, top, right, _ = kohya_crop_ltrb(self.bucket, self.original)
        if flipped:  # the flipped image's left edge is the bucket's right minus the crop's right
            left = self.bucket[0] - right
        return int(top), int(left)


def kohya_crop_ltrb(bucket: Size, original: Size) -> tuple[float, float, float, float]:
    """kohya's `BucketManager.get_crop_ltrb`: the box of the image *fitted inside* the bucket.

    This is not the crop actually applied (that one covers the bucket), so for a centre crop the
    offset lands on the other axis: a wide image gets crop_top > 0 and crop_left 0. kohya kept it
    (sd-scripts#1443) and LoRAs are trained on it, so we reproduce it for SDXL conditioning.
    """
    bucket_ar = bucket[0] / bucket[1]
    image_ar = original[0] / original[1]
    if bucket_ar > image_ar:
        w, h = bucket[1] * image_ar, float(bucket[1])
    else:
        w, h = float(bucket[0]), bucket[0] / image_ar
    left = (bucket[0] - w) // 2
    top = (bucket[1] - h) // 2
    return left, top, left + w, top + h


def _cover(original: Size, bucket: Size) -> Size:
    """Scale so the image covers the bucket: a wider image matches heights, else widths match."""
    w, h = original
    if w / h > bucket[0] / bucket[1]:
        scale = bucket[1] / h
    else:
        scale = bucket[0] / w
    return int(w * scale + 0.5), int(h * scale + 0.5)


def _centre(resized: Size, bucket: Size) -> tuple[int, int]:
    return max(0, resized[0] - bucket[0]) // 2, max(0, resized[1] - bucket[1]) // 2


@dataclass(frozen=True)
class Bucketer:
    """Assigns images to buckets. Build one with `make_bucketer` from the training settings."""

    resolution: Size
    resos: tuple[Size, ...]  # predefined buckets (empty with no_upscale: buckets come from images)
    step: int = 64
    no_upscale: bool = False

    @property
    def max_area(self) -> int:
        return self.resolution[0] * self.resolution[1]

    def place(self, width: int, height: int) -> Placement:
        """The bucket, resize and crop of a `width` x `height` image (kohya `select_bucket`)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size {width}x{height}: both sides must be positive")
        original = (width, height)
        ar = width / height
        if self.no_upscale:
            resized = self._no_upscale_size(width, height)
            bucket = (resized[0] - resized[0] % self.step, resized[1] - resized[1] % self.step)
            if bucket[0] == 0 or bucket[1] == 0:
                raise ValueError(f"image size {width}x{height} is smaller than one bucket step ({self.step} px)")
        else:
            if original in self.resos:
                bucket = original
            else:  # smallest |aspect-ratio error|; ties go to the first in sorted order, as numpy's argmin
                bucket = min(self.resos, key=lambda r: abs(r[0] / r[1] - ar))
            resized = _cover(original, bucket)
        left, top = _centre(resized, bucket)
        return Placement(original, bucket, resized, left, top, bucket[0] / bucket[1] - ar)

    def _round(self, x: float) -> int:
        x = int(x + 0.5)
        return x - x % self.step

    def _no_upscale_size(self, width: int, height: int) -> Size:
        """Keep the image's size, but shrink one larger than max_area to about max_area, rounding
        whichever side gives the smaller aspect-ratio error to a step multiple (kohya)."""
        if width * height <= self.max_area:
            return width, height
        ar = width / height
        rw = math.sqrt(self.max_area * ar)
        rh = self.max_area / rw
        bw = self._round(rw)
        ar_w = bw / self._round(bw / ar)
        bh = self._round(rh)
        ar_h = self._round(bh * ar) / bh
        if abs(ar_w - ar) < abs(ar_h - ar):
            return bw, int(bw / ar + 0.5)
        return int(bh * ar + 0.5), bh


def make_bucketer(
    resolution: int | Size,
    enable_bucket: bool = True,
    min_reso: int = 256,
    max_reso: int = 1024,
    step: int = 64,
    no_upscale: bool = False,
) -> Bucketer:
    """The bucketer of a training run. Without bucketing there is one bucket, the resolution."""
    res: Size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)  # type: ignore[assignment]
    if not enable_bucket:
        return Bucketer(res, (res,), step, False)
    if no_upscale:  # kohya ignores min/max here: each image makes its own bucket
        return Bucketer(res, (), step, True)
    lo, hi = round_bucket_bounds(min_reso, max_reso, step)
    return Bucketer(res, tuple(bucket_resolutions(res, lo, hi, step)), step, False)


def bucket_counts(placements: Sequence[tuple[Size, int]]) -> dict[Size, int]:
    """{bucket: images x repeats} from (bucket, repeats) pairs, in sorted bucket order."""
    out: dict[Size, int] = {}
    for bucket, repeats in placements:
        out[bucket] = out.get(bucket, 0) + repeats
    return dict(sorted(out.items()))
