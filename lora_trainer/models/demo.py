"""Tiny random SD1.5 / SDXL checkpoints in the real single-file format.

The demo, the tests and anyone without a GPU or a 2 GB download need a model that goes through
exactly the code a real checkpoint goes through. These files have the real key names
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.transformer.*` for SD1.5;
`conditioner.embedders.0.transformer.*` and open_clip-format `conditioner.embedders.1.model.*`
for SDXL) at test sizes (UNetConfig.tiny_*, VAEConfig.tiny, ClipTextConfig.tiny): a few MB,
deterministic for a seed. The images they make are noise-coloured blobs, which is the point:
fast, and obviously not a real model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import StudioError
from ..fileio import atomic_path
from . import checkpoint as ckpt
from .clip_text import ClipTextConfig, ClipTextModel, hf_to_open_clip
from .unet import UNet, UNetConfig
from .vae import AutoencoderKL, VAEConfig

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}


def _tiny_modules(arch: str) -> dict[str, torch.nn.Module]:
    """Freshly initialised tiny modules (PyTorch's default init; callers fix the seed)."""
    if arch == "sd15":
        return {
            "unet": UNet(UNetConfig.tiny_sd15()),
            "vae": AutoencoderKL(VAEConfig.tiny(0.18215)),
            "te": ClipTextModel(ClipTextConfig.tiny()),
        }
    if arch == "sdxl":
        return {
            "unet": UNet(UNetConfig.tiny_sdxl()),
            "vae": AutoencoderKL(VAEConfig.tiny(0.13025)),
            "te1": ClipTextModel(ClipTextConfig.tiny()),
            # bigG: erf GELU and a projection; pooled width 32 = tiny_sdxl's adm_in_channels - 1536
            "te2": ClipTextModel(ClipTextConfig.tiny(projection_dim=32, hidden_act="gelu")),
        }
    raise StudioError(f"Unknown architecture {arch!r}.", "Use 'sd15' or 'sdxl'.")


def checkpoint_state_dict(arch: str, mods: dict[str, torch.nn.Module], dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """Modules ("unet", "vae", "te" for SD1.5; "te1", "te2" for SDXL) -> single-file checkpoint
    tensors under the real keys, floating tensors cast to `dtype`."""
    sd: dict[str, torch.Tensor] = {}

    def put(prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        for k, v in tensors.items():
            sd[prefix + k] = v.detach().to(dtype).contiguous() if v.is_floating_point() else v.contiguous()

    put(ckpt.UNET_PREFIX, mods["unet"].state_dict())
    put(ckpt.VAE_PREFIX, mods["vae"].state_dict())
    positions = torch.arange(77, dtype=torch.int64)[None]  # the buffer real files carry (and loaders drop)
    if arch == "sd15":
        put(ckpt.SD15_TE_PREFIX, mods["te"].state_dict())
        sd[ckpt.SD15_TE_PREFIX + "text_model.embeddings.position_ids"] = positions
        # ldm keeps its schedule in the file; loaders ignore it and compute their own
        from .schedule import NoiseSchedule

        s = NoiseSchedule()
        sd["betas"] = s.betas().float()
        sd["alphas_cumprod"] = s.alphas_cumprod()
    else:
        put(ckpt.SDXL_TE1_PREFIX, mods["te1"].state_dict())
        sd[ckpt.SDXL_TE1_PREFIX + "text_model.embeddings.position_ids"] = positions
        te2 = mods["te2"]
        put("", hf_to_open_clip(te2.state_dict(), te2.config, ckpt.SDXL_TE2_PREFIX))
        sd[ckpt.SDXL_TE2_PREFIX + "logit_scale"] = torch.tensor(4.6052, dtype=dtype)
    return sd


def demo_state_dict(arch: str = "sd15", seed: int = 0, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The tensors of a tiny random checkpoint under real single-file keys; same seed, same tensors."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG as it was
        torch.manual_seed(seed)
        mods = _tiny_modules(arch)
    return checkpoint_state_dict(arch, mods, dtype)


def write_demo_checkpoint(
    path: str | Path, arch: str = "sd15", seed: int = 0, dtype: str | torch.dtype = "fp16",
    prediction: str = "eps", zero_terminal_snr: bool = False, resolution: int | None = None,
) -> Path:
    """Write a tiny random checkpoint to `path` (atomically) and return the path.

    prediction="v" / zero_terminal_snr=True add the `v_pred` / `ztsnr` marker keys, as some
    v-prediction checkpoints carry them. `resolution` (pixels) goes into the header as the
    model's own size (checkpoint.native_size), so generation and grids default to it.
    """
    from safetensors.torch import save_file

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise StudioError(f"Unknown dtype {dtype!r}.", f"Use one of: {', '.join(DTYPES)}.")
        dtype = DTYPES[dtype]
    sd = demo_state_dict(arch, seed, dtype)
    if prediction == "v":
        sd[ckpt.V_PRED_KEY] = torch.tensor([])
    if zero_terminal_snr:
        sd[ckpt.ZTSNR_KEY] = torch.tensor([])
    path = Path(path)
    with atomic_path(path) as tmp:
        metadata = {"format": "pt"}
        if resolution is not None:
            metadata[ckpt.RESOLUTION_KEY] = f"{resolution}x{resolution}"
        save_file(sd, str(tmp), metadata=metadata)
    return path
