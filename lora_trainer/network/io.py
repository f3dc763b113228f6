"""Saving and loading LoRA files in kohya's `networks.lora` safetensors format.

Save: the network's state dict (`<key>.lora_down.weight`, `<key>.lora_up.weight`, scalar
`<key>.alpha`), every tensor cast to the save precision (alpha too, as kohya does), written
through the safetensors library (data ordered by dtype then name, like every kohya file), with the
`ss_*` / `modelspec.*` header and kohya's two `sshs_*` hashes, atomically.

Load: our files and those of kohya, LyCORIS (LoCon) and other trainers in the same format. Keys
may use diffusers- or ldm-style UNet names for either architecture; a missing alpha means
alpha = dim; PEFT-style `lora_A` / `lora_B` are read as down / up (as A1111 does). Tensors that do
not belong to a LoRA module we can apply (LoHa, LoKr, DoRA scales, Tucker `lora_mid`, layers our
model lacks) are listed in `unknown_keys`, never dropped silently.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import StudioError
from ..fileio import atomic_path
from ..progress import ProgressEvent, ProgressFn, no_progress
from .metadata import LoraMetadata, build_header, safetensors_hashes
from .modules import LoRAModule
from .naming import PREFIX_UNET, Target, find_targets, part_of_prefix
from .network import BundleLike, LoRANetwork, merged

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ARCH_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "sd2": "SD2"}

# Tensor suffixes of a LoRA module, and the PEFT spellings A1111 also accepts.
_DOWN = ("lora_down.weight", "lora_A.weight")
_UP = ("lora_up.weight", "lora_B.weight")
_ALPHA = ("alpha",)


# ---------------------------------------------------------------------------------------------
# Save


@dataclass(frozen=True)
class SavedLora:
    path: Path
    model_hash: str  # sshs_model_hash: sha256 of the tensor bytes (A1111 "addnet" hash, Civitai AutoV3)
    legacy_hash: str  # sshs_legacy_hash
    header: dict[str, str]


def network_state_dict(network: LoRANetwork, precision: str = "fp16") -> dict[str, torch.Tensor]:
    """The tensors as they go into the file: CPU, contiguous, all in the save dtype (alpha too)."""
    if precision not in PRECISIONS:
        raise StudioError(f"Save precision {precision!r} is not one of {', '.join(PRECISIONS)}.", "Pick fp16, bf16 or fp32.")
    dtype = PRECISIONS[precision]
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in network.state_dict().items()}


def save_network(
    network: LoRANetwork,
    path: str | os.PathLike,
    metadata: LoraMetadata | None = None,
    precision: str = "fp16",
) -> SavedLora:
    """Write `network` to `path` as a kohya LoRA file; returns its hashes and header.

    Fields of `metadata` left None (network_dim, network_alpha, network_args, network_dropout) are
    filled from the network's config. `ss_output_name` and the title default to the file stem.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = network_state_dict(network, precision)
    if not tensors:
        raise StudioError(f"The network for {path.name} has no modules, so there is nothing to save.")
    meta = metadata or LoraMetadata(arch=network.arch)
    if meta.arch != network.arch:
        raise ValueError(f"metadata says {meta.arch} but the network is {network.arch}")
    _fill_network_fields(meta, network)
    header = build_header(meta, output_name=path.stem, now=time.time())
    model_hash, legacy_hash = safetensors_hashes(tensors, header)
    header["sshs_model_hash"] = model_hash
    header["sshs_legacy_hash"] = legacy_hash
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return SavedLora(path, model_hash, legacy_hash, header)


def _fill_network_fields(meta: LoraMetadata, network: LoRANetwork) -> None:
    cfg = network.config
    if cfg is None:  # built from a file: read dims off the modules
        plain = [m for _, m in network.loras() if not (m.is_conv and m.lora_down.kernel_size != (1, 1))]
        if meta.network_dim is None and plain:
            meta.network_dim = plain[0].dim
        if meta.network_alpha is None and plain:
            meta.network_alpha = float(plain[0].alpha)
        return
    if meta.network_dim is None:
        meta.network_dim = cfg.dim
    if meta.network_alpha is None:
        meta.network_alpha = float(cfg.alpha)
    if meta.network_dropout is None:
        meta.network_dropout = cfg.dropout
    if meta.network_args is None:
        meta.network_args = cfg.network_args()


# ---------------------------------------------------------------------------------------------
# Read


