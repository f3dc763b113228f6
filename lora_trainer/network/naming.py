"""kohya LoRA key names for our UNet and text encoders.

kohya picks its targets by *class name* (reference/kohya-format.md 1.1-1.3):
- always: every Linear / Conv2d inside a Transformer2DModel (our `SpatialTransformer`) and inside
  the text encoders' CLIPAttention / CLIPMLP (our `ClipAttention` / `ClipMLP`);
- with LoCon (conv_dim set): also inside ResnetBlock2D, Downsample2D, Upsample2D (our `ResBlock`,
  `Downsample`, `Upsample`); 3x3 convs at conv_dim, Linears and 1x1 convs at dim.

A key is `prefix + "_" + module path` with every "." turned into "_". The path is the diffusers
one for SD1.5 (kohya's SD1 UNet keeps diffusers 0.10 names) and the ldm/SGM one for SDXL; our UNet
has ldm names, so for SD1.5 we translate with models.unet's `ldm_to_diffusers_name` (the inverse
of A1111's `convert_diffusers_name_to_compvis`, reference/webui-host.md 4.4). Loading accepts both styles
for both architectures, so every module carries its other-style name as an alias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from ..models.unet import ldm_to_diffusers_name
from .modules import is_conv3x3, is_target_layer

Arch = Literal["sd15", "sdxl"]
ARCHS: tuple[str, ...] = ("sd15", "sdxl")

PREFIX_UNET = "lora_unet"

# Class names, ours first, then kohya's / diffusers' / transformers' for the same blocks, so the
# walk also works on reference models in tests.
TRANSFORMER_CLASSES = ("SpatialTransformer", "Transformer2DModel")
RESNET_CLASSES = ("ResBlock", "ResnetBlock2D")
DOWNSAMPLE_CLASSES = ("Downsample", "Downsample2D")
UPSAMPLE_CLASSES = ("Upsample", "Upsample2D")
# CLIPSdpaAttention / CLIPFlashAttention2 are what some transformers versions instantiate; a
# trainer that only matched CLIPAttention would silently skip every attention projection.
TEXT_ENCODER_CLASSES = ("ClipAttention", "ClipMLP", "CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")

def text_encoder_prefixes(arch: str) -> tuple[str, ...]:
    """kohya's prefixes: one text encoder is `lora_te`, SDXL's two are `lora_te1` (CLIP-L), `lora_te2` (bigG)."""
    if arch == "sd15":
        return ("lora_te",)
    if arch == "sdxl":
        return ("lora_te1", "lora_te2")
    raise ValueError(f"unknown architecture {arch!r}: use one of {ARCHS}")


def part_of_prefix(prefix: str) -> str:
    """`lora_unet` -> "unet", `lora_te1` -> "te1": the short name used in counts and reports."""
    return prefix[len("lora_"):]


def to_key(prefix: str, path: str) -> str:
    """kohya's rule: `prefix.path` with every "." replaced by "_"."""
    return f"{prefix}.{path}".replace(".", "_")


def ldm_to_diffusers(path: str, unet: nn.Module) -> str | None:
    """`input_blocks.1.1.transformer_blocks.0.attn1.to_q` -> `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`
    (models.unet's table, the inverse of A1111's `convert_diffusers_name_to_compvis`); None when
    the path has no diffusers counterpart."""
    try:
        return ldm_to_diffusers_name(path, unet.config)
    except (ValueError, IndexError, AttributeError):
        return None


@dataclass(eq=False)
class Target:
    """One Linear / Conv2d a LoRA module can sit on."""

    key: str  # canonical kohya key, e.g. lora_unet_down_blocks_0_attentions_0_proj_in
    part: str  # "unet", "te", "te1", "te2"
    path: str  # the module's path in its model (ldm names in the UNet, HF names in text encoders)
    module: nn.Module = field(repr=False)
    conv3x3: bool  # trained at conv_dim (kohya), not dim
    group: Literal["lora", "locon", "other"]  # kohya's default targets / its LoCon extras / neither
    aliases: tuple[str, ...] = ()  # other-style keys that name the same module in files


def find_targets(arch: str, unet: nn.Module | None, text_encoders: Sequence[tuple[str, nn.Module]]) -> list[Target]:
    """Every Linear / Conv2d of the UNet and text encoders, named and grouped as kohya would.

    `text_encoders` are (kohya prefix, module) pairs. The UNet's canonical names are diffusers
    style for SD1.5 and ldm style for SDXL; the other style is an alias.
    """
    targets: list[Target] = []
    if unet is not None:
        targets += _unet_targets(arch, unet)
    for prefix, te in text_encoders:
        targets += _walk(te, prefix, part_of_prefix(prefix), {"lora": TEXT_ENCODER_CLASSES})
    keys = [t.key for t in targets]
    dupes = sorted({k for k in keys if keys.count(k) > 1}) if len(set(keys)) != len(keys) else []
    if dupes:  # kohya asserts the same; two modules under one key would silently share a delta
        raise ValueError(f"two modules map to the same LoRA key: {dupes[:3]}")
    return targets


def _walk(root: nn.Module, prefix: str, part: str, groups: dict[str, tuple[str, ...]]) -> list[Target]:
    """All target layers under `root`, each in the group of the first enclosing block class that names one."""
    group_of: dict[str, str] = {}
    for path, module in root.named_modules():
        name = module.__class__.__name__
        for group, classes in groups.items():
            if name in classes:
                for child_path, child in module.named_modules(prefix=path):
                    if child is not module and is_target_layer(child):
                        group_of.setdefault(child_path, group)
    out = []
    for path, module in root.named_modules():
        if is_target_layer(module):
            out.append(
                Target(
                    key=to_key(prefix, path),
                    part=part,
                    path=path,
                    module=module,
                    conv3x3=is_conv3x3(module),
                    group=group_of.get(path, "other"),  # type: ignore[arg-type]
                )
            )
    return out


def _unet_targets(arch: str, unet: nn.Module) -> list[Target]:
    groups = {"lora": TRANSFORMER_CLASSES, "locon": RESNET_CLASSES + DOWNSAMPLE_CLASSES + UPSAMPLE_CLASSES}
    targets = _walk(unet, PREFIX_UNET, "unet", groups)
    for t in targets:
        ldm_key = to_key(PREFIX_UNET, t.path)
        diffusers = ldm_to_diffusers(t.path, unet)
        diffusers_key = to_key(PREFIX_UNET, diffusers) if diffusers else None
        if arch == "sd15" and diffusers_key:
            t.key, t.aliases = diffusers_key, (ldm_key,)
        else:
            t.key, t.aliases = ldm_key, (diffusers_key,) if diffusers_key else ()
    return targets


def select_targets(targets: Sequence[Target], locon: bool, unet: bool = True, text_encoders: bool = True) -> list[Target]:
    """kohya's choice for a new network: transformer + text-encoder layers, plus with LoCon the
    ResBlock / sampler layers (3x3 convs at conv_dim, the rest at dim)."""
    chosen = []
    for t in targets:
        if (t.part == "unet" and not unet) or (t.part != "unet" and not text_encoders):
            continue
        if t.group == "other" or ((t.group == "locon" or t.conv3x3) and not locon):
            continue
        chosen.append(t)
    return chosen
