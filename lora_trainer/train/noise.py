"""The training math of one step: noise, timesteps, targets and the loss (kohya-format.md §3.1-3.2).

Small pure functions over tensors. `alphas_cumprod` is the schedule's alpha_bar (float32, length
1000; `NoiseSchedule.alphas_cumprod()`, rescaled for zero-terminal-SNR models). All randomness
comes from the `torch.Generator` passed in, so a step can be replayed.

Shapes: latents x0 (B, C, H, W); timesteps t (B,) int64; per-sample values (B,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

V_PRED_SNR_CAP = 1000.0  # kohya caps SNR here in scale_v_pred_loss_like_noise_pred


def _bcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) in `like`'s device and dtype."""
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.ndim - 1)))


def sample_timesteps(batch: int, generator: torch.Generator | None = None, min_t: int = 0, max_t: int = 1000) -> torch.Tensor:
    """Uniform integer timesteps in [min_t, max_t) (kohya `torch.randint(min_timestep, max_timestep)`)."""
    return torch.randint(min_t, max_t, (batch,), generator=generator)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (Ho et al. 2020, eq. 4)."""
    ab = alphas_cumprod.to(x0.device)[t.to(x0.device)]
    return _bcast(ab.sqrt(), x0) * x0 + _bcast((1 - ab).sqrt(), x0) * noise


def velocity(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0, the v-prediction target (Salimans & Ho 2022)."""
    ab = alphas_cumprod.to(x0.device)[t.to(x0.device)]
    return _bcast(ab.sqrt(), x0) * noise - _bcast((1 - ab).sqrt(), x0) * x0


def snr(t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SNR_t = ab_t / (1 - ab_t), (B,) float32 (0 at the last step of a zero-terminal-SNR schedule)."""
    ab = alphas_cumprod.double()[t.cpu()]
    return (ab / (1 - ab)).float()


def min_snr_weights(t: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float, v_prediction: bool = False) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023; kohya `apply_snr_weight`), (B,).

    eps: min(SNR, g) / SNR, written as 1 where SNR <= g so SNR 0 gives 1 (its limit) not NaN.
    v:   min(SNR, g) / (SNR + 1).
    """
    s = snr(t, alphas_cumprod)
    if v_prediction:
        return torch.minimum(s, torch.tensor(gamma)) / (s + 1)
    return torch.where(s <= gamma, torch.ones_like(s), gamma / s.clamp_min(1e-20))


def v_pred_like_noise_pred_weights(t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """SNR / (SNR + 1) with SNR capped at 1000 (kohya `scale_v_prediction_loss_like_noise_prediction`), (B,)."""
    s = snr(t, alphas_cumprod).clamp_max(V_PRED_SNR_CAP)
    return s / (s + 1)


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """noise + offset x randn(B, C, 1, 1): one constant shift per sample and channel (kohya --noise_offset)."""
    b, c = noise.shape[:2]
    shift = torch.randn((b, c, 1, 1), generator=generator).to(noise.device, noise.dtype)
    return noise + offset * shift


def pyramid_noise(
    noise: torch.Tensor, iterations: int = 6, discount: float = 0.3, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Multi-resolution noise (kohya `pyramid_noise_like`, after Whitaker's "multi-resolution noise").

    For i in 0..n-1, noise at 1/r^i the size (r uniform in [2, 4)) is upsampled bilinearly and added
    with weight discount^i; stop once a side reaches 1; divide by the std of the whole tensor.
    """
    b, c, h, w = noise.shape
    out = noise.clone()
    for i in range(iterations):
        r = float(torch.rand((), generator=generator)) * 2 + 2
        hn, wn = max(1, int(h / r**i)), max(1, int(w / r**i))
        low = torch.randn((b, c, hn, wn), generator=generator).to(noise.device, torch.float32)
        up = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        out = out + (up * discount**i).to(out.dtype)
        if hn == 1 or wn == 1:
            break
    return out / out.std()


@dataclass(frozen=True)
class NoiseOptions:
    """The noise settings of a run (TrainConfig fields of the same names)."""

    noise_offset: float = 0.0  # 0 = off
    multires_noise_iterations: int = 0  # 0 = off; the XL guide uses 6
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float = 0.0  # input perturbation (Ning et al. 2023); 0 = off
    min_timestep: int = 0
    max_timestep: int = 1000
    v_prediction: bool = False


@dataclass
class NoisedBatch:
    noisy: torch.Tensor  # x_t fed to the UNet, (B, C, H, W)
    target: torch.Tensor  # eps or v, (B, C, H, W)
    timesteps: torch.Tensor  # (B,) int64
    noise: torch.Tensor  # the eps the target is built from


def noise_batch(
    x0: torch.Tensor, alphas_cumprod: torch.Tensor, options: NoiseOptions, generator: torch.Generator | None = None
) -> NoisedBatch:
    """Noise latents for one training step, in kohya's order: randn, offset, pyramid, timesteps,
    then x_t (with input perturbation only in x_t, never in the target).

    The generator lives on the CPU; random tensors are drawn there and moved, so the numbers do
    not depend on the device.
    """
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    if options.noise_offset:
        noise = offset_noise(noise, options.noise_offset, generator)
    if options.multires_noise_iterations:
        noise = pyramid_noise(noise, options.multires_noise_iterations, options.multires_noise_discount, generator)
    t = sample_timesteps(x0.shape[0], generator, options.min_timestep, options.max_timestep).to(x0.device)
    if options.ip_noise_gamma:
        extra = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        noisy = add_noise(x0, noise + options.ip_noise_gamma * extra, t, alphas_cumprod)
    else:
        noisy = add_noise(x0, noise, t, alphas_cumprod)
    target = velocity(x0, noise, t, alphas_cumprod) if options.v_prediction else noise
    return NoisedBatch(noisy, target, t, noise)


def loss_weights(
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    min_snr_gamma: float = 0.0,
    v_prediction: bool = False,
    scale_v_pred_like_noise_pred: bool = False,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample weights (B,): prior_loss_weight per sample, x min-SNR, x v-pred scaling (kohya's order)."""
    w = torch.ones(t.shape[0]) if sample_weights is None else sample_weights.float().cpu()
    if min_snr_gamma:
        w = w * min_snr_weights(t.cpu(), alphas_cumprod, min_snr_gamma, v_prediction)
    if v_prediction and scale_v_pred_like_noise_pred:
        w = w * v_pred_like_noise_pred_weights(t.cpu(), alphas_cumprod)
    return w


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise squared error in float32, mean over C, H, W: (B,)."""
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))


def training_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The step's loss: per-sample MSE x weights, mean over the batch (a 0-dim float32 tensor)."""
    per = per_sample_mse(pred, target)
    if weights is not None:
        per = per * weights.to(per.device)
    return per.mean()
