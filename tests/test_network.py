"""LoRA / LoCon modules, kohya naming and the network over a model: counts, math, borrowing."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lora_trainer.models.clip_text import ClipTextConfig, ClipTextModel
from lora_trainer.models.unet import UNet, UNetConfig
from lora_trainer.network.modules import LoRAModule
from lora_trainer.network.naming import (
    find_targets,
    select_targets,
)
from lora_trainer.network.network import NetworkConfig, create_network, merged


@dataclass
class Bundle:
    """Stand-in for models.bundle.ModelBundle: the three fields the network reads."""

    arch: str
    unet: nn.Module
    text_encoders: list


def tiny_bundle(arch: str, seed: int = 0) -> Bundle:
    torch.manual_seed(seed)
    if arch == "sd15":
        return Bundle("sd15", UNet(UNetConfig.tiny_sd15()), [("lora_te", ClipTextModel(ClipTextConfig.tiny()))])
    return Bundle(
        "sdxl",
        UNet(UNetConfig.tiny_sdxl()),
        [
            ("lora_te1", ClipTextModel(ClipTextConfig.tiny())),
            ("lora_te2", ClipTextModel(ClipTextConfig.tiny(projection_dim=32, hidden_act="gelu"))),
        ],
    )


@pytest.fixture(scope="module")
def real_models():
    """The real SD1.5 / SDXL UNets and text encoders, on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return {
            "unet_sd15": UNet(UNetConfig.sd15()),
            "unet_sdxl": UNet(UNetConfig.sdxl()),
            "clip_l": ClipTextModel(ClipTextConfig.clip_l()),
            "bigg": ClipTextModel(ClipTextConfig.clip_bigg()),
        }


# ---------------------------------------------------------------------------------------------
# Counts and names at the real configurations (kohya's log lines: 192/278 + 72; 722/788 + 72 + 192)


@pytest.mark.parametrize(
    "arch,locon,want",
    [
        ("sd15", False, {"unet": 192, "te": 72}),
        ("sd15", True, {"unet": 278, "te": 72}),
        ("sdxl", False, {"unet": 722, "te1": 72, "te2": 192}),
        ("sdxl", True, {"unet": 788, "te1": 72, "te2": 192}),
    ],
)
def test_module_counts_at_real_size(real_models, arch, locon, want):
    m = real_models
    tes = [("lora_te", m["clip_l"])] if arch == "sd15" else [("lora_te1", m["clip_l"]), ("lora_te2", m["bigg"])]
    bundle = Bundle(arch, m[f"unet_{arch}"], tes)
    config = NetworkConfig(dim=4, alpha=1, conv_dim=2 if locon else None, conv_alpha=1)
    net = create_network(bundle, config)
    assert net.counts() == want
    unet_only = create_network(bundle, NetworkConfig(dim=4, conv_dim=2 if locon else None, train_text_encoder=False))
    assert unet_only.counts() == {"unet": want["unet"]}
    # LoCon breakdown: SD1.5 50 3x3 convs + 22 time_emb_proj + 14 shortcuts; SDXL 38 + 17 + 11.
    if locon:
        kinds = Counter(
            "conv3x3" if lora.lora_down.weight.dim() == 4 and lora.lora_down.weight.shape[-1] == 3 else "other"
            for key, lora in net.loras()
            if key.startswith("lora_unet")
        )
        assert kinds["conv3x3"] == (50 if arch == "sd15" else 38)
        assert all(lora.dim == 2 for _, lora in net.loras() if lora.lora_down.weight.dim() == 4 and lora.lora_down.weight.shape[-1] == 3)


