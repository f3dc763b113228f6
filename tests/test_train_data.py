"""Buckets, captions and the data pipeline: hand-computed geometry, reproducible epochs, caches."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lora_trainer.train import data as D
from lora_trainer.train.buckets import (
    Bucketer,
    bucket_resolutions,
    kohya_crop_ltrb,
    make_bucketer,
    round_bucket_bounds,
)
from lora_trainer.train.captions import (
    CaptionOptions,
    process_caption,
    read_caption,
    split_fixed,
)
from lora_trainer.train.config import DatasetFolder, TrainConfig

# ---- buckets ------------------------------------------------------------------------------------


def test_bucket_list_for_512_is_kohyas():
    assert bucket_resolutions((512, 512), 256, 1024, 64) == [
        (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576),
        (512, 512), (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
    ]
    assert len(bucket_resolutions((1024, 1024), 256, 2048, 64)) == 41
    assert len(bucket_resolutions((1024, 1024), 512, 2048, 32)) == 65
    assert round_bucket_bounds(300, 1000, 64) == (256, 1024)


def test_assignment_by_aspect_ratio_then_cover_and_centre_crop():
    b = make_bucketer(512)
    p = b.place(768, 1024)  # 3:4 -> 448x576 (AR error 0.028); width matches: 768 * 448/768
    assert (p.bucket, p.resized, p.crop_box) == ((448, 576), (448, 597), (0, 10, 448, 586))
    p = b.place(1920, 1080)  # 16:9 -> 640x384; height matches: 1920 * 384/1080 = 682.7
    assert (p.bucket, p.resized, p.crop_box) == ((640, 384), (683, 384), (21, 0, 661, 384))
    p = b.place(576, 448)  # a bucket size is its own bucket, untouched
    assert (p.bucket, p.resized, p.crop_box) == ((576, 448), (576, 448), (0, 0, 576, 448))
    assert b.place(1000, 1000).bucket == (512, 512)


def test_no_upscale_and_no_bucketing():
    small = make_bucketer(512, no_upscale=True).place(300, 200)  # kept, cropped to 64-multiples
    assert (small.bucket, small.resized, small.crop_left, small.crop_top) == ((256, 192), (300, 200), 22, 4)
    big = make_bucketer(512, no_upscale=True).place(2000, 1000)  # shrunk to ~512^2, AR 2 kept exactly
    assert (big.bucket, big.resized) == ((640, 320), (640, 320))
    one = make_bucketer(512, enable_bucket=False).place(768, 1024)
    assert (one.bucket, one.resized, one.crop_top) == ((512, 512), (512, 683), 85)
    with pytest.raises(ValueError):
        make_bucketer(512, no_upscale=True).place(40, 40)


def test_sdxl_crop_conditioning_keeps_kohyas_quirk():
    assert kohya_crop_ltrb((640, 384), (1920, 1080)) == (0.0, 12.0, 640.0, 372.0)
    b = make_bucketer(512)
    assert b.place(1920, 1080).sdxl_crop_top_left() == (12, 0)  # the crop was on the left; kohya says top
    assert b.place(768, 1024).sdxl_crop_top_left() == (0, 8)
    assert b.place(768, 1024).sdxl_crop_top_left(flipped=True) == (0, 8)  # 448 - (8 + 432)
    assert b.place(512, 512).sdxl_crop_top_left() == (0, 0)


# ---- captions -----------------------------------------------------------------------------------


def test_read_caption(tmp_path):
    (tmp_path / "a.txt").write_text("\ufeffsks, 1girl, smile\nsecond line", "utf-8")
    assert read_caption(tmp_path / "a.png") == "sks, 1girl, smile"
    assert read_caption(tmp_path / "b.png", fallback="proj") == "proj"
    (tmp_path / "c.caption").write_text("x, y", "utf-8")
    assert read_caption(tmp_path / "c.jpg", ".caption") == "x, y"


def test_shuffle_keeps_activation_tags_first():
    caption = "sks, 1girl, smile, red hair, outdoors, hat"
    opts = CaptionOptions(shuffle=True, keep_tokens=1)
    seen = set()
    for seed in range(30):
        out = process_caption(caption, opts, random.Random(seed)).split(", ")
        assert out[0] == "sks" and sorted(out) == sorted(caption.split(", "))
        seen.add(tuple(out))
    assert len(seen) > 10
    same = [process_caption(caption, opts, random.Random(7)) for _ in range(2)]
    assert same[0] == same[1]
    assert process_caption(caption, CaptionOptions(shuffle=False), random.Random(0)) == caption


def test_keep_tokens_separator_and_dropouts():
    opts = CaptionOptions(keep_tokens=0, keep_tokens_separator="|||")
    assert split_fixed("sks, style ||| a, b, c ||| best quality", opts) == (["sks", "style"], ["a", "b", "c"], ["best quality"])
    out = process_caption("sks, style ||| a, b, c ||| best quality", opts, random.Random(1)).split(", ")
    assert out[:2] == ["sks", "style"] and out[-1] == "best quality" and sorted(out[2:5]) == ["a", "b", "c"]
    assert process_caption("a, b", CaptionOptions(caption_dropout_rate=0.999999), random.Random(0)) == ""
    drop_all = CaptionOptions(shuffle=False, keep_tokens=2, tag_dropout_rate=0.999999)
    assert process_caption("sks, girl, x, y, z", drop_all, random.Random(0)) == "sks, girl"
    half = CaptionOptions(shuffle=False, keep_tokens=0, tag_dropout_rate=0.5)
    kept = [len(process_caption(", ".join(map(str, range(20))), half, random.Random(s)).split(", ")) for s in range(40)]
    assert 7 < sum(kept) / len(kept) < 13


# ---- scanning -------------------------------------------------------------------------------------


def _png(path: Path, size: tuple[int, int], color=(200, 10, 10)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def make_dataset(root: Path) -> Path:
    """A tiny project: 4 training images (one rotated by EXIF, one broken), 2 regularization images."""
    ds = root / "dataset"
    ds.mkdir(parents=True)
    _png(ds / "a.png", (128, 128))
    _png(ds / "b.png", (256, 64), (10, 200, 10))
    (ds / "a.txt").write_text("sks, red, square", "utf-8")
    (ds / "b.txt").write_text("sks, green, wide", "utf-8")
    im = Image.new("RGB", (64, 192), (10, 10, 200))  # stored tall; EXIF 6 says: show rotated (wide)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(ds / "c.jpg", exif=exif.tobytes())
    (ds / "d.png").write_bytes(b"not an image")
    reg = root / "reg"
    reg.mkdir()
    _png(reg / "r1.png", (128, 128), (90, 90, 90))
    _png(reg / "r2.png", (128, 128), (30, 30, 30))
    return root


def small_config(**kw) -> TrainConfig:
    base = {"resolution": 128, "min_bucket_reso": 64, "max_bucket_reso": 256, "train_batch_size": 2,
            "datasets": [DatasetFolder("dataset", 3), DatasetFolder("reg", 1, is_regularization=True)]}
    base.update(kw)
    return TrainConfig(**base)


def test_scan_counts_balances_and_buckets(tmp_path):
    root = make_dataset(tmp_path)
    ds = D.load_dataset(small_config(), root)
    s = ds.summary
    assert [(f.images, f.captions, f.repeats) for f in s.folders] == [(3, 2, 3), (2, 0, 1)]
    assert s.folders[1].used == 9  # 3 training images x 3 repeats: each reg image repeated until 9
    assert [(Path(p).name, "cannot identify" in r) for p, r in s.unreadable] == [("d.png", True)]
    c = next(it for it in ds.items if it.path.name == "c.jpg")
    assert c.placement.original == (192, 64) and c.bucket == (192, 64)  # EXIF orientation applied
    assert c.caption == root.name  # no caption file: the project name (the Colab's class token)
    assert s.bucket_counts == {(128, 128): 3 + 9, (192, 64): 3, (256, 64): 3}
    reg = sorted(it.repeats for it in ds.items if it.is_regularization)
    assert reg == [4, 5]
    plan = ds.plan(small_config())
    assert plan.steps_per_epoch == 6 + 2 + 2  # ceil(12/2) + ceil(3/2) + ceil(3/2)
    text = D.plan_summary(small_config(), ds)
    assert "10 steps per epoch" in text and "d.png" in text and "LoRA dim 16" in text


def test_duplicate_stems_and_missing_folder(tmp_path):
    ds_dir = tmp_path / "dataset"
    ds_dir.mkdir()
    _png(ds_dir / "x.png", (64, 64))
    _png(ds_dir / "x.jpg", (64, 64))
    ds = D.load_dataset(small_config(datasets=[DatasetFolder("dataset", 1), DatasetFolder("nope", 1)]), tmp_path)
    assert [Path(p).name for p in ds.summary.duplicate_stems] == ["x"]
    assert [f.exists for f in ds.summary.folders] == [True, False]


# ---- images and epochs ----------------------------------------------------------------------------


def test_training_image_geometry_and_range(tmp_path):
    path = _png(tmp_path / "w.png", (300, 100), (255, 255, 255))
    b = make_bucketer(128, min_reso=64, max_reso=256)
    p = b.place(300, 100)
    item = D.ImageItem(path, 0, "", 1, False, p, 0, 0)
    x = D.load_training_image(item)
    assert x.shape == (3, p.bucket[1], p.bucket[0]) and x.dtype == torch.float32
    assert float(x.min()) == 1.0 and float(x.max()) == 1.0
    black = D.to_tensor(Image.new("RGB", (8, 4)))
    assert black.shape == (3, 4, 8) and float(black.max()) == -1.0
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.save(tmp_path / "t.png")
    assert D.load_image(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)  # transparency -> white


def _items(n_buckets=3, per_bucket=3, repeats=2):
    out = []
    for b in range(n_buckets):
        for k in range(per_bucket):
            size = (64 * (b + 1), 64)
            p = Bucketer((128, 128), (size,)).place(*size)
            out.append(D.ImageItem(Path(f"/x/{b}_{k}.png"), 0, f"t{b}, a, b, c", repeats, False, p, 0, 0))
    return out


def test_epoch_order_is_kohyas_and_reproducible():
    items = _items()
    e1 = D.epoch_batches(items, 4, seed=42, epoch=1)
    assert len(e1) == 3 * 2  # per bucket ceil(6 / 4)
    assert sorted(len(b) for b in e1) == [2, 2, 2, 4, 4, 4]
    for batch in e1:
        assert len({items[i].bucket for i in batch}) == 1
    flat = sorted(i for b in e1 for i in b)
    assert flat == sorted(list(range(9)) * 2)
    assert e1 == D.epoch_batches(items, 4, 42, 1)
    assert e1 != D.epoch_batches(items, 4, 42, 2)
    assert e1 != D.epoch_batches(items, 4, 43, 1)


def test_resume_mid_epoch_gives_the_same_batches(tmp_path):
    root = make_dataset(tmp_path)
    config = small_config(flip_aug=True, caption_tag_dropout_rate=0.3)
    ds = D.load_dataset(config, root)
    data = D.TrainData.from_config(ds, config)
    full = list(data.batches(epoch=2))
    resumed = list(D.TrainData.from_config(ds, config).batches(epoch=2, start=3))
    assert len(full) == data.batches_per_epoch() == 10
    for a, b in zip(full[3:], resumed):
        assert (a.index, a.paths, a.captions, a.flipped) == (b.index, b.paths, b.captions, b.flipped)
        assert torch.equal(a.images, b.images)
    assert any(f for b in full for f in b.flipped) and not all(f for b in full for f in b.flipped)
    first = full[0]
    assert first.images.shape[0] == len(first) and first.latents is None
    assert first.target_sizes_hw[0] == (first.bucket[1], first.bucket[0])
    reg_rows = [w for b in full for w, r in zip(b.loss_weights.tolist(), b.is_regularization) if r]
    assert reg_rows and set(reg_rows) == {1.0}


def test_unreadable_image_at_load_time_is_skipped_with_a_warning(tmp_path):
    root = make_dataset(tmp_path)
    config = small_config(datasets=[DatasetFolder("dataset", 1)], train_batch_size=4)
    ds = D.load_dataset(config, root)
    (root / "dataset" / "a.png").write_bytes(b"broken now")
    seen: list[str] = []
    batches = list(D.TrainData.from_config(ds, config, on_warning=seen.append).batches(1))
    assert sum(len(b) for b in batches) == 2
    assert len(seen) == 1 and "a.png" in seen[0]


# ---- caches ---------------------------------------------------------------------------------------


class CountingVAE:
    """(B, 3, H, W) -> (B, 4, H/8, W/8): a fake encoder that remembers how many images it saw."""

    def __init__(self):
        self.seen = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        z = F.avg_pool2d(x, 8)
        return torch.cat([z, z[:, :1] * 2], dim=1)


def test_latent_cache_in_memory_with_flip(tmp_path):
    root = make_dataset(tmp_path)
    config = small_config(flip_aug=True)
    ds = D.load_dataset(config, root)
    vae = CountingVAE()
    cache = D.latent_cache_for(config, root, vae, "fake-vae")
    assert cache.cache_dir is None and cache.with_flipped
    assert cache.prepare(ds.items, batch_size=2) == []
    assert vae.seen == 2 * len(ds.items)
    cache.prepare(ds.items)
    assert vae.seen == 2 * len(ds.items)  # nothing re-encoded
    item = ds.items[0]
    z = cache.get(item)
    assert z.shape == (4, item.bucket[1] // 8, item.bucket[0] // 8)
    expect = vae(D.load_training_image(item, flipped=True)[None])[0]
    assert torch.allclose(cache.get(item, flipped=True), expect, atol=1e-6)
    batches = list(D.TrainData.from_config(ds, config, latent_cache=cache).batches(1))
    assert batches[0].images is None and batches[0].latents.shape[1] == 4


def test_latent_cache_on_disk_is_invalidated_by_edits(tmp_path):
    root = make_dataset(tmp_path)
    config = small_config(cache_latents_to_disk=True, datasets=[DatasetFolder("dataset", 1)])
    ds = D.load_dataset(config, root)
    vae = CountingVAE()
    cache = D.latent_cache_for(config, root, vae, "fake-vae")
    assert cache.cache_dir == root / ".cache" / "latents"
    cache.prepare(ds.items)
    files = sorted(cache.cache_dir.glob("*.safetensors"))
    assert len(files) == len(ds.items) == 3
    fresh = D.latent_cache_for(config, root, CountingVAE(), "fake-vae")
    assert all(fresh.has(it) for it in ds.items)  # read back from disk
    assert D.LatentCache(vae, "other-vae", cache.cache_dir).has(ds.items[0]) is False
    a = next(it for it in ds.items if it.path.name == "a.png")
    _png(a.path, (128, 128), (0, 0, 0))
    os.utime(a.path, ns=(a.mtime_ns + 10**9, a.mtime_ns + 10**9))
    rescanned = D.load_dataset(config, root)
    a2 = next(it for it in rescanned.items if it.path.name == "a.png")
    assert not cache.has(a2)
    b = next(it for it in rescanned.items if it.path.name == "b.png")
    cache.path_of(b).write_bytes(b"damaged")  # an unchanged image whose cache file broke
    vae2 = CountingVAE()
    D.LatentCache(vae2, "fake-vae", cache.cache_dir).prepare(rescanned.items)
    assert vae2.seen == 2  # the edited image and the damaged file


def test_text_encoder_cache(tmp_path):
    calls = []

    def encode(captions):
        calls.append(list(captions))
        n = len(captions)
        return {"context": torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 3, 2).clone(),
                "pooled": torch.ones(n, 5)}

    root = make_dataset(tmp_path)
    config = small_config(arch="sdxl", cache_text_encoder_outputs=True, text_encoder_lr=0.0,
                          cache_latents_to_disk=True, datasets=[DatasetFolder("dataset", 1)])
    assert config.caption_options().shuffle is False
    ds = D.load_dataset(config, root)
    cache = D.text_cache_for(config, root, encode, "te")
    cache.prepare(it.caption for it in ds.items)
    cache.prepare(it.caption for it in ds.items)
    assert len(calls) == 1 and len(calls[0]) == 3
    assert list((root / ".cache" / "text").glob("*.safetensors"))
    batch = next(iter(D.TrainData.from_config(ds, config, text_cache=cache).batches(1)))
    assert batch.text["context"].shape == (len(batch), 3, 2) and batch.text["pooled"].shape == (len(batch), 5)
    assert D.text_cache_for(config.replace(text_encoder_lr=1e-4, cache_text_encoder_outputs=False), root, encode, "te") is None
