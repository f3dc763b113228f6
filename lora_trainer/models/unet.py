"""The Stable Diffusion 1.5 / SDXL UNet with ldm module names.

Submodule names are those of `ldm.modules.diffusionmodules.openaimodel.UNetModel` (and sgm's copy
for SDXL), so the `model.diffusion_model.*` tensors of a single-file checkpoint load with no
renaming, and a WebUI's loaded UNet and ours have the same state-dict keys:

    time_embed.{0,2}                      timestep MLP
    label_emb.0.{0,2}                     SDXL: the "vector" (pooled text + size embeddings) MLP
    input_blocks.N.M                      N=0: conv_in; then per level: ResBlock [+ SpatialTransformer],
                                          and a Downsample (`op`) between levels
    middle_block.{0,1,2}                  ResBlock, SpatialTransformer, ResBlock
    output_blocks.N.M                     ResBlock [+ SpatialTransformer] [+ Upsample (`conv`)]
    out.{0,2}                             GroupNorm, SiLU, conv_out

Weights are always loaded from a checkpoint; the default PyTorch init only serves tiny test models
(ldm zero-initialises some output convs, which would make a random test model output zeros).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lora_trainer.models.attention import attention

# The size embeddings that SDXL's conditioner concatenates to the pooled text vector (3 pairs of
# numbers, 256 sinusoidal features each); only needed to describe tiny SDXL configs below.
SDXL_SIZE_EMBED_DIM = 6 * 256


# ---------------------------------------------------------------------------------------------
# Small parts


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding as ldm computes it: [cos | sin] (Vaswani et al. 2017, sec. 3.5).

    timesteps: (B,) of any numeric dtype; returns (B, dim) in float32. The cos half comes first
    (diffusers calls this flip_sin_to_cos=True, downscale_freq_shift=0). SDXL's conditioner uses
    the same function for its size and crop embeddings (dim 256 per number).
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps.float()[:, None] * torch.exp(exponent)[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    # 32 groups everywhere, as ldm's `normalization()`. It runs in the input dtype: PyTorch's
    # group_norm kernels accumulate fp16/bf16 statistics in fp32 already, so ldm's explicit
    # `.float()` round trip would only cost memory.
    return nn.GroupNorm(32, channels, eps=eps)


class ResBlock(nn.Module):
    """ldm ResBlock: two 3x3 convs with the timestep embedding added in between."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(
            _group_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Index 2 is ldm's Dropout (p=0 at inference and in every SD training recipe we follow).
        self.out_layers = nn.Sequential(
            _group_norm(out_channels),
            nn.SiLU(),
            nn.Dropout(0.0),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)  # (B, C_out, H, W)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        h = self.out_layers(h)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv (ldm `op`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv (ldm `conv`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class CrossAttention(nn.Module):
    """ldm CrossAttention: self-attention when no context is given."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        # Index 1 is ldm's Dropout.
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)  # (B, T|S, H*D)
        return self.to_out(attention(q, k, v, self.heads))


class GEGLU(nn.Module):
    """GELU-gated linear unit (Shazeer 2020): one projection gives value and gate."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """`ff.net.0.proj` (GEGLU, 4x wider) -> dropout -> `ff.net.2`."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Self-attention, cross-attention to the text, feed-forward; each pre-norm and residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x  # (B, HW, C)
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """ldm SpatialTransformer: image features as tokens through `depth` transformer blocks.

    proj_in/proj_out are 1x1 convs in SD1.5 and Linears in SDXL (`use_linear`); the two are the
    same map, but the tensor shapes differ ([C, C, 1, 1] vs [C, C]), so both must exist.
    """

    def __init__(
        self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, use_linear: bool
    ):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        if use_linear:
            self.proj_in: nn.Module = nn.Linear(channels, inner)
            self.proj_out: nn.Module = nn.Linear(inner, channels)
        else:
            self.proj_in = nn.Conv2d(channels, inner, 1)
            self.proj_out = nn.Conv2d(inner, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)]
        )

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)  # (B, inner, H, W)
        x = x.flatten(2).transpose(1, 2).contiguous()  # (B, HW, C), token-major for the Linears
        if self.use_linear:
            x = self.proj_in(x)  # (B, HW, inner)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)  # (B, HW, C)
        # contiguous: the transposed view is channels-last, which makes the conv (and the residual
        # add) copy it in both passes; one explicit copy here is cheaper (measured in bench_train).
        x = x.transpose(1, 2).reshape(b, -1, h, w).contiguous()  # (B, C|inner, H, W)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TimestepEmbedSequential(nn.Sequential):
    """An ldm block: hands the timestep embedding and the text context to the layers that take them.

    `checkpointed`: whether gradient checkpointing recomputes this block (set by the UNet; a plain
    attribute, not state).
    """

    checkpointed = True

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