@dataclass
class ModuleWeights:
    """One LoRA module as stored in a file."""

    key: str
    down: torch.Tensor  # (r, in) or (r, in, kh, kw)
    up: torch.Tensor  # (out, r) or (out, r, 1, 1)
    alpha: float | None  # None = not stored: alpha = rank (kohya, A1111, ComfyUI)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def is_conv3x3(self) -> bool:
        return self.down.dim() == 4 and tuple(self.down.shape[2:]) != (1, 1)


@dataclass
class LoraFile:
    """A LoRA file read into memory."""

    path: Path
    metadata: dict[str, str]
    modules: dict[str, ModuleWeights]  # by the key in the file
    unknown_keys: list[str]  # tensor names that are not part of a complete LoRA module
    dtypes: list[str]  # the distinct tensor dtypes, e.g. ["float16"]
    arch: str | None  # "sd15" | "sdxl" | "sd2", None when nothing tells

    @property
    def is_locon(self) -> bool:
        return any(m.is_conv3x3 for m in self.modules.values())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in self.modules:
            part = key_part(key)
            out[part] = out.get(part, 0) + 1
        return out


def key_part(key: str) -> str:
    """`lora_unet_...` -> "unet", `lora_te1_...` -> "te1", anything else -> "other"."""
    for prefix in (PREFIX_UNET, "lora_te1", "lora_te2", "lora_te"):
        if key.startswith(prefix + "_"):
            return part_of_prefix(prefix)
    return "other"


def _split_tensor_name(name: str) -> tuple[str, str]:
    """`lora_unet_x.lora_down.weight` -> ("lora_unet_x", "lora_down.weight"): split at the first dot."""
    key, _, suffix = name.partition(".")
    return key, suffix


def _open_error(path: Path, err: Exception) -> StudioError:
    return StudioError(
        f"{path.name} is not a readable safetensors file ({err}).",
        "The file may be incomplete or corrupt: download or train it again.",
    )


def read_lora_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoraFile:
    """Read every tensor and the header of a LoRA file; StudioError naming the file if it is broken."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise StudioError(f"LoRA file {path} does not exist.", "Check the path.")
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            for name in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                tensors[name] = f.get_tensor(name)
    except (SafetensorError, OSError, ValueError) as err:  # bad header, truncated data, unreadable
        raise _open_error(path, err) from err
    modules, unknown = group_modules(tensors)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    arch = detect_arch(modules, metadata)
    return LoraFile(path, metadata, modules, unknown, dtypes, arch)


def group_modules(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, ModuleWeights], list[str]]:
    """Tensors -> LoRA modules by key; names that do not complete a down/up pair are unknown."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        key, suffix = _split_tensor_name(name)
        parts.setdefault(key, {})[suffix] = tensor
    modules: dict[str, ModuleWeights] = {}
    unknown: list[str] = []
    for key, found in parts.items():
        down = next((found[s] for s in _DOWN if s in found), None)
        up = next((found[s] for s in _UP if s in found), None)
        alpha = next((found[s] for s in _ALPHA if s in found), None)
        known = set(_DOWN + _UP + _ALPHA)
        if down is None or up is None or any(s not in known for s in found):
            # A LoHa / LoKr / Tucker / DoRA module, or half a LoRA: we can not apply it faithfully.
            unknown += [f"{key}.{s}" for s in sorted(found)]
            continue
        modules[key] = ModuleWeights(key, down, up, None if alpha is None else float(alpha.float().item()))
    return modules, sorted(unknown)


def detect_arch(modules: dict[str, ModuleWeights], metadata: dict[str, str]) -> str | None:
    """Which base model a LoRA was trained on, from the tensors first (they can not lie), then the
    key prefixes, then the header.

    Cross-attention keys read the text width: 768 = SD1.x (CLIP-L), 1024 = SD2 (OpenCLIP-H),
    2048 = SDXL (CLIP-L + bigG). Text-encoder-only files: two encoders = SDXL; one encoder of width
    768 = SD1.x, 1024 = SD2.
    """
    for key, m in modules.items():
        if key.startswith(PREFIX_UNET) and (key.endswith(("attn2_to_k", "attn2_to_v"))):
            arch = {768: "sd15", 1024: "sd2", 2048: "sdxl"}.get(int(m.down.shape[1]))
            if arch is not None:
                return arch
            break  # an unusual width (a test model): let the other evidence decide
    parts = {key_part(k) for k in modules}
    if parts & {"te1", "te2"}:
        return "sdxl"
    if "te" in parts:
        widths = {int(m.down.shape[1]) for k, m in modules.items() if k.endswith("self_attn_q_proj")}
        if widths == {768}:
            return "sd15"
        if widths == {1024}:
            return "sd2"
    version = metadata.get("ss_base_model_version", "")
    if version.startswith("sdxl_"):
        return "sdxl"
    if metadata.get("ss_v2") == "True" or version.startswith("sd_v2"):
        return "sd2"
    if version.startswith("sd_v1"):
        return "sd15"
    arch = metadata.get("modelspec.architecture", "")
    if arch.startswith("stable-diffusion-xl"):
        return "sdxl"
    if arch.startswith("stable-diffusion-v1"):
        return "sd15"
    return None