def test_real_sd15_keys_and_shapes(real_models):
    m = real_models
    net = create_network(Bundle("sd15", m["unet_sd15"], [("lora_te", m["clip_l"])]), NetworkConfig(dim=4, conv_dim=3))
    sd = net.state_dict()
    r = 4
    expect = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (r, 320, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, r, 1, 1),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": (r, 320),
        "lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (r, 768),
        "lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_k.lora_up.weight": (640, r),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj.lora_up.weight": (10240, r),
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2.lora_down.weight": (r, 1280),
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn1_to_out_0.lora_up.weight": (320, r),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight": (3, 320, 3, 3),
        "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight": (320, 3, 1, 1),
        "lora_unet_mid_block_resnets_1_conv2.lora_down.weight": (3, 1280, 3, 3),
        "lora_unet_down_blocks_2_downsamplers_0_conv.lora_down.weight": (3, 1280, 3, 3),
        "lora_unet_up_blocks_0_upsamplers_0_conv.lora_down.weight": (3, 1280, 3, 3),
        "lora_unet_down_blocks_1_resnets_0_conv_shortcut.lora_down.weight": (r, 320, 1, 1),
        "lora_unet_down_blocks_1_resnets_0_conv_shortcut.lora_up.weight": (640, r, 1, 1),
        "lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_down.weight": (r, 1280),
        "lora_unet_down_blocks_0_resnets_0_time_emb_proj.lora_up.weight": (320, r),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (r, 768),
        "lora_te_text_model_encoder_layers_11_mlp_fc1.lora_up.weight": (3072, r),
        "lora_te_text_model_encoder_layers_11_mlp_fc2.lora_down.weight": (r, 3072),
    }
    for name, shape in expect.items():
        assert tuple(sd[name].shape) == shape, name
    assert sd["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"].shape == ()
    assert not any("up_blocks_0_attentions" in k for k in sd)  # SD1.5 up_blocks.0 has no attention
    assert not any("input_blocks" in k or "output_blocks" in k for k in sd)
    assert len(sd) == 3 * (278 + 72)


def test_real_sdxl_keys_and_shapes(real_models):
    m = real_models
    bundle = Bundle("sdxl", m["unet_sdxl"], [("lora_te1", m["clip_l"]), ("lora_te2", m["bigg"])])
    sd = create_network(bundle, NetworkConfig(dim=4, conv_dim=3)).state_dict()
    r = 4
    expect = {
        "lora_unet_input_blocks_4_1_proj_in.lora_down.weight": (r, 640),
        "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_down.weight": (r, 2048),
        "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k.lora_up.weight": (640, r),
        "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_0_proj.lora_up.weight": (10240, r),
        "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_out_0.lora_up.weight": (1280, r),
        "lora_unet_output_blocks_5_1_transformer_blocks_1_ff_net_2.lora_down.weight": (r, 2560),
        "lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight": (3, 320, 3, 3),
        "lora_unet_input_blocks_1_0_out_layers_3.lora_down.weight": (3, 320, 3, 3),
        "lora_unet_input_blocks_1_0_emb_layers_1.lora_down.weight": (r, 1280),
        "lora_unet_input_blocks_4_0_skip_connection.lora_down.weight": (r, 320, 1, 1),
        "lora_unet_input_blocks_3_0_op.lora_down.weight": (3, 320, 3, 3),
        "lora_unet_output_blocks_2_2_conv.lora_down.weight": (3, 1280, 3, 3),
        "lora_te1_text_model_encoder_layers_11_mlp_fc1.lora_up.weight": (3072, r),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (r, 1280),
        "lora_te2_text_model_encoder_layers_31_mlp_fc1.lora_up.weight": (5120, r),
        "lora_te2_text_model_encoder_layers_31_mlp_fc2.lora_down.weight": (r, 5120),
    }
    for name, shape in expect.items():
        assert tuple(sd[name].shape) == shape, name
    assert not any("down_blocks" in k or "text_projection" in k for k in sd)


