"""Our ldm-named UNet against diffusers' UNet2DConditionModel (the reference implementation).

Numbers are checked at tiny configs with random weights moved across by our own ldm -> diffusers
key mapping; real SD1.5/SDXL sizes are built on the meta device (no memory) to compare parameter
counts and to check that diffusers' own single-file converter consumes exactly our key set.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_trainer.models.unet import (
    SDXL_SIZE_EMBED_DIM,
    UNet,
    UNetConfig,
    ldm_to_diffusers_name,
    timestep_embedding,
)

diffusers = pytest.importorskip("diffusers")
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

SD15_PARAMS = 859_520_964
SDXL_PARAMS = 2_567_463_684
FP32_TOL = 1e-4  # max abs difference between our output and diffusers' at fp32


# ---------------------------------------------------------------------------------------------
# Helpers: diffusers config and our own ldm -> diffusers key mapping


def diffusers_kwargs(cfg: UNetConfig) -> dict:
    """UNet2DConditionModel keyword arguments for the same network as `cfg`."""
    has_attn = [d > 0 for d in cfg.transformer_depth]
    if cfg.num_heads is not None:
        heads: int | list[int] = cfg.num_heads  # diffusers' "attention_head_dim" is the head count
    else:
        heads = [max(1, cfg.model_channels * m // cfg.num_head_channels) for m in cfg.channel_mult]
    # diffusers runs the middle block at the last level's depth.
    assert cfg.transformer_depth_middle == max(1, cfg.transformer_depth[-1])
    kw = {
        "sample_size": 32,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)),
        "block_out_channels": tuple(cfg.model_channels * m for m in cfg.channel_mult),
        "layers_per_block": cfg.num_res_blocks,
        "transformer_layers_per_block": [max(1, d) for d in cfg.transformer_depth],
        "attention_head_dim": heads,
        "cross_attention_dim": cfg.context_dim,
        "use_linear_projection": cfg.use_linear_in_transformer,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    if cfg.adm_in_channels is not None:
        kw.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=cfg.adm_in_channels,
        )
    return kw


def build_pair(cfg: UNetConfig, seed: int = 0) -> tuple[UNet, UNet2DConditionModel]:
    """Our UNet with random weights, and diffusers' with the same weights."""
    torch.manual_seed(seed)
    ours = UNet(cfg).eval()
    ref = UNet2DConditionModel(**diffusers_kwargs(cfg)).eval()
    moved = {ldm_to_diffusers_name(k, cfg): v for k, v in ours.state_dict().items()}
    ref_keys = set(ref.state_dict())
    assert set(moved) == ref_keys, (sorted(set(moved) - ref_keys)[:5], sorted(ref_keys - set(moved))[:5])
    ref.load_state_dict(moved, strict=True)
    return ours, ref


# ---------------------------------------------------------------------------------------------
# Numbers against diffusers at tiny configs


def test_timestep_embedding_matches_diffusers_flip_sin_to_cos():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0, 1, 17, 999, 1024])
    for dim in (256, 320, 7):
        ours = timestep_embedding(t, dim)
        ref = get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        assert ours.shape == (5, dim)
        assert torch.allclose(ours, ref, atol=1e-6)


def test_tiny_sd15_matches_diffusers():
    cfg = UNetConfig.tiny_sd15()
    ours, ref = build_pair(cfg)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 24, generator=g)  # non-square, as buckets are
    t = torch.tensor([3, 871])
    ctx = torch.randn(2, 20, cfg.context_dim, generator=g)
    with torch.no_grad():
        a = ours(x, t, ctx)
        b = ref(x, t, encoder_hidden_states=ctx).sample
    assert a.shape == (2, 4, 16, 24)
    assert (a - b).abs().max().item() < FP32_TOL


