"""How much GPU memory a training run needs, and what to change when it does not fit.

The trainer owns this (it knows its settings); a host is only asked how much memory is free and
how much of the model is already resident (host.base.BorrowRequest.memory_check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import StudioError

if TYPE_CHECKING:
    from .config import TrainConfig

GiB = 1024**3


@dataclass(frozen=True)
class VramModel:
    """Sizes of one architecture for the memory estimate (fp16 = 2 bytes per parameter).

    Activation figures are per sample at the architecture's base resolution with SDPA attention,
    fp16 autocast: kohya-ss users' reports for LoRA training (SD1.5 at 512 px, batch 1: about 6 GB
    in all without gradient checkpointing and 4 GB with it; SDXL at 1024 px: about 24 GB and
    11 GB), less the weights. They scale with the pixel count of the bucket.
    """

    unet_params: float  # ldm UNet parameters
    te_params: float  # text encoder(s)
    vae_params: float
    base_px: int  # the resolution the activation figures are for
    act_gib: float  # UNet activations kept for backward, per sample, no checkpointing
    act_ckpt_gib: float  # the same with gradient checkpointing
    te_act_gib: float  # text encoder activations per sample when it trains
    vae_encode_gib: float  # VAE encoder working memory per image at base_px (no grad)
    lora_params_per_rank: float  # LoRA parameters per unit of network_dim (kohya targets, UNet + TE)
    conv_params_per_rank: float  # LoCon 3x3 conv parameters per unit of conv_dim


VRAM_MODELS = {
    "sd15": VramModel(860e6, 123e6, 84e6, 512, 3.5, 1.2, 0.3, 0.6, 0.56e6, 0.45e6),
    "sdxl": VramModel(2567e6, 817e6, 84e6, 1024, 15.0, 3.5, 0.8, 2.4, 2.9e6, 1.3e6),
}
CONTEXT_GIB = 0.8  # CUDA context, cuBLAS/cuDNN workspaces, allocator slack
# Optimizer state bytes per trained parameter (fp32 master LoRA weights are counted apart).
OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2, "lion": 4, "lion8bit": 1, "adafactor": 4, "prodigy": 16, "sgdnesterov": 4,
                   "sgdnesterov8bit": 1, "dadaptation": 16, "dadaptadam": 16, "came": 8}


@dataclass(frozen=True)
class VramEstimate:
    """The parts of a run's peak GPU memory, in bytes."""

    weights: int  # the model itself (already resident on A1111; a clone on Forge)
    network: int  # LoRA weights (fp32) and their gradients
    optimizer: int
    activations: int  # the training step's peak: UNet (+ TE) activations, or VAE encoding if larger
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.network + self.optimizer + self.activations + self.overhead


def vram_parts(arch: str, config: TrainConfig) -> VramEstimate:
    """The estimate of `estimate_vram`, part by part."""
    m = VRAM_MODELS[arch]
    weights = 2 * (m.unet_params + m.te_params + m.vae_params)
    lora = m.lora_params_per_rank * config.network_dim
    if config.network_type.lower() == "locon":
        lora += m.conv_params_per_rank * config.conv_dim
    if config.text_encoder_lr <= 0 or config.cache_text_encoder_outputs:
        lora *= m.unet_params / (m.unet_params + 0.55 * m.te_params)  # the TE share of the targets is not trained
    network = 8 * lora  # fp32 weights + fp32 gradients
    optimizer = OPTIMIZER_BYTES.get(config.optimizer.lower().replace("_", ""), 8) * lora
    batch = max(1, config.train_batch_size)
    area = (config.resolution / m.base_px) ** 2
    per_sample = m.act_ckpt_gib if config.gradient_checkpointing else m.act_gib
    if config.text_encoder_lr > 0 and not config.cache_text_encoder_outputs:
        per_sample += m.te_act_gib
    step = per_sample * area * batch
    encode = m.vae_encode_gib * area * batch  # caching encodes a batch at a time too, before training
    activations = max(step, encode) if config.cache_latents else step + encode * 0.25
    return VramEstimate(int(weights), int(network), int(optimizer), int(activations * GiB), int(CONTEXT_GIB * GiB))


def estimate_vram(arch: str, config: TrainConfig) -> int:
    """Peak GPU memory in bytes for training `config` on an `arch` model in fp16 (weights included)."""
    return vram_parts(arch, config).total


def vram_advice(arch: str, config: TrainConfig, available: int) -> list[str]:
    """Changes to the settings that bring the estimate under `available` bytes, one at a time and
    then together, each as "what (about N GB)"."""
    steps: list[tuple[str, dict]] = []
    if not config.gradient_checkpointing:
        steps.append(("turn on gradient checkpointing", {"gradient_checkpointing": True}))
    if config.train_batch_size > 1:
        steps.append((f"lower the batch size from {config.train_batch_size} to 1", {"train_batch_size": 1}))
    if not config.cache_latents:
        steps.append(("cache latents", {"cache_latents": True}))
    if arch == "sdxl" and not config.cache_text_encoder_outputs:
        steps.append(("cache text encoder outputs (the text encoder is then not trained)", {"cache_text_encoder_outputs": True}))
    low = VRAM_MODELS[arch].base_px * 3 // 4 // 64 * 64
    if config.resolution > low:
        steps.append((f"lower the resolution from {config.resolution} to {low}", {"resolution": low}))
    out, together = [], {}
    for text, change in steps:
        need = estimate_vram(arch, config.replace(**change))
        together.update(change)
        if need <= available:
            return out + [f"{text} (about {need / GiB:.1f} GB)"]
        out.append(f"{text} (about {need / GiB:.1f} GB)")
    need = estimate_vram(arch, config.replace(**together)) if together else estimate_vram(arch, config)
    if need > available:
        out.append(f"even with all of these it needs about {need / GiB:.1f} GB: use a GPU with more memory, or train standalone on another machine")
    return out


def vram_problem(arch: str, config: TrainConfig, free: int, resident: int, where: str = "the GPU") -> StudioError | None:
    """A StudioError when the run will not fit: `free` bytes are free on the device now and
    `resident` bytes of the estimate's weights are already there (the WebUI's loaded model)."""
    need = estimate_vram(arch, config)
    available = free + resident
    if need <= available:
        return None
    advice = vram_advice(arch, config, available)
    return StudioError(
        f"Training needs about {need / GiB:.1f} GB of GPU memory with these settings ({config.resolution} px, batch "
        f"{config.train_batch_size}, gradient checkpointing {'on' if config.gradient_checkpointing else 'off'}), "
        f"but only {available / GiB:.1f} GB are available on {where} with the model loaded.",
        ("To fit: " + "; or ".join(advice) + ".") if advice else "Close other programs that use the GPU.",
    )