def test_sd15_names_invert_a1111_rules(real_models):
    """Every SD1.5 key maps back to its ldm module by A1111's diffusers->compvis formulas (webui-host.md 4.4)."""
    import re

    resnet = {"conv1": "in_layers_2", "conv2": "out_layers_3", "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"}

    def a1111(key: str) -> str:
        if m := re.fullmatch(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
            b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
            rest = resnet.get(rest, rest) if kind == "resnets" else rest
            return f"lora_unet_input_blocks_{1 + 3 * b + i}_{1 if kind == 'attentions' else 0}_{rest}"
        if m := re.fullmatch(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key):
            kind, i, rest = m[1], int(m[2]), m[3]
            rest = resnet.get(rest, rest) if kind == "resnets" else rest
            return f"lora_unet_middle_block_{1 if kind == 'attentions' else 2 * i}_{rest}"
        if m := re.fullmatch(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
            b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
            rest = resnet.get(rest, rest) if kind == "resnets" else rest
            return f"lora_unet_output_blocks_{3 * b + i}_{1 if kind == 'attentions' else 0}_{rest}"
        if m := re.fullmatch(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", key):
            return f"lora_unet_input_blocks_{3 + 3 * int(m[1])}_0_op"
        if m := re.fullmatch(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", key):
            b = int(m[1])
            return f"lora_unet_output_blocks_{2 + 3 * b}_{1 if b == 0 else 2}_conv"
        raise AssertionError(key)

    targets = select_targets(find_targets("sd15", real_models["unet_sd15"], []), locon=True)
    assert len(targets) == 278
    for t in targets:
        assert t.aliases == (a1111(t.key),), t.key
        assert t.aliases[0] == "lora_unet_" + t.path.replace(".", "_")


def test_sdxl_aliases_are_diffusers_names(real_models):
    targets = find_targets("sdxl", real_models["unet_sdxl"], [])
    by_key = {t.key: t for t in targets}
    t = by_key["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"]
    assert t.aliases == ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",)
    assert by_key["lora_unet_middle_block_1_proj_out"].aliases == ("lora_unet_mid_block_attentions_0_proj_out",)
    assert by_key["lora_unet_output_blocks_5_2_conv"].aliases == ("lora_unet_up_blocks_1_upsamplers_0_conv",)


def test_hf_clip_attention_class_names_are_targets():
    """transformers' CLIPTextModel (whatever attention class it instantiates) gives the same 6 per layer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    hf = CLIPTextModel(cfg)
    targets = select_targets(find_targets("sd15", None, [("lora_te", hf)]), locon=False)
    assert len(targets) == 12
    layer0 = {t.key.removeprefix("lora_te_text_model_encoder_layers_0_") for t in targets if "_layers_0_" in t.key}
    assert layer0 == {"self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj", "mlp_fc1", "mlp_fc2"}


# ---------------------------------------------------------------------------------------------
# The module's math


def test_init_is_kohyas():
    torch.manual_seed(0)
    base = nn.Linear(64, 32)
    lora = LoRAModule(base, dim=8, alpha=4)
    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
    assert lora.lora_down.weight.abs().max() <= bound
    assert lora.lora_down.weight.abs().max() > 0.8 * bound
    assert torch.count_nonzero(lora.lora_up.weight) == 0
    assert lora.scale == 0.5
    assert LoRAModule(base, dim=8, alpha=None).scale == 1.0  # kohya: no alpha = dim
    conv = LoRAModule(nn.Conv2d(16, 8, 3, stride=2, padding=1), dim=4, alpha=1)
    assert conv.lora_down.weight.shape == (4, 16, 3, 3) and conv.lora_up.weight.shape == (8, 4, 1, 1)
    assert conv.lora_down.stride == (2, 2) and conv.lora_down.padding == (1, 1)
    assert conv.lora_down.weight.abs().max() <= 1 / math.sqrt(16 * 9)


@pytest.mark.parametrize(
    "base,x",
    [
        (nn.Linear(24, 40), torch.randn(2, 7, 24)),
        (nn.Conv2d(12, 20, 1), torch.randn(2, 12, 6, 5)),
        (nn.Conv2d(12, 20, 3, padding=1), torch.randn(2, 12, 6, 5)),
        (nn.Conv2d(12, 12, 3, stride=2, padding=1), torch.randn(2, 12, 8, 8)),
    ],
    ids=["linear", "conv1x1", "conv3x3", "conv3x3-stride2"],
)
def test_hooked_forward_equals_merged_weights(base, x):
    torch.manual_seed(1)
    lora = LoRAModule(base, dim=4, alpha=2)
    nn.init.normal_(lora.lora_up.weight)  # non-zero so the delta is visible
    lora.multiplier = 0.7
    expected_delta = lora(x)
    hooked = base(x) + expected_delta
    weight_before = base.weight.detach().clone()
    merged_weight = base.weight.detach() + lora.delta_weight().reshape(base.weight.shape)
    if isinstance(base, nn.Linear):
        out = nn.functional.linear(x, merged_weight, base.bias)
    else:
        out = nn.functional.conv2d(x, merged_weight, base.bias, base.stride, base.padding)
    assert expected_delta.abs().max() > 0.1
    torch.testing.assert_close(out, hooked, atol=2e-5, rtol=1e-4)
    assert torch.equal(base.weight, weight_before)


def test_dropouts_follow_kohya_semantics():
    torch.manual_seed(0)
    base = nn.Linear(16, 16)
    x = torch.randn(4, 5, 16)
    lora = LoRAModule(base, dim=8, alpha=8, module_dropout=1.0 - 1e-9)
    nn.init.normal_(lora.lora_up.weight)
    lora.train()
    assert lora(x) is None  # module dropout skips the whole delta
    lora.eval()
    assert lora(x) is not None  # and never in eval
    rank = LoRAModule(base, dim=8, alpha=8, rank_dropout=0.5)
    nn.init.normal_(rank.lora_up.weight)
    rank.train()
    torch.manual_seed(3)
    out = rank(x)
    torch.manual_seed(3)
    keep = (torch.rand(4, 8) > 0.5).float()[:, None, :]
    want = rank.lora_up(rank.lora_down(x) * keep) * (1.0 / 0.5)
    torch.testing.assert_close(out, want)
    rank.eval()
    torch.testing.assert_close(rank(x), rank.lora_up(rank.lora_down(x)))


# ---------------------------------------------------------------------------------------------
# The network on a (tiny) model: base tensors are borrowed and come back untouched


def _unet_inputs(bundle: Bundle, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cfg = bundle.unet.config
    x = torch.randn(1, 4, 8, 8, generator=g)
    t = torch.tensor([500])
    ctx = torch.randn(1, 5, cfg.context_dim, generator=g)
    y = torch.randn(1, cfg.adm_in_channels, generator=g) if cfg.adm_in_channels else None
    return x, t, ctx, y


def _snapshot(bundle: Bundle):
    params = list(bundle.unet.named_parameters()) + [
        (f"{p}.{n}", t) for p, te in bundle.text_encoders for n, t in te.named_parameters()
    ]
    return {n: (t, t.data_ptr(), t.detach().clone()) for n, t in params}


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_attach_train_detach_leaves_base_untouched(arch):
    bundle = tiny_bundle(arch)
    for module in [bundle.unet] + [te for _, te in bundle.text_encoders]:
        module.requires_grad_(False)
    x, t, ctx, y = _unet_inputs(bundle)
    ids = torch.tensor([[49406, 320, 1125, 49407, 49407]])
    with torch.no_grad():
        before = bundle.unet(x, t, ctx, y)
        te_before = bundle.text_encoders[0][1](ids).last_hidden_state
    unet_keys = list(bundle.unet.state_dict())
    snap = _snapshot(bundle)

    net = create_network(bundle, NetworkConfig(dim=4, alpha=2, conv_dim=2, conv_alpha=1))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    with net.attached():
        with torch.no_grad():  # freshly made: up is zero, so the output is unchanged
            torch.testing.assert_close(bundle.unet(x, t, ctx, y), before, atol=0, rtol=0)
        # two steps: the first only moves lora_up (it starts at zero), the second everything
        for _ in range(2):
            te_out = bundle.text_encoders[0][1](ids).last_hidden_state
            loss = bundle.unet(x, t, ctx, y).square().mean() + te_out.square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            during = bundle.unet(x, t, ctx, y)
        assert (during - before).abs().max() > 1e-4  # the LoRA took effect
        assert list(bundle.unet.state_dict()) == unet_keys  # base names unchanged while attached
    with torch.no_grad():
        assert torch.equal(bundle.unet(x, t, ctx, y), before)
        assert torch.equal(bundle.text_encoders[0][1](ids).last_hidden_state, te_before)
    for name, (tensor, ptr, copy) in snap.items():
        current = dict(bundle.unet.named_parameters()).get(name)
        if current is not None:
            assert current is tensor, name
        assert tensor.data_ptr() == ptr and torch.equal(tensor, copy) and tensor.grad is None, name
    assert all(not m._forward_hooks for m in bundle.unet.modules())


def test_merged_matches_hooks_and_unmerges_bit_exactly():
    bundle = tiny_bundle("sd15", seed=3)
    net = create_network(bundle, NetworkConfig(dim=4, alpha=2, conv_dim=2, conv_alpha=2))
    torch.manual_seed(5)
    for _, lora in net.loras():
        nn.init.normal_(lora.lora_up.weight, std=0.05)
    net.set_multiplier(0.8)
    x, t, ctx, _ = _unet_inputs(bundle)
    snap = _snapshot(bundle)
    with torch.no_grad():
        base = bundle.unet(x, t, ctx)
        with net.attached():
            hooked = bundle.unet(x, t, ctx)
        with merged([net]):
            fused = bundle.unet(x, t, ctx)
        after = bundle.unet(x, t, ctx)
    assert (hooked - base).abs().max() > 1e-3
    torch.testing.assert_close(fused, hooked, atol=1e-4, rtol=1e-4)
    assert torch.equal(after, base)
    params = dict(bundle.unet.named_parameters())
    for name, (tensor, ptr, copy) in snap.items():
        if name in params:
            assert params[name] is tensor and tensor.data_ptr() == ptr and torch.equal(tensor, copy), name


def test_param_groups_and_multiplier():
    bundle = tiny_bundle("sdxl")
    net = create_network(bundle, NetworkConfig(dim=2))
    groups = net.param_groups(unet_lr=1e-4, text_encoder_lr=5e-5)
    assert [g["name"] for g in groups] == ["textencoder", "unet"]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in net.parameters())
    assert [g["name"] for g in net.param_groups(unet_lr=1e-4, text_encoder_lr=0)] == ["unet"]
    net.set_multiplier(0.5, part="te*")
    assert {lora.multiplier for k, lora in net.loras() if k.startswith("lora_te")} == {0.5}
    assert {lora.multiplier for k, lora in net.loras() if k.startswith("lora_unet")} == {1.0}


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="conv_dim is 0"):
        NetworkConfig(conv_dim=0).validate()
    with pytest.raises(ValueError, match="rank_dropout is 1.5"):
        NetworkConfig(rank_dropout=1.5).validate()
    assert NetworkConfig().network_args() is None
    assert NetworkConfig(conv_dim=8, conv_alpha=4).network_args() == {"conv_dim": "8", "conv_alpha": "4", "dropout": None}
    assert NetworkConfig(conv_dim=8, conv_alpha=0.5).network_args()["conv_alpha"] == "0.5"


# ---------------------------------------------------------------------------------------------
# An independent oracle: kohya's walk over diffusers' UNet gives kohya's SD1.5 keys (its SD1 UNet
# keeps diffusers' names) and the diffusers-style SDXL keys other trainers write.


def _diffusers_kohya_keys(unet: nn.Module, locon: bool) -> set[str]:
    classes = ["Transformer2DModel"] + (["ResnetBlock2D", "Downsample2D", "Upsample2D"] if locon else [])
    keys = set()
    for name, module in unet.named_modules():
        if module.__class__.__name__ in classes:
            for child_name, child in module.named_modules():
                kind = child.__class__.__name__
                if kind in ("Linear", "Conv2d") and (locon or kind == "Linear" or child.kernel_size == (1, 1)):
                    keys.add(f"lora_unet.{name}.{child_name}".replace(".", "_"))
    return keys


@pytest.mark.parametrize("locon", [False, True])
def test_keys_match_kohya_walk_over_diffusers_unet(real_models, locon):
    UNet2DConditionModel = pytest.importorskip("diffusers").UNet2DConditionModel

    with torch.device("meta"):
        d15 = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8)
        dxl = UNet2DConditionModel(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            cross_attention_dim=2048,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
    ours15 = select_targets(find_targets("sd15", real_models["unet_sd15"], []), locon=locon)
    assert {t.key for t in ours15} == _diffusers_kohya_keys(d15, locon)
    oursxl = select_targets(find_targets("sdxl", real_models["unet_sdxl"], []), locon=locon)
    assert {t.aliases[0] for t in oursxl} == _diffusers_kohya_keys(dxl, locon)
    # and the shapes agree layer by layer (same module under both names)
    d_modules = {f"lora_unet.{n}".replace(".", "_"): m for n, m in d15.named_modules()}
    for t in ours15:
        assert tuple(d_modules[t.key].weight.shape) == tuple(t.module.weight.shape), t.key
    d_modules = {f"lora_unet.{n}".replace(".", "_"): m for n, m in dxl.named_modules()}
    for t in oursxl:
        assert tuple(d_modules[t.aliases[0]].weight.shape) == tuple(t.module.weight.shape), t.key


@pytest.mark.parametrize("dim,sizes_mb", [(8, (9.4, 19.5, 42.6, 57.0)), (128, (151.0, 311.5, 680.9, 912.1))])
def test_fp16_tensor_bytes_match_kohya_file_sizes(real_models, dim, sizes_mb):
    """kohya-format.md 1.4: fp16 tensor bytes of SD1.5 (LoRA, LoCon at conv_dim = dim), SDXL UNet only, SDXL all."""
    m = real_models
    sd15 = Bundle("sd15", m["unet_sd15"], [("lora_te", m["clip_l"])])
    sdxl = Bundle("sdxl", m["unet_sdxl"], [("lora_te1", m["clip_l"]), ("lora_te2", m["bigg"])])
    nets = [
        create_network(sd15, NetworkConfig(dim=dim)),
        create_network(sd15, NetworkConfig(dim=dim, conv_dim=dim)),
        create_network(sdxl, NetworkConfig(dim=dim, train_text_encoder=False)),
        create_network(sdxl, NetworkConfig(dim=dim)),
    ]
    got = [sum(t.numel() * 2 for t in net.state_dict().values()) / 1e6 for net in nets]
    assert got == pytest.approx(sizes_mb, abs=0.06)
