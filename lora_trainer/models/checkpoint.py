"""Reading single-file SD1.5 / SDXL checkpoints and telling what a file is.

- `read_checkpoint(path)` returns the file's tensors without copying them into RAM: a
  `.safetensors` file is memory-mapped (pages are read when a tensor is first touched), a
  `.ckpt` goes through `torch.load(weights_only=True, mmap=True)`. The format is sniffed from the
  first bytes, not the extension, so a renamed file still loads and a text file gets a sentence.
- `detect(tensors, metadata)` names the architecture from keys and shapes, or refuses with a
  sentence that says what the file is (SD2.x, SDXL refiner, inpainting, a LoRA, a VAE, ...).
- `infer_unet_config`, `infer_vae_config`, `infer_clip_config` read the model sizes from tensor
  shapes, so the real models and the tiny demo models load through the same code.

Only renames happen to keys (never copies of tensors); see `normalize_keys`.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import StudioError

if TYPE_CHECKING:
    from .clip_text import ClipTextConfig

ARCHES = ("sd15", "sdxl")
FAMILY_SIZE = {"sd15": 512, "sdxl": 1024}  # the picture side each family was trained at
RESOLUTION_KEY = "modelspec.resolution"  # ModelSpec's "<width>x<height>" header field

# Where each part lives in a single-file checkpoint (ldm / sgm names).
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_TE_PREFIX = "cond_stage_model.transformer."
SD2_TE_PREFIX = "cond_stage_model.model."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."
SDXL_REFINER_TE_PREFIX = "conditioner.embedders.0.model."

# Marker tensors some trainers (e.g. NoobAI-XL v-pred, kohya's --v_parameterization merges) add.
V_PRED_KEY = "v_pred"
ZTSNR_KEY = "ztsnr"


# ---- 1. reading ------------------------------------------------------------------------------


def _sniff(path: Path) -> str:
    """"safetensors", "torch-zip", "torch-pickle", or "other" from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 2 <= n < 100_000_000:
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head[:1] == b"\x80":  # pickle protocol 2+ (torch's legacy format)
        return "torch-pickle"
    return "other"


def _not_a_checkpoint(path: Path, why: str) -> StudioError:
    return StudioError(
        f"{path} is not a readable checkpoint: {why}.",
        "Choose an SD1.5 or SDXL .safetensors (or .ckpt) file; if it was being downloaded, download it again.",
    )


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors header (empty when there is none)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise _not_a_checkpoint(path, f"the safetensors header is damaged ({e})") from e


def checkpoint_file(path: str | Path) -> Path:
    """`path` if it is a file, else a StudioError that says what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise StudioError(f"The checkpoint {path} is a folder, not a model file (a diffusers folder is not read).",
                          "Give the path of a single-file SD1.5 or SDXL checkpoint (.safetensors), e.g. one in the "
                          "WebUI's models/Stable-diffusion.")
    if not path.is_file():
        raise StudioError(f"The checkpoint {path} does not exist.", "Check the path: an SD1.5 or SDXL .safetensors file.")
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a checkpoint file, memory-mapped where the format allows.

    A truncated or damaged file, or one that is not a checkpoint at all, raises a StudioError
    naming the file.
    """
    path = checkpoint_file(path)
    kind = _sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind in ("torch-zip", "torch-pickle"):
        return _read_torch(path, mmap=kind == "torch-zip"), {}
    with open(path, "rb") as f:
        head = f.read(64)
    looks_text = bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)
    raise _not_a_checkpoint(path, "it is a text file" if looks_text else "its first bytes are neither safetensors nor a torch pickle")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    metadata = read_safetensors_metadata(path)
    try:
        # load_file maps the file: each tensor views the page cache until written to.
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise _not_a_checkpoint(path, f"it is truncated or damaged ({e})") from e
    return tensors, metadata