# ---------------------------------------------------------------------------------------------
# Load onto a model


@dataclass
class LoadReport:
    """What happened to each module of a file loaded onto a model."""

    path: Path
    loaded: int  # modules placed on a layer
    unknown_keys: list[str] = field(default_factory=list)  # file tensors that went nowhere
    missing_keys: list[str] = field(default_factory=list)  # network modules the file had no weights for

    def warning(self) -> str:
        """One line for the job log, or "" when everything landed."""
        if not self.unknown_keys and not self.missing_keys:
            return ""
        bits = []
        if self.unknown_keys:
            bits.append(f"{len(self.unknown_keys)} tensors not applied (e.g. {self.unknown_keys[0]})")
        if self.missing_keys:
            bits.append(f"{len(self.missing_keys)} network modules not in the file (e.g. {self.missing_keys[0]})")
        return f"{self.path.name}: " + "; ".join(bits)


def check_arch(lora: LoraFile, model_arch: str) -> None:
    """Refuse a LoRA made for another architecture, in a sentence."""
    if lora.arch is not None and lora.arch != model_arch:
        theirs, ours = ARCH_NAMES.get(lora.arch, lora.arch), ARCH_NAMES.get(model_arch, model_arch)
        raise StudioError(
            f"{lora.path.name} is an {theirs} LoRA, but the model is {ours}; "
            f"an {theirs} LoRA can not be applied to an {ours} model.",
            f"Pick an {ours} LoRA, or load an {theirs} checkpoint.",
        )


def _alias_index(targets: Sequence[Target]) -> dict[str, Target]:
    index: dict[str, Target] = {}
    for t in targets:
        index[t.key] = t
        for alias in t.aliases:
            index.setdefault(alias, t)
    return index


def _check_shapes(lora: LoraFile, m: ModuleWeights, lora_module: LoRAModule) -> None:
    """The file's module must fit the layer: same widths and rank, same kernel on a conv
    (a 2-D down / up on a 1x1 conv is the same tensor and is accepted, as A1111 does)."""
    down, up = lora_module.lora_down.weight, lora_module.lora_up.weight
    fits = (
        m.down.shape[0] == down.shape[0]
        and m.down.shape[1] == down.shape[1]
        and m.down.numel() == down.numel()
        and m.up.shape[:2] == up.shape[:2]
        and m.up.numel() == up.numel()
    )
    if not fits:
        raise StudioError(
            f"{lora.path.name}: module {m.key} has down {tuple(m.down.shape)} / up {tuple(m.up.shape)}; "
            f"the model's layer needs down {tuple(down.shape)} / up {tuple(up.shape)}.",
            "The LoRA was made for a different model of this architecture; pick a LoRA made for this one.",
        )


def _copy_into(lora_module: LoRAModule, m: ModuleWeights) -> None:
    with torch.no_grad():
        down, up = lora_module.lora_down.weight, lora_module.lora_up.weight
        down.copy_(m.down.reshape(down.shape).to(down.dtype))
        up.copy_(m.up.reshape(up.shape).to(up.dtype))
        lora_module.alpha.fill_(float(m.rank) if not m.alpha else m.alpha)


def _as_file(lora: LoraFile | str | os.PathLike) -> LoraFile:
    return lora if isinstance(lora, LoraFile) else read_lora_file(lora)


