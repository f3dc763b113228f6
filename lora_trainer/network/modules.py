"""One LoRA module: the low-rank delta beside a frozen Linear or Conv2d (Hu et al. 2021).

The module holds only its own tensors (`lora_down.weight`, `lora_up.weight`, the scalar `alpha`),
named as kohya names them, so a network's `state_dict()` is the file's tensors. It never holds
the base layer: the base tensors are borrowed (from a checkpoint or from the WebUI) and must stay
the caller's. The network wires the two together with a forward hook (see network.py).

For a Conv2d base the down projection copies the base's kernel, stride and padding and the up
projection is 1x1, so a 3x3 LoCon delta is a rank-`dim` factorisation of the 3x3 kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def is_target_layer(module: nn.Module) -> bool:
    """kohya wraps a child only when its class is exactly `Linear` or `Conv2d` (by name)."""
    return module.__class__.__name__ in ("Linear", "Conv2d")


def is_conv3x3(module: nn.Module) -> bool:
    """A Conv2d with a kernel larger than 1x1: trained at `conv_dim`, not `dim` (kohya's rule)."""
    return module.__class__.__name__ == "Conv2d" and tuple(module.kernel_size) != (1, 1)


class LoRAModule(nn.Module):
    """The delta `up(down(x)) * multiplier * alpha / dim` for one base layer.

    `dropout` drops elements of the down output, `rank_dropout` drops whole ranks per sample (and
    rescales by 1/(1-p)), `module_dropout` skips the whole delta for a forward; all three only in
    training mode, exactly as kohya's `networks.lora.LoRAModule`.
    """

    def __init__(
        self,
        base: nn.Module,
        dim: int,
        alpha: float | None,
        dropout: float | None = None,
        rank_dropout: float | None = None,
        module_dropout: float | None = None,
        device: torch.device | None = None,
    ):
        super().__init__()
        if dim < 1:
            raise ValueError(f"LoRA dim must be >= 1, got {dim}")
        device = device if device is not None else base.weight.device
        if base.__class__.__name__ == "Conv2d":
            self.is_conv = True
            self.lora_down = nn.Conv2d(
                base.in_channels, dim, base.kernel_size, base.stride, base.padding, bias=False, device=device
            )
            self.lora_up = nn.Conv2d(dim, base.out_channels, 1, bias=False, device=device)
        elif base.__class__.__name__ == "Linear":
            self.is_conv = False
            self.lora_down = nn.Linear(base.in_features, dim, bias=False, device=device)
            self.lora_up = nn.Linear(dim, base.out_features, bias=False, device=device)
        else:
            raise TypeError(f"LoRA wraps Linear or Conv2d, not {base.__class__.__name__}")
        self.dim = dim
        # kohya: an alpha of 0 or None means alpha = dim (scale 1).
        alpha = float(dim) if alpha is None or alpha == 0 else float(alpha)
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32, device=device))
        self.multiplier = 1.0
        self.dropout = dropout
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """kohya's init: down as nn.Linear's default (U(+-1/sqrt(fan_in))), up zero, so the delta starts at 0."""
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}, alpha={float(self.alpha):g}, conv={self.is_conv}"

    def forward(self, x: torch.Tensor) -> torch.Tensor | None:
        """The delta to add to the base output for input `x`, or None when module dropout skips it."""
        if self.training and self.module_dropout and torch.rand(1).item() < self.module_dropout:
            return None
        w_dtype = self.lora_down.weight.dtype
        if x.dtype != w_dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(w_dtype)  # fp16 base activations into fp32 LoRA weights, without autocast
        h = self.lora_down(x)
        if self.training and self.dropout:
            h = F.dropout(h, p=self.dropout)
        # A 0-dim tensor on the weights' device: `self.scale` (float(alpha)) would make CUDA wait for
        # the GPU at every LoRA layer of every forward.
        scale = self.alpha * (self.multiplier / self.dim)
        if self.training and self.rank_dropout:
            # One Bernoulli keep-mask per (sample, rank); the surviving ranks stand in for all of them.
            keep = torch.rand((h.shape[0], self.dim), device=h.device) > self.rank_dropout
            if h.dim() == 3:  # (B, T, r): tokens
                keep = keep[:, None, :]
            elif h.dim() == 4:  # (B, r, H, W): conv
                keep = keep[:, :, None, None]
            h = h * keep.to(h.dtype)
            scale = scale / (1.0 - self.rank_dropout)
        # The scale goes on the (out, dim) up weight, not on the (B, T, out) delta: a tiny multiply
        # instead of a full pass over the layer's output in forward and another in backward.
        up = self.lora_up.weight * scale
        return F.conv2d(h, up) if self.is_conv else F.linear(h, up)

    @torch.no_grad()
    def delta_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The merged weight delta, shaped like the base weight, times multiplier * scale.

        Linear and 1x1: up @ down. kxk: dW[o, i] = sum_r up[o, r] * down[r, i] (the up conv is 1x1,
        so the composition of the two convs is exactly this kernel).
        """
        down = self.lora_down.weight.to(dtype)
        up = self.lora_up.weight.to(dtype)
        if self.is_conv:
            dw = torch.einsum("or,rikl->oikl", up.flatten(1), down)  # (out, in, kh, kw)
        else:
            dw = up @ down  # (out, in)
        return dw * (self.multiplier * self.scale)
