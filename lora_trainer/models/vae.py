"""The Stable Diffusion VAE (ldm AutoencoderKL) with ldm module names.

Keys match a checkpoint's `first_stage_model.*` tensors as they are: `encoder.*`, `decoder.*`,
`quant_conv`, `post_quant_conv`, and mid-block attention `q/k/v/proj_out` as 1x1 convs. SD1.5 and
SDXL share the architecture; only the latent scale factor differs.

Images are (B, 3, H, W) in [-1, 1]; latents are (B, 4, H/8, W/8). `encode`/`decode` work on
unscaled latents like ldm; `images_to_latents`/`latents_to_images` apply the scale factor.

fp16 overflow (the stock SDXL VAE): when an encode or decode that did not run in float32 (fp16 or
bf16 weights, or an enclosing autocast) gives NaN/inf, that call is run again in float32 on float32
copies of the weights, with autocast off (`upcast=None`, the default). `upcast=True` always runs in
float32, `upcast=False` never does. The result comes back in the weights' dtype. The module's own
tensors are never converted, because they may be borrowed from a WebUI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lora_trainer.models.attention import attention

# ---------------------------------------------------------------------------------------------
# Small parts


def _norm(channels: int) -> nn.GroupNorm:
    # ldm's VAE Normalize(): 32 groups, eps 1e-6 (the UNet uses 1e-5).
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """ldm VAE ResnetBlock (no timestep input): norm-swish-conv twice, residual."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels; projections are 1x1 convs as in ldm."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (proj(hn).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))  # (B, HW, C)
        out = attention(q, k, v, heads=1)  # (B, HW, C)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv without padding (ldm's asymmetric pad)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """`mid.block_1`, `mid.attn_1`, `mid.block_2`."""

    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class DownLevel(nn.Module):
    """`encoder.down.N`: `block.M` ResnetBlocks [+ `downsample`]."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, downsample: bool):
        super().__init__()
        self.block = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)]
        )
        if downsample:
            self.downsample = Downsample(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return self.downsample(x) if hasattr(self, "downsample") else x


class UpLevel(nn.Module):
    """`decoder.up.N`: `block.M` ResnetBlocks [+ `upsample`]."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, upsample: bool):
        super().__init__()
        self.block = nn.ModuleList(
            [ResnetBlock(in_channels if i == 0 else out_channels, out_channels) for i in range(num_blocks)]
        )
        if upsample:
            self.upsample = Upsample(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        return self.upsample(x) if hasattr(self, "upsample") else x


class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)) per latent element (Kingma & Welling 2014)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)  # (B, z, h, w) each
        # ldm clamps so exp() stays finite for untrained or overflowing encoders.
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + std * noise; the noise is drawn on the generator's device, so a CPU generator
        gives the same latents whichever device the VAE runs on."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=torch.float32)
        return self.mean + self.std * noise.to(self.mean.device, self.mean.dtype)

    def mode(self) -> torch.Tensor:
        return self.mean