def _read_torch(path: Path, mmap: bool) -> dict[str, torch.Tensor]:
    errors = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, AttributeError)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except errors as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise StudioError(
                f"{path} contains Python objects besides tensors, which LoRA Studio does not unpickle (they can run code).",
                "Convert it to .safetensors (e.g. with a model converter extension), or use the .safetensors version.",
            ) from e
        raise _not_a_checkpoint(path, f"it is truncated or damaged ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # Lightning checkpoints wrap the weights
    if not isinstance(obj, dict):
        raise _not_a_checkpoint(path, f"it holds a {type(obj).__name__}, not a dictionary of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def normalize_keys(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old-style keys to today's single-file names; the tensors themselves are untouched.

    Early SD1.x files stored CLIP-L with transformers 3's names (`cond_stage_model.transformer.
    embeddings.*`, no `text_model.` level). `text_projection` sits beside `text_model` in today's
    names: Forge Neo builds its SD1.5 CLIP-L with one (`add_text_projection=True`).
    """
    out = {}
    old = SD15_TE_PREFIX
    for k, v in tensors.items():
        if k.startswith(old) and not k.startswith((old + "text_model.", old + "text_projection.")):
            k = old + "text_model." + k[len(old):]
        out[k] = v
    return out


# ---- 2. what is this file? -------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """What a checkpoint is: architecture, prediction type, and the dtype of its UNet."""

    arch: str  # "sd15" | "sdxl"
    prediction: str  # "eps" | "v"
    zero_terminal_snr: bool
    dtype: torch.dtype  # the most common dtype among the UNet's tensors


def _has_prefix(keys, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in keys)


def _shape(tensors: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    t = tensors.get(key)
    return tuple(t.shape) if t is not None else None


def _first_context_dim(tensors: Mapping[str, torch.Tensor]) -> int | None:
    """Width of the text context the UNet cross-attends to (attn2.to_k input features)."""
    for k in sorted(tensors):
        if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight"):
            return int(tensors[k].shape[1])
    return None


def refusal(tensors: Mapping[str, torch.Tensor], name: str) -> StudioError | None:
    """A StudioError saying what the file is when it is not an SD1.5/SDXL base checkpoint, else None."""
    keys = list(tensors)
    supported = "LoRA Studio trains on SD1.5 and SDXL base checkpoints."
    choose = "Choose an SD1.5 or SDXL checkpoint (a single .safetensors file of 2 to 7 GB)."

    def err(what: str, fix: str = choose) -> StudioError:
        return StudioError(f"{name} is {what}. {supported}", fix)

    if not keys:
        return err("empty (it holds no tensors)")
    lora_marks = ("lora_up", "lora_down", "lora_A.", "lora_B.", "hada_w1", "lokr_w1")  # kohya, peft, LyCORIS
    if any(k.startswith(("lora_unet_", "lora_te")) or any(m in k for m in lora_marks) for k in keys):
        return err("a LoRA / LyCORIS network, not a checkpoint", "Pick it in the LoRA list instead, and choose a full SD1.5 or SDXL checkpoint as the base model.")
    if "string_to_param" in tensors or "emb_params" in tensors or set(keys) <= {"clip_l", "clip_g"}:
        return err("a textual-inversion embedding, not a checkpoint")
    if not _has_prefix(keys, UNET_PREFIX):
        if _has_prefix(keys, "encoder.") and _has_prefix(keys, "decoder.") and len(keys) < 400:
            return err("a VAE on its own, not a full checkpoint", "Choose the full checkpoint; a separate VAE is not needed for training.")
        if _has_prefix(keys, "double_blocks."):
            return err("a FLUX model")
        if _has_prefix(keys, "input_blocks.") or _has_prefix(keys, "down_blocks."):
            return err("a UNet on its own (no text encoder and no VAE)")
        return err(f"not a Stable Diffusion checkpoint (its first keys are {', '.join(sorted(keys)[:3])})")
    if _has_prefix(keys, UNET_PREFIX + "joint_blocks.") or UNET_PREFIX + "x_embedder.proj.weight" in tensors:
        return err("a Stable Diffusion 3 model")
    if _has_prefix(keys, UNET_PREFIX + "double_blocks."):
        return err("a FLUX model")
    if _has_prefix(keys, SD2_TE_PREFIX) or _first_context_dim(tensors) == 1024:
        return err("a Stable Diffusion 2.x checkpoint (OpenCLIP ViT-H text encoder, 1024-wide context)")
    if _has_prefix(keys, SDXL_REFINER_TE_PREFIX) and not _has_prefix(keys, SDXL_TE1_PREFIX):
        return err("the SDXL refiner (only the bigG text encoder, 2560-wide vector input)", "Choose an SDXL base checkpoint (or a model fine-tuned from it).")
    in_shape = _shape(tensors, UNET_PREFIX + "input_blocks.0.0.weight")
    if in_shape is not None and in_shape[1] != 4:
        if in_shape[1] == 9:
            return err("an inpainting model (its UNet takes 9 input channels: latents, mask and masked image)", "Choose the regular (non-inpainting) version of this model.")
        if in_shape[1] == 8:
            return err("an instruct-pix2pix model (its UNet takes 8 input channels)")
        return err(f"a model whose UNet takes {in_shape[1]} input channels (SD1.5 and SDXL take 4)")
    is_sd15 = _has_prefix(keys, SD15_TE_PREFIX)
    is_sdxl = _has_prefix(keys, SDXL_TE1_PREFIX) and _has_prefix(keys, SDXL_TE2_PREFIX)
    if not (is_sd15 or is_sdxl):
        return err("a UNet without its text encoder (no cond_stage_model.* or conditioner.* tensors)", "Choose the full checkpoint, not a pruned UNet-only file.")
    if not _has_prefix(keys, VAE_PREFIX):
        return err("a checkpoint without its VAE (no first_stage_model.* tensors)", "Choose a checkpoint that includes the VAE (most do).")
    return None


def detect(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    name: str = "the checkpoint",
    prediction: str | None = None,
    zero_terminal_snr: bool | None = None,
) -> Detection:
    """The architecture and prediction type of a (key-normalized) checkpoint, or a StudioError.

    `prediction` / `zero_terminal_snr` override what the file says (for v-pred models whose
    file carries no marker). Markers read: the `v_pred` / `ztsnr` keys some trainers add, and
    the ModelSpec header field `modelspec.prediction_type`.
    """
    problem = refusal(tensors, name)
    if problem is not None:
        raise problem
    arch = "sdxl" if _has_prefix(tensors, SDXL_TE1_PREFIX) else "sd15"
    metadata = metadata or {}
    if prediction is None:
        spec = metadata.get("modelspec.prediction_type", "").lower()
        prediction = "v" if V_PRED_KEY in tensors or spec in ("v", "v_prediction", "v-prediction") else "eps"
    if prediction not in ("eps", "v"):
        raise StudioError(f"Prediction type {prediction!r} is not known.", "Use 'eps' (most models) or 'v'.")
    if zero_terminal_snr is None:
        zero_terminal_snr = ZTSNR_KEY in tensors
    dtypes = Counter(v.dtype for k, v in tensors.items() if k.startswith(UNET_PREFIX))
    return Detection(arch, prediction, bool(zero_terminal_snr), dtypes.most_common(1)[0][0])


def native_size(arch: str, metadata: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(width, height) a model was trained at: the file's ModelSpec resolution when it gives one
    (the demo's micro models say 64x64), else its family's (SD1.5 512, SDXL 1024)."""
    w, sep, h = str((metadata or {}).get(RESOLUTION_KEY, "")).partition("x")
    if sep and w.strip().isdigit() and h.strip().isdigit() and int(w) >= 64 and int(h) >= 64:
        return int(w), int(h)
    side = FAMILY_SIZE[arch]
    return side, side


def part(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix`, with the prefix removed (same tensor objects)."""
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def describe(path: str | Path) -> dict:
    """A small JSON-able summary of a checkpoint file (for logs and the UI)."""
    tensors, metadata = read_checkpoint(path)
    tensors = normalize_keys(tensors)
    d = detect(tensors, metadata, name=str(path))
    return {
        "arch": d.arch,
        "prediction": d.prediction,
        "zero_terminal_snr": d.zero_terminal_snr,
        "dtype": str(d.dtype).removeprefix("torch."),
        "tensors": len(tensors),
        "metadata": json.loads(json.dumps(dict(metadata))),
    }


# ---- 3. model sizes from tensor shapes -------------------------------------------------------


def _clip_heads(width: int) -> int:
    """Heads of a CLIP text tower: no tensor records the split. Every real tower uses 64-wide
    heads (CLIP-L 768 -> 12, bigG 1280 -> 20); the tiny test towers use ClipTextConfig.tiny()'s."""
    from .clip_text import ClipTextConfig

    if width % 64 == 0:
        return width // 64
    return ClipTextConfig.tiny().heads


def infer_clip_config(hf: Mapping[str, torch.Tensor], hidden_act: str) -> ClipTextConfig:
    """ClipTextConfig from HF-named text-tower tensors (CLIP-L as stored; bigG after open_clip_to_hf)."""
    from .clip_text import ClipTextConfig

    vocab, width = hf["text_model.embeddings.token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[3]) for k in hf if k.startswith("text_model.encoder.layers."))
    proj = hf.get("text_projection.weight")
    return ClipTextConfig(
        vocab_size=int(vocab),
        max_positions=int(hf["text_model.embeddings.position_embedding.weight"].shape[0]),
        width=int(width),
        layers=layers,
        heads=_clip_heads(int(width)),
        mlp_width=int(hf["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        hidden_act=hidden_act,
        projection_dim=int(proj.shape[0]) if proj is not None else None,
    )


def infer_open_clip_config(oc: Mapping[str, torch.Tensor]) -> ClipTextConfig:
    """ClipTextConfig of an open_clip text tower (SDXL's bigG, keys without the prefix)."""
    from .clip_text import ClipTextConfig

    vocab, width = oc["token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in oc if k.startswith("transformer.resblocks."))
    proj = oc.get("text_projection")
    return ClipTextConfig(
        vocab_size=int(vocab),
        max_positions=int(oc["positional_embedding"].shape[0]),
        width=int(width),
        layers=layers,
        heads=_clip_heads(int(width)),
        mlp_width=int(oc["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        hidden_act="gelu",  # bigG was trained with erf GELU
        projection_dim=int(proj.shape[1]) if proj is not None else None,
    )


def model_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """A1111's "Model hash": the first 10 hex digits of the file's sha256 (its `shorthash`)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:10]