# ---------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class UNetConfig:
    """Shape of an ldm UNet. Every field can be read back from a state dict's tensor shapes
    (see `from_state_dict_shapes`) except the head split, which no tensor records."""

    # 4 latent channels in and out: the SD VAE's latent space (9 in for inpainting models).
    in_channels: int = 4
    out_channels: int = 4
    # Width of level 0; level widths are model_channels * channel_mult. 320 for SD1.5 and SDXL.
    model_channels: int = 320
    # One entry per resolution level; a Downsample sits between levels.
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    # ResBlocks per level on the way down (the way up has one more, for the skip from the Downsample).
    num_res_blocks: int = 2
    # Transformer blocks per level; 0 = no attention at that level (SD1.5: 1,1,1,0; SDXL: 0,2,10).
    transformer_depth: tuple[int, ...] = (1, 1, 1, 0)
    # Transformer blocks in middle_block.1 (SD1.5: 1; SDXL: 10, its last level's depth).
    transformer_depth_middle: int = 1
    # Fixed head count at every level (SD1.5: 8); None when num_head_channels is used.
    num_heads: int | None = 8
    # Fixed width per head, heads = channels // this (SD2 and SDXL: 64); None when num_heads is used.
    num_head_channels: int | None = None
    # Width of the text tokens the cross-attention reads (CLIP-L 768; SDXL CLIP-L + bigG = 2048).
    context_dim: int = 768
    # SDXL's "vector" input width (pooled bigG 1280 + 6 x 256 size embeddings = 2816); None = SD1.5.
    adm_in_channels: int | None = None
    # proj_in/proj_out as Linear (SD2, SDXL) instead of 1x1 Conv2d (SD1.5).
    use_linear_in_transformer: bool = False

    @classmethod
    def sd15(cls) -> UNetConfig:
        """SD1.5 (ldm configs/v1-inference.yaml): 859,520,964 parameters."""
        return cls()

    @classmethod
    def sdxl(cls) -> UNetConfig:
        """SDXL base (sgm sd_xl_base.yaml): 2,567,463,684 parameters."""
        return cls(
            channel_mult=(1, 2, 4),
            transformer_depth=(0, 2, 10),
            transformer_depth_middle=10,
            num_heads=None,
            num_head_channels=64,
            context_dim=2048,
            adm_in_channels=2816,
            use_linear_in_transformer=True,
        )

    @classmethod
    def tiny_sd15(cls) -> UNetConfig:
        """SD1.5 layout at test size: same key patterns (4 levels, attention on 0-2, conv proj)."""
        return cls(model_channels=32, num_res_blocks=1, context_dim=32)

    @classmethod
    def tiny_sdxl(cls) -> UNetConfig:
        """SDXL layout at test size: 3 levels, no attention on level 0, linear proj, label_emb.

        Pooled text width 32, so the vector is 32 + 6 x 256 = 1568 wide (the size embeddings keep
        their real width so the conditioning code has one path for real and tiny models).
        """
        return cls(
            model_channels=32,
            channel_mult=(1, 2, 4),
            num_res_blocks=1,
            transformer_depth=(0, 1, 2),
            transformer_depth_middle=2,
            num_heads=None,
            num_head_channels=64,
            context_dim=64,
            adm_in_channels=32 + SDXL_SIZE_EMBED_DIM,
            use_linear_in_transformer=True,
        )

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    def heads_at(self, channels: int) -> tuple[int, int]:
        """(heads, dim_head) for an attention block of `channels` width."""
        if self.num_head_channels is not None:
            return channels // self.num_head_channels, self.num_head_channels
        assert self.num_heads is not None  # validate() guarantees exactly one is set
        return self.num_heads, channels // self.num_heads

    def validate(self) -> None:
        """Raise ValueError naming the clashing values."""
        if (self.num_heads is None) == (self.num_head_channels is None):
            raise ValueError(
                f"set exactly one of num_heads ({self.num_heads}) and num_head_channels "
                f"({self.num_head_channels})"
            )
        if len(self.transformer_depth) != len(self.channel_mult):
            raise ValueError(
                f"transformer_depth has {len(self.transformer_depth)} levels but channel_mult "
                f"has {len(self.channel_mult)}"
            )
        for mult, depth in zip(self.channel_mult, self.transformer_depth):
            ch = self.model_channels * mult
            if ch % 32:
                raise ValueError(f"level width {ch} is not divisible by 32 (GroupNorm groups)")
            if depth:
                heads, dim_head = self.heads_at(ch)
                if heads < 1 or heads * dim_head != ch:
                    raise ValueError(f"level width {ch} does not split into heads (got {heads} x {dim_head})")

    @classmethod
    def from_state_dict_shapes(
        cls,
        shapes: dict[str, tuple[int, ...]],
        num_heads: int | None = None,
        num_head_channels: int | None = None,
    ) -> UNetConfig:
        """Read the config from UNet tensor shapes (keys with or without `model.diffusion_model.`).

        The head split is not in any shape; by default it follows the family: conv proj_in
        (SD1.x) -> 8 heads, linear proj_in (SD2.x, SDXL) -> 64 channels per head.
        """
        prefix = "model.diffusion_model."
        s = {k.removeprefix(prefix): tuple(v) for k, v in shapes.items()}
        if "input_blocks.0.0.weight" not in s:
            raise ValueError("no input_blocks.0.0.weight: these are not ldm UNet tensors")

        in_shape = s["input_blocks.0.0.weight"]  # (model_channels, in_channels, 3, 3)
        model_channels = in_shape[0]
        blocks = {int(k.split(".")[1]) for k in s if k.startswith("input_blocks.")}
        n_input = max(blocks) + 1
        downs = sorted(i for i in blocks if f"input_blocks.{i}.0.op.weight" in s)
        # n_input = 1 + levels * num_res_blocks + (levels - 1)
        num_res_blocks = (downs[0] - 1) if downs else (n_input - 1)
        levels = n_input // (num_res_blocks + 1)

        def depth(block: str) -> int:
            marker = f"{block}.transformer_blocks."
            ids = {int(k[len(marker):].split(".")[0]) for k in s if k.startswith(marker)}
            return max(ids) + 1 if ids else 0

        channel_mult, transformer_depth = [], []
        for level in range(levels):
            first = 1 + level * (num_res_blocks + 1)  # first ResBlock of this level
            channel_mult.append(s[f"input_blocks.{first}.0.out_layers.3.weight"][0] // model_channels)
            transformer_depth.append(depth(f"input_blocks.{first}.1"))

        proj_key = next((k for k in s if k.endswith(".proj_in.weight")), None)
        context_key = next((k for k in s if k.endswith(".attn2.to_k.weight")), None)
        if proj_key is None or context_key is None:
            raise ValueError("no SpatialTransformer tensors (proj_in, attn2): not an SD1.x/SDXL UNet")
        use_linear = len(s[proj_key]) == 2
        adm = s.get("label_emb.0.0.weight")
        if num_heads is None and num_head_channels is None:
            num_head_channels, num_heads = (64, None) if use_linear else (None, 8)
        return cls(
            in_channels=in_shape[1],
            out_channels=s["out.2.weight"][0],
            model_channels=model_channels,
            channel_mult=tuple(channel_mult),
            num_res_blocks=num_res_blocks,
            transformer_depth=tuple(transformer_depth),
            transformer_depth_middle=depth("middle_block.1"),
            num_heads=num_heads,
            num_head_channels=num_head_channels,
            context_dim=s[context_key][1],
            adm_in_channels=adm[1] if adm is not None else None,
            use_linear_in_transformer=use_linear,
        )


# ---------------------------------------------------------------------------------------------
# ldm -> diffusers names (kohya names SD1.5 LoRA modules after the diffusers layout)

_TOP_LEVEL_NAMES = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.0": "conv_norm_out",
    "out.2": "conv_out",
}
_RESBLOCK_NAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


