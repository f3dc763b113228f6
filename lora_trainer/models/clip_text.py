"""CLIP text encoders of SD1.5 / SDXL: OpenAI CLIP ViT-L/14 and OpenCLIP ViT-bigG/14.

Both towers use the module names of transformers 4.x `CLIPTextModel(WithProjection)`
(`text_model.encoder.layers.N.self_attn.q_proj`, ...), because kohya LoRA keys are derived
from those names (`lora_te_text_model_encoder_layers_0_self_attn_q_proj`) and A1111 only
loads keys built that way. CLIP-L tensors in a checkpoint already carry these names;
bigG tensors are stored in open_clip's layout and are mapped by `open_clip_to_hf`,
which splits the fused attention projection into q/k/v *views* so no tensor is copied.

Construct on the meta device (`with torch.device("meta"): ClipTextModel(cfg)`) and load
with `model.load_state_dict(tensors, assign=True)` to wrap borrowed tensors without copies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lora_trainer.errors import StudioError

# Where each tower lives in a single-file checkpoint.
SD15_CLIP_L_PREFIX = "cond_stage_model.transformer."
SDXL_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_BIGG_PREFIX = "conditioner.embedders.1.model."


@dataclass(frozen=True)
class ClipTextConfig:
    vocab_size: int = 49408  # 48894 BPE merges + 256 bytes x2 + BOS/EOS: the CLIP BPE vocabulary
    max_positions: int = 77  # CLIP was trained with a 77-token context; positions beyond do not exist
    width: int = 768  # hidden size
    layers: int = 12
    heads: int = 12
    mlp_width: int = 3072  # 4 x width in every CLIP text tower
    hidden_act: Literal["quick_gelu", "gelu"] = "quick_gelu"  # OpenAI trained with x*sigmoid(1.702x)
    layer_norm_eps: float = 1e-5  # torch's default, used by both OpenAI and open_clip
    projection_dim: int | None = None  # SD1.5/SDXL use no projection for CLIP-L; bigG projects to 1280

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.hidden_act not in ("quick_gelu", "gelu"):
            raise ValueError(f"hidden_act {self.hidden_act!r}: use 'quick_gelu' or 'gelu'")

    @classmethod
    def clip_l(cls) -> ClipTextConfig:
        """OpenAI CLIP ViT-L/14 text tower (SD1.5 and SDXL's first encoder), 123,060,480 params."""
        return cls()

    @classmethod
    def clip_bigg(cls) -> ClipTextConfig:
        """OpenCLIP ViT-bigG/14 text tower (SDXL's second encoder), 694,659,840 params with projection."""
        # bigG was trained by LAION with exact (erf) GELU, not OpenAI's quick_gelu.
        return cls(width=1280, layers=32, heads=20, mlp_width=5120, hidden_act="gelu", projection_dim=1280)

    @classmethod
    def tiny(cls, projection_dim: int | None = None, hidden_act: str = "quick_gelu") -> ClipTextConfig:
        """A few-thousand-parameter tower for tests; real vocabulary so real token ids work."""
        return cls(width=32, layers=3, heads=4, mlp_width=64, hidden_act=hidden_act, projection_dim=projection_dim)


# ---------------------------------------------------------------------------------------------
# Layers


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """The sigmoid GELU approximation OpenAI CLIP was trained with."""
    return x * torch.sigmoid(1.702 * x)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention over (B, nh, T, hs); SDPA where it exists, else the plain math."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[-2]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
    return att @ v


class ClipAttention(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, C) -> (B, nh, T, hs)
        q = self.q_proj(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)
        y = causal_attention(q, k, v)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.out_proj(y)


class ClipMLP(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_width)
        self.fc2 = nn.Linear(cfg.mlp_width, cfg.width)
        self.hidden_act = cfg.hidden_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = quick_gelu(x) if self.hidden_act == "quick_gelu" else F.gelu(x)
        return self.fc2(x)


class ClipEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = ClipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = ClipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        x = x + self.mlp(self.layer_norm2(x))
        return x


def _embedding(rows: int, width: int) -> nn.Embedding:
    """nn.Embedding with its usual N(0, 1) initialisation, except on the meta device (a checkpoint
    being loaded), where there is nothing to initialise: `init.normal_` on a meta tensor runs
    through torch's reference ops, whose first use imports them (about 2 s of every model load)."""
    weight = torch.empty(rows, width)
    if not weight.is_meta:
        nn.init.normal_(weight)
    return nn.Embedding(rows, width, _weight=weight)


class ClipEmbeddings(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.token_embedding = _embedding(cfg.vocab_size, cfg.width)
        # No position_ids buffer: some SD1.5 files store a (sometimes float, corrupted) copy of it,
        # and positions are just 0..T-1. Loaders drop that key (see clip_l_from_checkpoint).
        self.position_embedding = _embedding(cfg.max_positions, cfg.width)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.shape[1]
        return self.token_embedding(input_ids) + self.position_embedding.weight[:T]


class ClipEncoder(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.layers = nn.ModuleList([ClipEncoderLayer(cfg) for _ in range(cfg.layers)])


class ClipTextTransformer(nn.Module):
    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.embeddings = ClipEmbeddings(cfg)
        self.encoder = ClipEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)


@dataclass
class ClipTextOutput:
    """What a text tower returns; every conditioning recipe is a pick from these."""

    hidden_states: tuple[torch.Tensor, ...]  # layers+1 of (B, T, C): embeddings, then each layer's output (no final LN)
    last_hidden_state: torch.Tensor  # (B, T, C) = final_layer_norm(hidden_states[-1])
    pooled: torch.Tensor  # (B, C) last_hidden_state at the EOS token (argmax of the ids)
    projected: torch.Tensor | None  # (B, P) pooled @ projection, only for towers with one (bigG)


class ClipTextModel(nn.Module):
    """A CLIP text tower with transformers 4.x names: `text_model.*` plus `text_projection` if projected."""

    def __init__(self, cfg: ClipTextConfig):
        super().__init__()
        self.config = cfg
        self.text_model = ClipTextTransformer(cfg)
        # HF's CLIPTextModelWithProjection keeps it as a bias-free Linear: weight (P, C), the transpose of open_clip's.
        self.text_projection = nn.Linear(cfg.width, cfg.projection_dim, bias=False) if cfg.projection_dim else None
        self.gradient_checkpointing = False

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each layer in backward (saves activations; only active in train mode with grad enabled)."""
        self.gradient_checkpointing = enabled

    @property
    def device(self) -> torch.device:
        return self.text_model.embeddings.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.text_model.embeddings.token_embedding.weight.dtype

    def forward(self, input_ids: torch.Tensor) -> ClipTextOutput:
        """input_ids (B, T<=77) long -> ClipTextOutput. Causal attention, no padding mask (as SD does)."""
        B, T = input_ids.shape
        if T > self.config.max_positions:
            raise ValueError(f"{T} tokens given, the text encoder has {self.config.max_positions} positions")
        tm = self.text_model
        # 1. embeddings
        x = tm.embeddings(input_ids)  # (B, T, C)
        hidden_states = [x]
        # 2. transformer layers, each output kept for clip skip / penultimate-layer conditioning
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in tm.encoder.layers:
            x = checkpoint(layer, x, use_reentrant=False) if use_ckpt else layer(x)
            hidden_states.append(x)
        # 3. final norm and pooling at the EOS token: it is the largest id (49407), so argmax finds the
        #    first EOS whether the padding is EOS (CLIP-L) or 0 (bigG), as HF, open_clip and sgm do.
        last = tm.final_layer_norm(x)
        eos = input_ids.argmax(dim=-1)
        pooled = last[torch.arange(B, device=last.device), eos]  # (B, C)
        # 4. projection (bigG)
        projected = self.text_projection(pooled) if self.text_projection is not None else None
        return ClipTextOutput(tuple(hidden_states), last, pooled, projected)


# ---------------------------------------------------------------------------------------------
# Loading from checkpoint tensors


def _check_keys(got: set[str], want: set[str], where: str) -> None:
    missing, extra = sorted(want - got), sorted(got - want)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (first: {extra[0]})")
        raise StudioError(
            f"The text encoder tensors under {where!r} do not match the expected model: " + ", ".join(parts) + ".",
            fix="Use a complete SD1.5 or SDXL checkpoint (not a pruned UNet-only or LoRA file).",
        )


def hf_keys(cfg: ClipTextConfig) -> list[str]:
    """The state-dict keys of ClipTextModel(cfg), computed on the meta device."""
    with torch.device("meta"):
        return list(ClipTextModel(cfg).state_dict().keys())


def clip_l_from_checkpoint(
    tensors: Mapping[str, torch.Tensor], prefix: str = SD15_CLIP_L_PREFIX, cfg: ClipTextConfig | None = None
) -> dict[str, torch.Tensor]:
    """Tensors under `prefix` with the prefix removed, ready for ClipTextModel.load_state_dict(assign=True).

    CLIP-L is stored with HF names already; only `text_model.embeddings.position_ids` (a buffer some
    SD1.5 files carry, occasionally as a corrupted float) is dropped because positions are 0..T-1.
    """
    cfg = cfg or ClipTextConfig.clip_l()
    out = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    out.pop("text_model.embeddings.position_ids", None)
    _check_keys(set(out), set(hf_keys(cfg)), prefix)
    return out


# open_clip resblock suffix -> HF layer suffix, for the tensors that keep their shape
_RESBLOCK_RENAMES = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TOP_RENAMES = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
# Present in open_clip / SDXL files but not part of a text tower: CLIP's contrastive temperature.
_OPEN_CLIP_IGNORED = {"logit_scale"}


def open_clip_keys(cfg: ClipTextConfig) -> list[str]:
    """The open_clip text-tower keys (as SDXL stores them under `conditioner.embedders.1.model.`)."""
    keys = list(_TOP_RENAMES)
    for i in range(cfg.layers):
        p = f"transformer.resblocks.{i}."
        keys += [p + "attn.in_proj_weight", p + "attn.in_proj_bias"] + [p + s for s in _RESBLOCK_RENAMES]
    if cfg.projection_dim:
        keys.append("text_projection")
    return keys


def open_clip_to_hf(
    tensors: Mapping[str, torch.Tensor], cfg: ClipTextConfig | None = None, prefix: str = SDXL_BIGG_PREFIX
) -> dict[str, torch.Tensor]:
    """Map open_clip text-tower tensors under `prefix` to ClipTextModel keys, copying nothing.

    - `attn.in_proj_weight` (3C, C) / `in_proj_bias` (3C) are nn.MultiheadAttention's fused q,k,v
      rows in that order; q/k/v_proj get row slices of them (contiguous views of the same storage).
    - `text_projection` is (C, P) and open_clip computes `pooled @ text_projection`; an nn.Linear
      computes `pooled @ weight.T`, so weight = text_projection.T (a transposed view).
    - `logit_scale` is ignored; any other key under the prefix is an error.
    Keys outside `prefix` are ignored, so a whole checkpoint can be passed.
    """
    cfg = cfg or ClipTextConfig.clip_bigg()
    src = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    for k in _OPEN_CLIP_IGNORED:
        src.pop(k, None)
    _check_keys(set(src), set(open_clip_keys(cfg)), prefix)
    C = cfg.width
    out: dict[str, torch.Tensor] = {new: src[old] for old, new in _TOP_RENAMES.items()}
    for i in range(cfg.layers):
        p, q = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        w, b = src[p + "attn.in_proj_weight"], src[p + "attn.in_proj_bias"]
        if tuple(w.shape) != (3 * C, C) or tuple(b.shape) != (3 * C,):
            raise StudioError(
                f"{prefix}{p}attn.in_proj_weight has shape {tuple(w.shape)}, expected {(3 * C, C)}.",
                fix="This checkpoint's second text encoder is not OpenCLIP ViT-bigG/14; use an SDXL checkpoint.",
            )
        for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{q}self_attn.{name}.weight"] = w[j * C:(j + 1) * C]
            out[f"{q}self_attn.{name}.bias"] = b[j * C:(j + 1) * C]
        for old, new in _RESBLOCK_RENAMES.items():
            out[q + new] = src[p + old]
    if cfg.projection_dim:
        out["text_projection.weight"] = src["text_projection"].t()
    return out


def hf_to_open_clip(
    tensors: Mapping[str, torch.Tensor], cfg: ClipTextConfig | None = None, prefix: str = SDXL_BIGG_PREFIX
) -> dict[str, torch.Tensor]:
    """The inverse of open_clip_to_hf: ClipTextModel keys -> open_clip keys under `prefix`.

    q/k/v are concatenated (a copy) and the projection is made contiguous, so the result can be
    saved with safetensors.
    """
    cfg = cfg or ClipTextConfig.clip_bigg()
    src = dict(tensors)
    _check_keys(set(src), set(hf_keys(cfg)), "(text encoder state dict)")
    out: dict[str, torch.Tensor] = {prefix + old: src[new] for old, new in _TOP_RENAMES.items()}
    for i in range(cfg.layers):
        p, q = f"{prefix}transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for kind, suffix in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            parts = [src[f"{q}self_attn.{n}.{kind}"] for n in ("q_proj", "k_proj", "v_proj")]
            out[p + "attn." + suffix] = torch.cat(parts, dim=0)
        for old, new in _RESBLOCK_RENAMES.items():
            out[p + old] = src[q + new]
    if cfg.projection_dim:
        out[prefix + "text_projection"] = src["text_projection.weight"].t().contiguous()
    return out
