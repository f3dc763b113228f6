"""Scaled dot-product attention shared by the UNet and the VAE.

PyTorch's fused `scaled_dot_product_attention` is used when this torch has it (feature detection,
not a version check); otherwise a plain softmax(QK^T/sqrt(d))V runs, with a warning, since it holds
the whole (T, S) score matrix in memory.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

# Read once at import: a fact about the installed torch, never changed afterwards.
HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference attention (Vaswani et al. 2017) on (B, H, T, D) tensors."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    # Scores in fp32: fp16 logits of long sequences overflow before the softmax.
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # (B, H, T, S)
    return torch.matmul(scores.softmax(dim=-1).to(v.dtype), v)  # (B, H, T, D)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention over projected tokens.

    q: (B, T, H*D), k and v: (B, S, H*D); returns (B, T, H*D). The scale is 1/sqrt(D) as in ldm.
    """
    b, t, inner = q.shape
    if inner % heads:
        raise ValueError(f"attention width {inner} is not divisible by heads={heads}")
    d = inner // heads
    # (B, T, H*D) -> (B, H, T, D)
    q, k, v = (x.reshape(b, -1, heads, d).transpose(1, 2) for x in (q, k, v))
    if HAS_SDPA:
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        warnings.warn(
            "torch has no scaled_dot_product_attention: using slow math attention", stacklevel=2
        )
        out = _math_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, t, inner)  # (B, T, H*D)