def _join(head: str, rest: list[str]) -> str:
    return ".".join([head, *rest])


def _resblock_rest(rest: list[str]) -> list[str]:
    for old, new in _RESBLOCK_NAMES.items():
        n = old.count(".") + 1
        if rest[:n] == old.split("."):
            return [new, *rest[n:]]
    return rest  # the ResBlock itself


def ldm_to_diffusers_name(name: str, config: UNetConfig) -> str:
    """The diffusers name of an ldm UNet module path or tensor key.

    `input_blocks.1.1.transformer_blocks.0.attn1.to_q` -> `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`,
    `input_blocks.3.0.op.weight` -> `down_blocks.0.downsamplers.0.conv.weight`, `output_blocks.2.1.conv`
    -> `up_blocks.0.upsamplers.0.conv`. SpatialTransformer internals keep their names.
    """
    for old, new in _TOP_LEVEL_NAMES.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    parts = name.split(".")
    per_level = config.num_res_blocks + 1
    if parts[0] == "input_blocks" and len(parts) >= 3:
        level, j = divmod(int(parts[1]) - 1, per_level)
        layer, rest = int(parts[2]), parts[3:]
        if j == config.num_res_blocks:  # the Downsample that closes the level
            return _join(f"down_blocks.{level}.downsamplers.0.conv", rest[1:])
        if layer == 0:
            return _join(f"down_blocks.{level}.resnets.{j}", _resblock_rest(rest))
        return _join(f"down_blocks.{level}.attentions.{j}", rest)
    if parts[0] == "middle_block" and len(parts) >= 2:
        layer, rest = int(parts[1]), parts[2:]
        if layer == 1:
            return _join("mid_block.attentions.0", rest)
        return _join(f"mid_block.resnets.{layer // 2}", _resblock_rest(rest))
    if parts[0] == "output_blocks" and len(parts) >= 3:
        up_level, j = divmod(int(parts[1]), per_level)
        layer, rest = int(parts[2]), parts[3:]
        if layer == 0:
            return _join(f"up_blocks.{up_level}.resnets.{j}", _resblock_rest(rest))
        if rest[:1] == ["conv"]:  # the Upsample (index 1 without attention, 2 with)
            return _join(f"up_blocks.{up_level}.upsamplers.0.conv", rest[1:])
        return _join(f"up_blocks.{up_level}.attentions.{j}", rest)
    raise ValueError(f"{name!r} is not an ldm UNet module or tensor name")