def network_from_file(
    bundle: BundleLike,
    lora: LoraFile | str | os.PathLike,
    multiplier: float = 1.0,
    progress: ProgressFn = no_progress,
) -> tuple[LoRANetwork, LoadReport]:
    """A network shaped by the file (ranks and alphas from its tensors), on the bundle's layers.

    For generation and for continuing training from any kohya-format LoRA. Refuses another
    architecture; lists tensors that land nowhere in the report and as a progress log line.
    """
    lora = _as_file(lora)
    check_arch(lora, bundle.arch)
    index = _alias_index(find_targets(bundle.arch, bundle.unet, list(bundle.text_encoders)))
    network = LoRANetwork(bundle.arch)
    unknown = list(lora.unknown_keys)
    for key, m in lora.modules.items():
        target = index.get(key)
        if target is None:
            unknown += [f"{key}.lora_down.weight", f"{key}.lora_up.weight"] + ([f"{key}.alpha"] if m.alpha is not None else [])
            continue
        if target.key in network._targets:  # the same layer under both naming styles: keep the first
            unknown += [f"{key}.lora_down.weight", f"{key}.lora_up.weight"]
            continue
        lora_module = LoRAModule(target.module, m.rank, m.alpha)
        _check_shapes(lora, m, lora_module)
        _copy_into(lora_module, m)
        lora_module.multiplier = multiplier
        network.add(target, lora_module)
    report = LoadReport(lora.path, loaded=len(network._targets), unknown_keys=sorted(unknown))
    if report.warning():
        progress(ProgressEvent(log=report.warning()))
    return network, report


def load_weights(
    network: LoRANetwork,
    lora: LoraFile | str | os.PathLike,
    progress: ProgressFn = no_progress,
) -> LoadReport:
    """Copy a file's weights into an existing network (continue training with the same settings).

    Modules are matched by key, either naming style; every rank and shape must match the
    network (StudioError naming the first one that does not), and at least one must match. Network
    modules the file lacks keep their current weights and are listed in `missing_keys`.
    """
    lora = _as_file(lora)
    check_arch(lora, network.arch)
    by_alias: dict[str, str] = {}
    for key, _ in network.loras():
        t = network.target(key)
        by_alias[key] = key
        for alias in t.aliases:
            by_alias.setdefault(alias, key)
    unknown = list(lora.unknown_keys)
    seen: set[str] = set()
    modules = dict(network.loras())
    for file_key, m in lora.modules.items():
        key = by_alias.get(file_key)
        if key is None or key in seen:
            unknown += [f"{file_key}.lora_down.weight", f"{file_key}.lora_up.weight"]
            continue
        lora_module = modules[key]
        if m.rank != lora_module.dim:
            raise StudioError(
                f"{lora.path.name}: module {file_key} has rank {m.rank}; the network has rank {lora_module.dim}.",
                "Continue training with the dim / conv dim the LoRA was trained with.",
            )
        _check_shapes(lora, m, lora_module)
        _copy_into(lora_module, m)
        seen.add(key)
    if not seen:  # training "on" it would silently start from scratch
        raise StudioError(
            f"{lora.path.name}: none of its {len(lora.modules)} modules is a module of this network, so it can not be "
            "trained further.",
            "Use a LoRA made for this model family, with the same LoRA / LoCon type, or leave 'network weights' empty.",
        )
    missing = sorted(k for k in modules if k not in seen)
    report = LoadReport(lora.path, loaded=len(seen), unknown_keys=sorted(unknown), missing_keys=missing)
    if report.warning():
        progress(ProgressEvent(log=report.warning()))
    return report


# ---------------------------------------------------------------------------------------------
# Apply for generation


@dataclass(frozen=True)
class AppliedLora:
    path: Path
    weight: float
    network: LoRANetwork
    report: LoadReport
    model_hash: str | None  # sshs_model_hash from the header, when present (A1111's "Lora hashes")


@contextlib.contextmanager
def apply_loras(
    bundle: BundleLike,
    loras: Sequence[tuple[str | os.PathLike, float]],
    mode: str = "hooks",
    progress: ProgressFn = no_progress,
) -> Iterator[list[AppliedLora]]:
    """Apply LoRA files at strengths while the block runs; everything is restored on exit.

    `loras` are (path, weight) pairs, weight as in `<lora:name:weight>` (UNet and text encoders
    alike). mode "hooks" adds each delta in the layers' forward (no extra memory; change
    `applied[i].network.set_multiplier(w)` between images freely); "merge" swaps merged copies of
    the targeted weights in (faster per step, one extra copy of those weights; the original
    Parameters come back on exit). The borrowed base tensors are never written to in either mode.
    """
    if mode not in ("hooks", "merge"):
        raise ValueError(f"mode {mode!r}: use 'hooks' or 'merge'")
    applied: list[AppliedLora] = []
    for path, weight in loras:
        lora = read_lora_file(path)
        network, report = network_from_file(bundle, lora, multiplier=float(weight), progress=progress)
        applied.append(AppliedLora(lora.path, float(weight), network, report, lora.metadata.get("sshs_model_hash")))
    with contextlib.ExitStack() as stack:
        if mode == "hooks":
            for a in applied:
                stack.enter_context(a.network.attached())
        else:
            stack.enter_context(merged([a.network for a in applied]))
        yield applied