# ---------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class VAEConfig:
    """Shape of an ldm AutoencoderKL (`ddconfig` in the ldm yaml) plus the latent scale factor."""

    # RGB in and out.
    in_channels: int = 3
    out_channels: int = 3
    # Width of level 0 (ldm `ch`); level widths are ch * ch_mult.
    ch: int = 128
    # One entry per level; len - 1 stride-2 steps, so 4 levels = 8x smaller latents.
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    # ResnetBlocks per encoder level (decoder levels have one more, as in ldm).
    num_res_blocks: int = 2
    # Latent channels the diffusion model sees.
    z_channels: int = 4
    # Channels between quant_conv and post_quant_conv (ldm `embed_dim`); 4 in every SD VAE.
    embed_dim: int = 4
    # Latents are multiplied by this so they have about unit variance: 0.18215 SD1.5, 0.13025 SDXL.
    scale_factor: float = 0.18215

    @classmethod
    def sd15(cls) -> VAEConfig:
        """SD1.x VAE: 83,653,863 parameters."""
        return cls()

    @classmethod
    def sdxl(cls) -> VAEConfig:
        """SDXL VAE: same tensors as SD1.5, its own scale factor."""
        return cls(scale_factor=0.13025)

    @classmethod
    def tiny(cls, scale_factor: float = 0.18215) -> VAEConfig:
        """Test size with the same 8x downsampling and 4 latent channels."""
        return cls(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, scale_factor=scale_factor)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @classmethod
    def from_state_dict_shapes(
        cls, shapes: dict[str, tuple[int, ...]], scale_factor: float
    ) -> VAEConfig:
        """Read the config from VAE tensor shapes (keys with or without `first_stage_model.`).

        The scale factor is in no tensor: pass the architecture's (0.18215 SD1.5, 0.13025 SDXL).
        """
        prefix = "first_stage_model."
        s = {k.removeprefix(prefix): tuple(v) for k, v in shapes.items()}
        if "encoder.conv_in.weight" not in s:
            raise ValueError("no encoder.conv_in.weight: these are not ldm VAE tensors")
        ch = s["encoder.conv_in.weight"][0]
        levels = 1 + max(int(k.split(".")[2]) for k in s if k.startswith("encoder.down."))
        blocks = {int(k.split(".")[4]) for k in s if k.startswith("encoder.down.0.block.")}
        ch_mult = tuple(s[f"encoder.down.{i}.block.0.conv2.weight"][0] // ch for i in range(levels))
        return cls(
            in_channels=s["encoder.conv_in.weight"][1],
            out_channels=s["decoder.conv_out.weight"][0],
            ch=ch,
            ch_mult=ch_mult,
            num_res_blocks=max(blocks) + 1,
            z_channels=s["decoder.conv_in.weight"][1],
            embed_dim=s["post_quant_conv.weight"][1],
            scale_factor=scale_factor,
        )


# ---------------------------------------------------------------------------------------------
# Encoder, decoder, autoencoder


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        ins = [config.ch] + widths[:-1]
        last = len(widths) - 1
        self.down = nn.ModuleList(
            [DownLevel(ins[i], widths[i], config.num_res_blocks, i != last) for i in range(len(widths))]
        )
        self.mid = MidBlock(widths[-1])
        self.norm_out = _norm(widths[-1])
        # Mean and log-variance for each latent channel.
        self.conv_out = nn.Conv2d(widths[-1], 2 * config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)  # (B, ch, H, W)
        for level in self.down:
            h = level(h)  # (B, ch*mult, H/2^i, W/2^i)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 2z, H/8, W/8)


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        widths = [config.ch * m for m in config.ch_mult]
        self.conv_in = nn.Conv2d(config.z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1])
        # Stored by level (up.0 is the full-resolution level) but run from the deepest level up.
        ins = widths[1:] + [widths[-1]]
        self.up = nn.ModuleList(
            [UpLevel(ins[i], widths[i], config.num_res_blocks + 1, i != 0) for i in range(len(widths))]
        )
        self.norm_out = _norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))  # (B, ch*mult[-1], h, w)
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, 8h, 8w)


def _ramp(size: int, overlap: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """1-D blend weights: linear fades over `overlap` samples at the edges shared with a neighbour."""
    w = torch.ones(size)
    if overlap > 0:
        fade = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap  # (0, 1), never 0
        if fade_start:
            w[:overlap] = fade
        if fade_end:
            w[-overlap:] = torch.minimum(w[-overlap:], fade.flip(0))
    return w


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]  # the last tile ends flush with the edge


