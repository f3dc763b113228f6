"""What a LoRA file is: architecture, LoRA or LoCon, ranks, module counts, precision, and what its
header says about its training. Used by `python -m lora_trainer lora-info` and the UI."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .io import ARCH_NAMES, read_lora_file
from .metadata import file_model_hash, parse_json_value


@dataclass
class LoraInfo:
    path: str
    arch: str | None  # "sd15" | "sdxl" | "sd2" | None
    type: str  # "LoRA" | "LoCon"
    dim: int | None  # the most common rank of Linear / 1x1 modules
    alpha: float | None  # the most common alpha of those (None stored = dim)
    conv_dim: int | None  # the most common rank of 3x3 modules (LoCon)
    conv_alpha: float | None
    ranks: list[int]  # every distinct rank, so a file with mixed ranks is visible
    counts: dict[str, int]  # modules per part: unet, te / te1 / te2
    precision: str  # "fp16", "bf16", "fp32" or e.g. "fp16+fp32"
    unknown_keys: int  # tensors that are not LoRA modules we can apply
    model_hash: str | None  # sshs_model_hash from the header
    hash_matches: bool | None  # header hash equals the hash of the tensor bytes; None = no header hash
    output_name: str | None
    base_model: str | None  # ss_sd_model_name
    base_model_version: str | None
    resolution: str | None
    epoch: int | None
    steps: int | None
    network_module: str | None
    top_tags: list[tuple[str, int]] = field(default_factory=list)  # from ss_tag_frequency, all folders summed
    images: int | None = None  # sum of img_count in ss_dataset_dirs

    def to_json(self) -> dict:
        return asdict(self)


_PRECISION_NAMES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _most_common(values: list) -> object | None:
    return Counter(values).most_common(1)[0][0] if values else None


def top_tags(tag_frequency: object, n: int = 10) -> list[tuple[str, int]]:
    """The n most frequent tags over every folder of an `ss_tag_frequency` value."""
    total: Counter[str] = Counter()
    if isinstance(tag_frequency, dict):
        for folder in tag_frequency.values():
            if isinstance(folder, dict):
                for tag, count in folder.items():
                    if isinstance(count, (int, float)):
                        total[str(tag)] += int(count)
    return total.most_common(n)


def describe_lora(path: str | os.PathLike, n_tags: int = 10) -> LoraInfo:
    """Read `path` (StudioError if it is not a readable safetensors file) and summarise it."""
    lora = read_lora_file(path)
    md = lora.metadata
    plain = [m for m in lora.modules.values() if not m.is_conv3x3]
    conv = [m for m in lora.modules.values() if m.is_conv3x3]
    header_hash = md.get("sshs_model_hash")
    dirs = parse_json_value(md.get("ss_dataset_dirs"))
    images = None
    if isinstance(dirs, dict):
        images = sum(int(d.get("img_count", 0)) for d in dirs.values() if isinstance(d, dict))
    resolution = md.get("ss_resolution") or md.get("modelspec.resolution")
    return LoraInfo(
        path=str(Path(path)),
        arch=lora.arch,
        type="LoCon" if conv else "LoRA",
        dim=_most_common([m.rank for m in plain]),
        alpha=_most_common([m.alpha if m.alpha else float(m.rank) for m in plain]),
        conv_dim=_most_common([m.rank for m in conv]),
        conv_alpha=_most_common([m.alpha if m.alpha else float(m.rank) for m in conv]),
        ranks=sorted({m.rank for m in lora.modules.values()}),
        counts=dict(sorted(lora.counts().items())),
        precision="+".join(_PRECISION_NAMES.get(d, d) for d in lora.dtypes),
        unknown_keys=len(lora.unknown_keys),
        model_hash=header_hash,
        hash_matches=None if header_hash is None else header_hash == file_model_hash(lora.path),
        output_name=md.get("ss_output_name"),
        base_model=md.get("ss_sd_model_name"),
        base_model_version=md.get("ss_base_model_version"),
        resolution=resolution,
        epoch=_int(md.get("ss_epoch")),
        steps=_int(md.get("ss_steps")),
        network_module=md.get("ss_network_module"),
        top_tags=top_tags(parse_json_value(md.get("ss_tag_frequency")), n_tags),
        images=images,
    )


def format_info(info: LoraInfo) -> str:
    """The human-readable summary printed by `lora-info`."""
    arch = ARCH_NAMES.get(info.arch, "unknown") if info.arch else "unknown"
    lines = [f"{Path(info.path).name}: {arch} {info.type}"]
    rank = f"dim {info.dim}, alpha {info.alpha:g}" if info.dim is not None and info.alpha is not None else "no Linear modules"
    if info.conv_dim is not None and info.conv_alpha is not None:
        rank += f"; conv dim {info.conv_dim}, conv alpha {info.conv_alpha:g}"
    if len(info.ranks) > 2:
        rank += f" (ranks vary: {', '.join(map(str, info.ranks))})"
    lines.append(f"  rank:       {rank}")
    lines.append("  modules:    " + ", ".join(f"{part} {n}" for part, n in info.counts.items()))
    lines.append(f"  precision:  {info.precision}")
    if info.unknown_keys:
        lines.append(f"  not LoRA:   {info.unknown_keys} tensors (LoHa/LoKr/DoRA or unknown layers)")
    if info.model_hash:
        verdict = "matches the tensors" if info.hash_matches else "DOES NOT match the tensors"
        lines.append(f"  hash:       {info.model_hash[:12]} ({verdict})")
    for label, value in (
        ("output name", info.output_name),
        ("base model", info.base_model),
        ("base version", info.base_model_version),
        ("resolution", info.resolution),
        ("epoch", info.epoch),
        ("steps", info.steps),
        ("images", info.images),
        ("module", info.network_module),
    ):
        if value is not None:
            lines.append(f"  {label + ':':<12}{value}")
    if info.top_tags:
        lines.append("  top tags:   " + ", ".join(f"{tag} ({n})" for tag, n in info.top_tags))
    return "\n".join(lines)
