"""Our ldm-named VAE against diffusers' AutoencoderKL, plus tiling and the fp16 fallback."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from lora_trainer.models.vae import AutoencoderKL, VAEConfig, blend_tiles

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKL as DiffusersVAE
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

VAE_PARAMS = 83_653_863
FP32_TOL = 1e-4


def diffusers_kwargs(cfg: VAEConfig) -> dict:
    n = len(cfg.ch_mult)
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": ("DownEncoderBlock2D",) * n,
        "up_block_types": ("UpDecoderBlock2D",) * n,
        "block_out_channels": tuple(cfg.ch * m for m in cfg.ch_mult),
        "layers_per_block": cfg.num_res_blocks,
        "latent_channels": cfg.z_channels,
        "norm_num_groups": 32,
        "scaling_factor": cfg.scale_factor,
    }


_ATTN_NAMES = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def ldm_to_diffusers_key(key: str, cfg: VAEConfig) -> str:
    """Map one ldm VAE key to its diffusers name (our own mapping)."""
    key = key.replace("nin_shortcut", "conv_shortcut").replace(".norm_out.", ".conv_norm_out.")
    key = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", key)
    key = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", key)
    key = re.sub(r"\.mid\.block_(\d)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}.", key)
    m = re.match(r"^(encoder|decoder)\.mid\.attn_1\.(\w+)\.(weight|bias)$", key)
    if m:
        return f"{m[1]}.mid_block.attentions.0.{_ATTN_NAMES[m[2]]}.{m[3]}"
    # diffusers numbers decoder levels from the deepest; ldm by resolution.
    m = re.match(r"^decoder\.up\.(\d+)\.(block|upsample)\.(.+)$", key)
    if m:
        level = len(cfg.ch_mult) - 1 - int(m[1])
        part = "resnets" if m[2] == "block" else "upsamplers.0"
        return f"decoder.up_blocks.{level}.{part}.{m[3]}"
    return key


def to_diffusers_state(ours: dict[str, torch.Tensor], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in ours.items():
        name = ldm_to_diffusers_key(k, cfg)
        # Mid-block attention: ldm 1x1 convs, diffusers Linears.
        out[name] = v[:, :, 0, 0] if ".attentions." in name and v.ndim == 4 else v
    return out


def build_pair(cfg: VAEConfig, seed: int = 0) -> tuple[AutoencoderKL, DiffusersVAE]:
    torch.manual_seed(seed)
    ours = AutoencoderKL(cfg).eval()
    ref = DiffusersVAE(**diffusers_kwargs(cfg)).eval()
    ref.load_state_dict(to_diffusers_state(ours.state_dict(), cfg), strict=True)
    return ours, ref


# ---------------------------------------------------------------------------------------------
# Numbers against diffusers at a tiny config


def test_tiny_encode_mean_and_decode_match_diffusers():
    cfg = VAEConfig.tiny()
    ours, ref = build_pair(cfg)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 48, 64, generator=g) * 2 - 1
    with torch.no_grad():
        post = ours.encode(x)
        ref_post = ref.encode(x).latent_dist
        assert post.mean.shape == (2, 4, 6, 8)
        assert (post.mean - ref_post.mean).abs().max().item() < FP32_TOL
        assert (post.std - ref_post.std).abs().max().item() < FP32_TOL
        z = torch.randn(2, 4, 6, 8, generator=g)
        img = ours.decode(z)
        ref_img = ref.decode(z).sample
    assert img.shape == (2, 3, 48, 64)
    assert (img - ref_img).abs().max().item() < FP32_TOL


def test_sample_is_seeded_and_scale_factor_applied():
    cfg = VAEConfig.tiny(scale_factor=0.13025)
    torch.manual_seed(2)
    vae = AutoencoderKL(cfg).eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = vae.images_to_latents(x, torch.Generator().manual_seed(7))
        b = vae.images_to_latents(x, torch.Generator().manual_seed(7))
        post = vae.encode(x)
        noise = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(7))
        expected = (post.mean + post.std * noise) * 0.13025
        assert torch.equal(a, b)
        assert torch.allclose(a, expected, atol=1e-6)
        images = vae.latents_to_images(a)
        assert torch.allclose(images, vae.decode(a / 0.13025).clamp(-1, 1))
    assert images.shape == (1, 3, 32, 32)


# ---------------------------------------------------------------------------------------------
# Tiling


def test_blend_tiles_is_exact_for_a_local_function():
    """With a pixel-local 'decoder' the cross-faded tiles must rebuild the one-pass result exactly."""
    z = torch.randn(1, 4, 21, 30)

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=8, mode="nearest") * 2.0 + 1.0

    tiled = blend_tiles(z, up, tile=8, overlap=3, scale=8)
    assert tiled.shape == (1, 4, 168, 240)
    assert torch.allclose(tiled, up(z), atol=1e-5)


def test_tiled_decode_places_tiles_and_converges_to_full_decode():
    torch.manual_seed(3)
    vae = AutoencoderKL(VAEConfig.tiny()).eval()
    z = torch.randn(1, 4, 8, 12)
    with torch.no_grad():
        full = vae.decode(z)
        same = vae.decode(z, tile=12)  # one tile covers it: identical
        tiled = vae.decode(z, tile=6, overlap=2)  # tiles start at rows 0, 2 and columns 0, 4, 6
        corner = vae.decode(z[:, :, :6, :6])
        coarse = vae.decode(z, tile=4, overlap=2)
    assert torch.equal(full, same)
    assert tiled.shape == coarse.shape == full.shape == (1, 3, 64, 96)
    assert torch.isfinite(tiled).all()
    # Latent rows [0, 2) x columns [0, 4) lie in the first tile only: that tile's decode as is.
    assert torch.allclose(tiled[..., :16, :32], corner[..., :16, :32], atol=1e-6)
    # Tiles see less context and their own GroupNorm statistics (a random VAE is far more sensitive
    # to that than a trained one); bigger tiles must come closer to the one-pass decode.
    err_tiled, err_coarse = ((t - full).abs().mean().item() for t in (tiled, coarse))
    assert 0 < err_tiled < err_coarse


def test_tile_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError, match="overlap 8 must be smaller than the tile 8"):
        blend_tiles(torch.zeros(1, 4, 20, 20), lambda t: t, tile=8, overlap=8, scale=1)


# ---------------------------------------------------------------------------------------------
# fp16 overflow fallback


def _overflowing_fp16_vae() -> tuple[AutoencoderKL, AutoencoderKL]:
    """A tiny fp16 VAE whose decoder activations exceed fp16's 65504 (as the stock SDXL VAE's do)."""
    torch.manual_seed(4)
    vae32 = AutoencoderKL(VAEConfig.tiny()).eval()
    with torch.no_grad():
        vae32.post_quant_conv.weight.mul_(3e4)  # finite in fp32, inf in fp16; GroupNorm rescales
    vae16 = AutoencoderKL(VAEConfig.tiny()).eval()
    vae16.load_state_dict(vae32.state_dict())
    return vae32, vae16.half()


def test_fp16_decode_falls_back_to_fp32_on_overflow():
    vae32, vae16 = _overflowing_fp16_vae()
    z = torch.randn(1, 4, 4, 4) * 3
    with torch.no_grad():
        raw = vae16.decode(z.half(), upcast=False)
        auto = vae16.decode(z.half())
        forced = vae16.decode(z.half(), upcast=True)
        reference = vae32.decode(z.half().float())
    assert not torch.isfinite(raw).all()
    assert auto.dtype == forced.dtype == torch.float16
    assert torch.isfinite(auto).all()
    assert torch.equal(auto, forced)
    assert (auto.float() - reference).abs().max().item() < 2e-3
    # The module's own (possibly borrowed) tensors were not converted.
    assert all(p.dtype == torch.float16 for p in vae16.parameters())


def test_fp32_vae_under_fp16_autocast_falls_back_too():
    vae32, _ = _overflowing_fp16_vae()
    z = torch.randn(1, 4, 4, 4) * 3
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        raw = vae32.decode(z, upcast=False)
        auto = vae32.decode(z)
    assert not torch.isfinite(raw).all()
    assert auto.dtype == torch.float32 and torch.isfinite(auto).all()


def test_fp16_decode_without_overflow_stays_in_fp16():
    torch.manual_seed(5)
    vae16 = AutoencoderKL(VAEConfig.tiny()).eval().half()
    z = torch.randn(1, 4, 4, 4).half()
    with torch.no_grad():
        out = vae16.decode(z)
        forced = vae16.decode(z, upcast=True)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out.float() - forced.float()).abs().max().item() < 5e-2  # fp16 vs fp32 arithmetic


# ---------------------------------------------------------------------------------------------
# Real size on the meta device


def test_real_parameter_count_equals_diffusers():
    cfg = VAEConfig.sd15()
    with torch.device("meta"):
        ours = AutoencoderKL(cfg)
        ref = DiffusersVAE(**diffusers_kwargs(cfg))
    assert next(ours.parameters()).device.type == "meta"
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == VAE_PARAMS


@pytest.mark.parametrize("cfg", [VAEConfig.sd15(), VAEConfig.tiny()], ids=["real", "tiny"])
def test_checkpoint_layout_fully_consumed_by_diffusers_converter(cfg):
    kwargs = diffusers_kwargs(cfg)
    with torch.device("meta"):
        ours = dict(AutoencoderKL(cfg).state_dict())
        ref = DiffusersVAE(**kwargs).state_dict()
    converted = convert_ldm_vae_checkpoint({"first_stage_model." + k: v for k, v in ours.items()}, kwargs)
    assert set(converted) == set(ref)
    assert len(converted) == len(ours)  # renames only: nothing of ours left over
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    # Our own mapping (used for the numeric test) agrees with diffusers' converter.
    assert set(to_diffusers_state(ours, cfg)) == set(converted)


def test_sd15_and_sdxl_share_tensors_but_not_scale():
    assert VAEConfig.sd15().scale_factor == 0.18215
    assert VAEConfig.sdxl().scale_factor == 0.13025
    assert VAEConfig.sd15() == VAEConfig.sdxl().__class__(scale_factor=0.18215)


@pytest.mark.parametrize("cfg", [VAEConfig.sd15(), VAEConfig.sdxl(), VAEConfig.tiny()], ids=["sd15", "sdxl", "tiny"])
def test_config_recovered_from_state_dict_shapes(cfg):
    with torch.device("meta"):
        shapes = {"first_stage_model." + k: tuple(v.shape) for k, v in AutoencoderKL(cfg).state_dict().items()}
    assert VAEConfig.from_state_dict_shapes(shapes, cfg.scale_factor) == cfg


def test_known_real_key_names_and_shapes():
    with torch.device("meta"):
        s = {k: tuple(v.shape) for k, v in AutoencoderKL(VAEConfig.sd15()).state_dict().items()}
    assert s["encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert s["decoder.mid.attn_1.proj_out.weight"] == (512, 512, 1, 1)
    assert s["encoder.down.1.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert s["encoder.down.1.downsample.conv.weight"] == (256, 256, 3, 3)
    assert s["encoder.down.2.downsample.conv.weight"] == (512, 512, 3, 3)
    assert s["decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert s["decoder.up.0.block.2.conv2.weight"] == (128, 128, 3, 3)
    assert s["quant_conv.weight"] == (8, 8, 1, 1)
    assert s["post_quant_conv.weight"] == (4, 4, 1, 1)
    assert "decoder.up.0.upsample.conv.weight" not in s
    assert len(s) == 248