def test_tiny_sdxl_matches_diffusers():
    cfg = UNetConfig.tiny_sdxl()
    ours, ref = build_pair(cfg, seed=2)
    g = torch.Generator().manual_seed(3)
    b_, pooled_dim = 2, cfg.adm_in_channels - SDXL_SIZE_EMBED_DIM
    x = torch.randn(b_, 4, 24, 16, generator=g)
    t = torch.tensor([999, 20])
    ctx = torch.randn(b_, 20, cfg.context_dim, generator=g)
    pooled = torch.randn(b_, pooled_dim, generator=g)
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 0.0, 1024.0, 768.0], [832.0, 1216.0, 16.0, 8.0, 832.0, 1216.0]])
    # y = [pooled | 256-d sinusoid of each of the 6 size numbers], as SDXL's conditioner builds it.
    y = torch.cat([pooled, timestep_embedding(time_ids.flatten(), 256).reshape(b_, -1)], dim=1)
    with torch.no_grad():
        a = ours(x, t, ctx, y)
        b = ref(x, t, encoder_hidden_states=ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    assert a.shape == (2, 4, 24, 16)
    assert (a - b).abs().max().item() < FP32_TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_close_to_fp32(dtype):
    cfg = UNetConfig.tiny_sd15()
    torch.manual_seed(4)
    model = UNet(cfg).eval()
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 8, cfg.context_dim)
    with torch.no_grad():
        full = model(x, t, ctx)
        half = model.to(dtype)(x.to(dtype), t, ctx.to(dtype))
    assert half.dtype == dtype
    assert torch.isfinite(half).all()
    # bf16 keeps 8 mantissa bits: relative error of a few percent of the output scale.
    assert (half.float() - full).abs().max().item() < 0.05 * full.abs().max().item() + 0.05


def test_gradient_checkpointing_same_output_and_lora_gets_gradient():
    cfg = UNetConfig.tiny_sd15()
    torch.manual_seed(5)
    model = UNet(cfg).train()
    for p in model.parameters():
        p.requires_grad_(False)  # frozen base, as in LoRA training

    class LoRALike(nn.Module):
        def __init__(self, org: nn.Linear, rank: int = 2):
            super().__init__()
            self.org = org
            self.down = nn.Parameter(torch.randn(rank, org.in_features) * 0.1)
            self.up = nn.Parameter(torch.randn(org.out_features, rank) * 0.1)

        def forward(self, x):
            return self.org(x) + x @ self.down.T @ self.up.T

    attn = model.input_blocks[1][1].transformer_blocks[0].attn1
    attn.to_q = LoRALike(attn.to_q)
    lora = [attn.to_q.down, attn.to_q.up]
    g = torch.Generator().manual_seed(6)
    x, t, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 900]), torch.randn(2, 8, cfg.context_dim, generator=g)

    def run(enabled: bool):
        model.set_gradient_checkpointing(enabled)
        for p in lora:
            p.grad = None
        out = model(x, t, ctx)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in lora]

    out_plain, grads_plain = run(False)
    out_ckpt, grads_ckpt = run(True)
    assert torch.allclose(out_plain, out_ckpt, atol=1e-6)
    for a, b in zip(grads_plain, grads_ckpt):
        assert a.abs().sum() > 0
        assert torch.allclose(a, b, atol=1e-6)


def test_forward_rejects_missing_or_extra_vector():
    sd15 = UNet(UNetConfig.tiny_sd15())
    with pytest.raises(ValueError, match="adm_in_channels is None"):
        sd15(torch.randn(1, 4, 8, 8), torch.tensor([1]), torch.randn(1, 4, 32), torch.randn(1, 5))
    sdxl = UNet(UNetConfig.tiny_sdxl())
    with pytest.raises(ValueError, match="y is missing"):
        sdxl(torch.randn(1, 4, 8, 8), torch.tensor([1]), torch.randn(1, 4, 64))


def test_config_validation_names_both_values():
    with pytest.raises(ValueError, match=r"num_heads \(8\) and num_head_channels \(64\)"):
        UNetConfig(num_head_channels=64).validate()
    with pytest.raises(ValueError, match="transformer_depth has 3 levels but channel_mult has 4"):
        UNetConfig(transformer_depth=(1, 1, 1)).validate()


# ---------------------------------------------------------------------------------------------
# Real sizes on the meta device


@pytest.mark.parametrize(
    ("cfg", "expected"), [(UNetConfig.sd15(), SD15_PARAMS), (UNetConfig.sdxl(), SDXL_PARAMS)], ids=["sd15", "sdxl"]
)
def test_real_parameter_counts_equal_diffusers(cfg, expected):
    with torch.device("meta"):
        ours = UNet(cfg)
        ref = UNet2DConditionModel(**diffusers_kwargs(cfg))
    assert next(ours.parameters()).device.type == "meta"
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ours == n_ref == expected


