"""ModelBundle: what training and generation need from a model, whoever provides it.

A bundle is our own module code over borrowed tensors. `bundle_from_state_dict` builds every
module on the meta device and then `load_state_dict(..., assign=True)`, so the parameters ARE the
given tensors (memory-mapped file pages, or the tensors a WebUI has loaded): nothing is copied,
and nothing of the lender is called, patched or moved. `load_bundle(path)` reads a file and
does the same; with a device or dtype other than the file's, `.to()` makes the one copy needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import StudioError
from . import checkpoint as ckpt
from .clip_text import ClipTextModel, clip_l_from_checkpoint, open_clip_to_hf
from .schedule import NoiseSchedule
from .unet import UNet, UNetConfig
from .vae import AutoencoderKL, VAEConfig

# Latent scale factors (ldm `scale_factor`): latents * this have about unit variance.
VAE_SCALE = {"sd15": 0.18215, "sdxl": 0.13025}

# kohya prefixes of the text encoders, in checkpoint order.
TE_PREFIXES = {"sd15": ("lora_te",), "sdxl": ("lora_te1", "lora_te2")}


@dataclass
class Conditioning:
    """What the UNet is conditioned on for a batch of prompts."""

    context: torch.Tensor  # (B, 77k, C): C = 768 SD1.5, 2048 SDXL
    pooled: torch.Tensor | None = None  # (B, 1280) SDXL: projected bigG EOS state
    y: torch.Tensor | None = None  # (B, 2816) SDXL: pooled ++ size embeddings; None for SD1.5

    def unet_kwargs(self) -> dict:
        return {"context": self.context, "y": self.y}


@dataclass(eq=False)
class ModelBundle:
    """The modules of one SD1.5 or SDXL checkpoint and the functions that feed them."""

    arch: str  # "sd15" | "sdxl"
    prediction: str  # "eps" | "v"
    zero_terminal_snr: bool  # trained on a Lin et al. 2023 schedule (rescaled betas)
    unet: UNet  # ldm names: input_blocks, middle_block, output_blocks
    text_encoders: tuple[tuple[str, ClipTextModel], ...]  # (kohya prefix, HF-named tower), checkpoint order
    vae: AutoencoderKL
    schedule: NoiseSchedule
    name: str = ""  # the checkpoint's stem (infotext "Model")
    clip_skip: int = 1  # SD1.5 only: 1 = last layer, 2 = A1111's "CLIP skip 2"
    max_chunks: int = 3  # prompts up to 225 tokens (the guide's max_token_length)
    _tokenizer: object | None = field(default=None, repr=False)

    # ---- facts

    @property
    def vae_scale_factor(self) -> float:
        return self.vae.config.scale_factor

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return self.unet.config.in_channels

    def modules(self) -> dict[str, nn.Module]:
        """unet, vae and each text encoder under its kohya prefix."""
        return {"unet": self.unet, "vae": self.vae, **dict(self.text_encoders)}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ModelBundle:
        """Move/cast every module in place (this copies: only call it when the device or dtype differs)."""
        for m in self.modules().values():
            m.to(device=device, dtype=dtype)
        return self

    def requires_grad_(self, flag: bool = False) -> ModelBundle:
        for m in self.modules().values():
            m.requires_grad_(flag)
        return self

    # ---- text

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from .tokenizer import ClipTokenizer

            self._tokenizer = ClipTokenizer()
        return self._tokenizer

    def text_conditioner(self, kohya_layout: bool = False):
        """The conditioning module of this architecture (conditioning.SD15TextConditioner / SDXLTextConditioner)."""
        from .conditioning import SD15TextConditioner, SDXLTextConditioner

        towers = [m for _, m in self.text_encoders]
        if self.arch == "sd15":
            return SD15TextConditioner(towers[0], self.tokenizer, self.clip_skip, self.max_chunks, kohya_layout)
        return SDXLTextConditioner(towers[0], towers[1], self.tokenizer, self.max_chunks, kohya_layout)

    def encode_prompts(
        self,
        prompts: Sequence[str],
        width: int = 1024,
        height: int = 1024,
        original_size=None,
        crop=(0, 0),
        target_size=None,
        is_negative: bool = False,
        kohya_layout: bool = False,
        emphasis: bool = False,
    ) -> Conditioning:
        """Prompts -> Conditioning. SDXL's size vector uses original = target = (height, width) and
        crop (0, 0) unless given (pairs, or (B, 2) tensors for per-sample buckets). An empty SDXL
        negative prompt gives zeros, as the WebUIs do. emphasis=True reads A1111's `(word:1.2)`,
        `[word]`, escapes and BREAK (standalone generation; training captions stay plain text)."""
        cond = self.text_conditioner(kohya_layout)
        if self.arch == "sd15":
            return Conditioning(cond(list(prompts), emphasis=emphasis))
        from .conditioning import sdxl_size_vector

        text = cond(list(prompts), negative=is_negative, emphasis=emphasis)
        hw = (height, width)
        y = sdxl_size_vector(text.pooled, original_size if original_size is not None else hw, crop,
                             target_size if target_size is not None else hw)
        return Conditioning(text.context, text.pooled, y)

    def unet_kwargs(self, cond: Conditioning) -> dict:
        """The UNet's keyword arguments for a Conditioning, in the UNet's device and dtype."""
        return {
            "context": cond.context.to(self.device, self.dtype),
            "y": cond.y.to(self.device, self.dtype) if cond.y is not None else None,
        }

    # ---- UNet and VAE

    def predict(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's eps or v for float32 x at (fractional) timesteps t, returned as float32."""
        out = self.unet(x.to(self.dtype), t.to(x.device), context.to(self.dtype), y.to(self.dtype) if y is not None else None)
        return out.float()

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8), a posterior sample."""
        return self.vae.images_to_latents(images.to(self.vae_device), generator)

    def decode_latents(self, latents: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W) in [-1, 1]."""
        return self.vae.latents_to_images(latents.to(self.vae_device), tile=tile)

    @property
    def vae_device(self) -> torch.device:
        return next(self.vae.parameters()).device