def blend_tiles(
    z: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    tile: int,
    overlap: int,
    scale: int,
) -> torch.Tensor:
    """Apply `fn` (which scales space by `scale`) to overlapping tiles of z and blend the results.

    z: (B, C, h, w); tiles are `tile` x `tile` latents, neighbours share `overlap` latents, and the
    shared band is cross-faded linearly so no seam shows where the tiles' GroupNorm statistics differ.
    """
    if overlap >= tile:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile {tile}")
    b, _, h, w = z.shape
    ys, xs = _tile_starts(h, tile, tile - overlap), _tile_starts(w, tile, tile - overlap)
    out = weight = None
    for y in ys:
        for x in xs:
            piece = fn(z[:, :, y : y + tile, x : x + tile])  # (B, C_out, th*scale, tw*scale)
            th, tw = piece.shape[-2:]
            wy = _ramp(th, overlap * scale, y > 0, y + tile < h)
            wx = _ramp(tw, overlap * scale, x > 0, x + tile < w)
            mask = (wy[:, None] * wx[None, :]).to(piece.device)  # (th, tw)
            if out is None:
                out = torch.zeros(b, piece.shape[1], h * scale, w * scale, device=piece.device)
                weight = torch.zeros(h * scale, w * scale, device=piece.device)
            ys_, xs_ = slice(y * scale, y * scale + th), slice(x * scale, x * scale + tw)
            out[:, :, ys_, xs_] += piece.float() * mask
            weight[ys_, xs_] += mask
    return (out / weight).to(z.dtype)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device argument and answers for CUDA
        return device_type == "cuda" and torch.is_autocast_enabled()


class AutoencoderKL(nn.Module):
    """ldm AutoencoderKL (Rombach et al. 2022): images <-> 4-channel latents, 8x smaller."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    def _run(self, stages: tuple[nn.Module, ...], x: torch.Tensor, upcast: bool | None) -> torch.Tensor:
        """Run `stages` in order, in the weights' dtype or in float32 per `upcast` (see the module doc).

        The result is always in the weights' dtype (images and moments are small numbers; only the
        activations inside the decoder overflow fp16).
        """
        dtype = next(self.parameters()).dtype
        if upcast is not True:
            out = x.to(dtype)
            for stage in stages:
                out = stage(out)
            ran_fp32 = dtype == torch.float32 and not _autocast_on(x.device.type)
            if upcast is False or ran_fp32 or bool(torch.isfinite(out).all()):
                return out
        out = x.float()
        # An enclosing fp16 autocast would run the float32 retry in fp16 again.
        with torch.autocast(device_type=x.device.type, enabled=False):
            for stage in stages:
                # Float32 copies for this call only; the module's (possibly borrowed) tensors stay as they are.
                tensors = {k: v.float() for k, v in stage.state_dict().items()}
                out = functional_call(stage, tensors, (out,))
        return out.to(dtype)

    def encode(self, x: torch.Tensor, upcast: bool | None = None) -> DiagonalGaussian:
        """Images (B, 3, H, W) in [-1, 1] -> posterior over unscaled latents (B, 4, H/8, W/8)."""
        return DiagonalGaussian(self._run((self.encoder, self.quant_conv), x, upcast))

    def decode(
        self, z: torch.Tensor, upcast: bool | None = None, tile: int | None = None, overlap: int = 8
    ) -> torch.Tensor:
        """Unscaled latents (B, 4, h, w) -> images (B, 3, 8h, 8w), about [-1, 1] (not clamped).

        tile: decode `tile` x `tile` latent tiles with `overlap` latents cross-faded, for images too
        large to decode at once; None decodes in one pass.
        """
        stages = (self.post_quant_conv, self.decoder)
        if tile is None or (z.shape[-2] <= tile and z.shape[-1] <= tile):
            return self._run(stages, z, upcast)
        return blend_tiles(z, lambda part: self._run(stages, part, upcast), tile, overlap, self.config.downscale)

    def images_to_latents(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] -> scaled latents the UNet trains on (a sample of the posterior)."""
        return self.encode(x).sample(generator) * self.config.scale_factor

    def latents_to_images(self, latents: torch.Tensor, tile: int | None = None) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1] (clamped)."""
        return self.decode(latents / self.config.scale_factor, tile=tile).clamp(-1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct x through the posterior mean (used by tests)."""
        return self.decode(self.encode(x).mean)