@pytest.mark.parametrize("name", ["sd15", "sdxl", "tiny_sd15", "tiny_sdxl"])
def test_checkpoint_layout_fully_consumed_by_diffusers_converter(name):
    """diffusers' single-file converter maps our key set onto exactly its model's key set."""
    cfg = getattr(UNetConfig, name)()
    kwargs = diffusers_kwargs(cfg)
    with torch.device("meta"):
        ours = dict(UNet(cfg).state_dict())
        ref = UNet2DConditionModel(**kwargs).state_dict()
    checkpoint = {"model.diffusion_model." + k: v for k, v in ours.items()}
    converted = convert_ldm_unet_checkpoint(checkpoint, kwargs)
    assert set(converted) == set(ref)
    assert all(v is not None for v in converted.values())
    # Every one of our tensors was used exactly once (the UNet converter renames without copying).
    assert sorted(id(v) for v in converted.values()) == sorted(id(v) for v in ours.values())
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    # And our own mapping (used for the numeric tests) agrees with diffusers' converter.
    key_of = {id(v): k for k, v in ours.items()}
    assert {ldm_to_diffusers_name(k, cfg): k for k in ours} == {k: key_of[id(v)] for k, v in converted.items()}


@pytest.mark.parametrize("name", ["sd15", "sdxl", "tiny_sd15", "tiny_sdxl"])
def test_config_recovered_from_state_dict_shapes(name):
    cfg = getattr(UNetConfig, name)()
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in UNet(cfg).state_dict().items()}
    assert UNetConfig.from_state_dict_shapes(shapes) == cfg
    prefixed = {"model.diffusion_model." + k: v for k, v in shapes.items()}
    assert UNetConfig.from_state_dict_shapes(prefixed) == cfg


def test_known_real_key_names_and_shapes():
    """Spot checks against names and shapes listed in the reference (webui-host.md 2.2/2.3)."""
    with torch.device("meta"):
        sd15 = {k: tuple(v.shape) for k, v in UNet(UNetConfig.sd15()).state_dict().items()}
        sdxl = {k: tuple(v.shape) for k, v in UNet(UNetConfig.sdxl()).state_dict().items()}
    assert sd15["input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)
    assert sd15["input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"] == (640, 768)
    assert sd15["middle_block.1.transformer_blocks.0.ff.net.0.proj.weight"] == (10240, 1280)
    assert sd15["input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    assert sd15["output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert sd15["output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert sd15["input_blocks.4.0.skip_connection.weight"] == (640, 320, 1, 1)
    assert sdxl["label_emb.0.0.weight"] == (1280, 2816)
    assert sdxl["input_blocks.4.1.proj_in.weight"] == (640, 640)
    assert sdxl["input_blocks.8.1.transformer_blocks.9.ff.net.0.proj.weight"] == (10240, 1280)
    assert sdxl["output_blocks.5.1.transformer_blocks.1.ff.net.2.weight"] == (640, 2560)
    assert sdxl["output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    assert not any(k.startswith(("input_blocks.1.1", "input_blocks.2.1", "output_blocks.6.1.")) for k in sdxl)
    assert "output_blocks.8.1.conv.weight" not in sdxl


def test_module_names_map_like_kohya_sd15_names():
    """Module paths (not only tensor keys) map to the diffusers paths kohya's SD1.5 names use."""
    cfg = UNetConfig.sd15()
    cases = {
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q": "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "input_blocks.5.1.proj_in": "down_blocks.1.attentions.1.proj_in",
        "middle_block.1.transformer_blocks.0.ff.net.0.proj": "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
        "output_blocks.11.1.transformer_blocks.0.ff.net.2": "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2",
        "input_blocks.1.0.in_layers.2": "down_blocks.0.resnets.0.conv1",
        "input_blocks.1.0.emb_layers.1": "down_blocks.0.resnets.0.time_emb_proj",
        "input_blocks.4.0.skip_connection": "down_blocks.1.resnets.0.conv_shortcut",
        "middle_block.2.out_layers.3": "mid_block.resnets.1.conv2",
        "input_blocks.9.0.op": "down_blocks.2.downsamplers.0.conv",
        "output_blocks.2.1.conv": "up_blocks.0.upsamplers.0.conv",
        "output_blocks.5.2.conv": "up_blocks.1.upsamplers.0.conv",
        "input_blocks.4.1": "down_blocks.1.attentions.0",
        "output_blocks.3.0": "up_blocks.1.resnets.0",
    }
    for ldm, expected in cases.items():
        assert ldm_to_diffusers_name(ldm, cfg) == expected
    with pytest.raises(ValueError, match="not an ldm UNet"):
        ldm_to_diffusers_name("down_blocks.0.resnets.0.conv1", cfg)