# ---------------------------------------------------------------------------------------------
# The UNet


class UNet(nn.Module):
    """ldm UNetModel for SD1.5 and SDXL (Rombach et al. 2022; Podell et al. 2023)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        # Off by default; `set_gradient_checkpointing(True)` trades compute for activation memory.
        self.gradient_checkpointing = False
        mc, ted = config.model_channels, config.time_embed_dim

        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if config.adm_in_channels is not None:
            # Two Sequential levels, as sgm: the keys are label_emb.0.0 / label_emb.0.2.
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(config.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
            )

        def transformer(ch: int, depth: int) -> SpatialTransformer:
            heads, dim_head = config.heads_at(ch)
            return SpatialTransformer(
                ch, heads, dim_head, depth, config.context_dim, config.use_linear_in_transformer
            )

        # Down: conv_in, then per level ResBlock [+ attention] x num_res_blocks, then a Downsample.
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(nn.Conv2d(config.in_channels, mc, 3, padding=1))]
        )
        skip_channels = [mc]  # the width of every input block's output, used by the skips
        ch = mc
        last = len(config.channel_mult) - 1
        for level, (mult, depth) in enumerate(zip(config.channel_mult, config.transformer_depth)):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, ted, mc * mult)]
                ch = mc * mult
                if depth:
                    layers.append(transformer(ch, depth))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)

        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, ted, ch), transformer(ch, config.transformer_depth_middle), ResBlock(ch, ted, ch)
        )

        # Up: per level (reversed) num_res_blocks + 1 ResBlocks fed with the skips [+ attention],
        # the last one of each level but level 0 followed by an Upsample.
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(config.channel_mult))):
            mult, depth = config.channel_mult[level], config.transformer_depth[level]
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), ted, mc * mult)]
                ch = mc * mult
                if depth:
                    layers.append(transformer(ch, depth))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(_group_norm(ch), nn.SiLU(), nn.Conv2d(mc, config.out_channels, 3, padding=1))

        # Checkpointing a block trades its stored activations for one more forward of it. Two kinds
        # are not worth it: a lone conv (conv_in, a Downsample) stores only its input, which the
        # skip list keeps anyway; and an attention-free block at the deepest level (SD1.5's 4x4 at
        # 256 px), whose activations are 1/64 of level 0's per channel but whose 1280-wide convs
        # are as costly to recompute as any other level's. (SD1.5 256 px batch 1: 4 MB more
        # activations, 0.45 s less recompute per step on the dev CPU.)
        deepest = {len(self.input_blocks) - config.num_res_blocks + i for i in range(config.num_res_blocks)}
        deepest_out = set(range(config.num_res_blocks + 1))
        for i, block in enumerate(self.input_blocks):
            lone_conv = len(block) == 1 and not isinstance(block[0], (ResBlock, SpatialTransformer))
            block.checkpointed = not (lone_conv or (i in deepest and not config.transformer_depth[last]))
        for i, block in enumerate(self.output_blocks):
            block.checkpointed = not (i in deepest_out and not config.transformer_depth[last])

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them."""
        self.gradient_checkpointing = enabled

    def _run(self, block: TimestepEmbedSequential, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor):
        if self.gradient_checkpointing and block.checkpointed and torch.is_grad_enabled():
            # Non-reentrant: parameters that are not block inputs (LoRA weights) still get grads.
            return checkpoint(block, h, emb, context, use_reentrant=False)
        return block(h, emb, context)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict noise (or v) for latents x (B, 4, H, W) at timesteps (B,) given text tokens
        context (B, T, context_dim) and, for SDXL, the vector y (B, adm_in_channels)."""
        if (y is not None) != (self.config.adm_in_channels is not None):
            raise ValueError(
                f"y is {'given' if y is not None else 'missing'} but adm_in_channels is "
                f"{self.config.adm_in_channels} (SDXL needs y, SD1.5 takes none)"
            )
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])

        # 1. time (and SDXL's vector) -> emb (B, 4*model_channels)
        t_emb = timestep_embedding(timesteps, self.config.model_channels).to(x.dtype)
        emb = self.time_embed(t_emb)
        if y is not None:
            emb = emb + self.label_emb(y)

        # 2. down: keep every block's output for the skips
        h = x
        skips = []
        for block in self.input_blocks:
            h = self._run(block, h, emb, context)  # (B, C_level, H/2^level, W/2^level)
            skips.append(h)

        # 3. middle, at the lowest resolution
        h = self._run(self.middle_block, h, emb, context)

        # 4. up: concatenate the matching skip on the channel axis
        for block in self.output_blocks:
            h = torch.cat([h, skips.pop()], dim=1)
            h = self._run(block, h, emb, context)

        # 5. out -> (B, out_channels, H, W)
        return self.out(h)