# ---- building --------------------------------------------------------------------------------


def _assign(module: nn.Module, tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Load `tensors` into a meta-device module by assignment (no copy), checking every key and shape."""
    want = module.state_dict()
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    bad = [(k, tuple(tensors[k].shape), tuple(v.shape)) for k, v in want.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or extra or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {where}{missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (first: {where}{extra[0]})")
        if bad:
            k, got, exp = bad[0]
            parts.append(f"{len(bad)} of the wrong shape (first: {where}{k} is {got}, expected {exp})")
        raise StudioError(
            f"The tensors under {where!r} do not fit the model their shapes describe: " + "; ".join(parts) + ".",
            "The checkpoint is damaged or of an unsupported variant; try another SD1.5 or SDXL checkpoint.",
        )
    module.load_state_dict(tensors, strict=True, assign=True)
    leftovers = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if leftovers:  # a buffer the state dict does not carry would stay on meta: a bug in the module code
        raise RuntimeError(f"{where}: {leftovers[0]} was not loaded and is still on the meta device")


def bundle_from_state_dict(
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    name: str = "",
    prediction: str | None = None,
    zero_terminal_snr: bool | None = None,
    clip_skip: int = 1,
) -> ModelBundle:
    """A ModelBundle whose parameters are `tensors` themselves (single-file checkpoint key names).

    This is what a WebUI host calls with its loaded model's tensors and what `load_bundle` calls
    with a memory-mapped file. Parameters are frozen (requires_grad False); nothing is copied.
    """
    label = name or "the checkpoint"
    tensors = ckpt.normalize_keys(tensors)
    det = ckpt.detect(tensors, metadata, label, prediction, zero_terminal_snr)

    # 1. UNet
    unet_sd = ckpt.part(tensors, ckpt.UNET_PREFIX)
    unet_cfg = UNetConfig.from_state_dict_shapes({k: tuple(v.shape) for k, v in unet_sd.items()})
    with torch.device("meta"):
        unet = UNet(unet_cfg)
    _assign(unet, unet_sd, ckpt.UNET_PREFIX)

    # 2. VAE (ldm training checkpoints may carry the LPIPS/discriminator loss weights: not the VAE)
    vae_sd = {k: v for k, v in ckpt.part(tensors, ckpt.VAE_PREFIX).items() if not k.startswith("loss.")}
    vae_cfg = VAEConfig.from_state_dict_shapes({k: tuple(v.shape) for k, v in vae_sd.items()}, VAE_SCALE[det.arch])
    with torch.device("meta"):
        vae = AutoencoderKL(vae_cfg)
    _assign(vae, vae_sd, ckpt.VAE_PREFIX)

    # 3. text encoders, HF names (bigG mapped from open_clip as views)
    if det.arch == "sd15":
        raw = ckpt.part(tensors, ckpt.SD15_TE_PREFIX)
        raw.pop("text_model.embeddings.position_ids", None)
        te_specs = [(ckpt.SD15_TE_PREFIX, ckpt.infer_clip_config(raw, "quick_gelu"), None)]
    else:
        raw_l = ckpt.part(tensors, ckpt.SDXL_TE1_PREFIX)
        te_specs = [
            (ckpt.SDXL_TE1_PREFIX, ckpt.infer_clip_config(raw_l, "quick_gelu"), None),
            (ckpt.SDXL_TE2_PREFIX, ckpt.infer_open_clip_config(ckpt.part(tensors, ckpt.SDXL_TE2_PREFIX)), "open_clip"),
        ]
    encoders = []
    for kohya_prefix, (prefix, cfg, fmt) in zip(TE_PREFIXES[det.arch], te_specs):
        hf = open_clip_to_hf(tensors, cfg, prefix) if fmt == "open_clip" else clip_l_from_checkpoint(tensors, prefix, cfg)
        with torch.device("meta"):
            te = ClipTextModel(cfg)
        _assign(te, hf, prefix)
        encoders.append((kohya_prefix, te))

    bundle = ModelBundle(
        arch=det.arch,
        prediction=det.prediction,
        zero_terminal_snr=det.zero_terminal_snr,
        unet=unet,
        text_encoders=tuple(encoders),
        vae=vae,
        schedule=NoiseSchedule(zero_terminal_snr=det.zero_terminal_snr),
        name=name,
        clip_skip=clip_skip,
    )
    for m in bundle.modules().values():
        m.eval()
    return bundle.requires_grad_(False)


def load_bundle(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    prediction: str | None = None,
    zero_terminal_snr: bool | None = None,
    clip_skip: int = 1,
) -> ModelBundle:
    """Load a single-file SD1.5/SDXL checkpoint. On CPU with dtype None the parameters are the
    file's memory-mapped tensors (no copy); another device or dtype costs one copy there."""
    path = Path(path)
    tensors, metadata = ckpt.read_checkpoint(path)
    bundle = bundle_from_state_dict(
        tensors, metadata, name=path.stem, prediction=prediction, zero_terminal_snr=zero_terminal_snr, clip_skip=clip_skip
    )
    del tensors  # the bundle holds the tensors it uses; the rest (EMA, schedule buffers) can go
    if torch.device(device) != torch.device("cpu") or dtype is not None:
        bundle.to(device, dtype)
    return bundle


def state_dict_of(bundle: ModelBundle) -> dict[str, torch.Tensor]:
    """The bundle's tensors under single-file checkpoint keys (SD1.5 layout, or SDXL with bigG in
    open_clip layout: its q/k/v are concatenated, a copy). The inverse of bundle_from_state_dict."""
    from .clip_text import hf_to_open_clip

    out = {ckpt.UNET_PREFIX + k: v for k, v in bundle.unet.state_dict().items()}
    out.update({ckpt.VAE_PREFIX + k: v for k, v in bundle.vae.state_dict().items()})
    if bundle.arch == "sd15":
        out.update({ckpt.SD15_TE_PREFIX + k: v for k, v in bundle.text_encoders[0][1].state_dict().items()})
    else:
        (_, te1), (_, te2) = bundle.text_encoders
        out.update({ckpt.SDXL_TE1_PREFIX + k: v for k, v in te1.state_dict().items()})
        out.update(hf_to_open_clip(te2.state_dict(), te2.config, ckpt.SDXL_TE2_PREFIX))
    return out
