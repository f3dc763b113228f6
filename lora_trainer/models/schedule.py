"""The DDPM noise schedule of SD1.5 and SDXL, and the sigma schedules samplers step through.

Everything here is a small pure function of numbers (k-diffusion style). Training and sampling
use the same float64-computed, float32-returned schedule, so a trainer and the sampler never
disagree about what timestep 999 means.

Notation: alpha_bar_t = prod(1 - beta_i, i <= t); sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t),
the noise level of the "variance exploding" view x_t = x_0 + sigma_t * eps that k-diffusion uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# A1111 (modules/sd_models.py, `apply_alpha_schedule_override`) replaces the zero of a
# zero-terminal-SNR schedule with this value for sampling, because sigma would be infinite.
ZTSNR_SAMPLING_ALPHA_BAR = 4.8973451890853435e-08


@dataclass(frozen=True)
class NoiseSchedule:
    """The training schedule of a model: the same numbers for SD1.5 and SDXL, unless rescaled."""

    num_timesteps: int = 1000  # ldm/sgm configs and kohya's DDPMScheduler
    beta_start: float = 0.00085  # "linear_start" in v1-inference.yaml; "scaled linear" in diffusers
    beta_end: float = 0.012  # "linear_end"
    zero_terminal_snr: bool = False  # Lin et al. 2023 rescale, for ztsnr v-prediction models

    def betas(self) -> torch.Tensor:
        b = scaled_linear_betas(self.num_timesteps, self.beta_start, self.beta_end)
        return rescale_zero_terminal_snr(b) if self.zero_terminal_snr else b

    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t for t = 0..T-1, float32 (what the trainer noises with)."""
        return alphas_cumprod_from_betas(self.betas()).float()

    def sampling_alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar for sampling: a zero terminal value is nudged up so sigma_max stays finite."""
        acp = alphas_cumprod_from_betas(self.betas())
        if acp[-1] <= 0:
            acp = acp.clone()
            acp[-1] = ZTSNR_SAMPLING_ALPHA_BAR
        return acp.float()

    def sigmas(self) -> torch.Tensor:
        """sigma_t for t = 0..T-1 (ascending), float32, from `sampling_alphas_cumprod`."""
        return sigmas_from_alphas_cumprod(self.sampling_alphas_cumprod())


def scaled_linear_betas(n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Betas linear in sqrt space (Rombach et al. 2022, ldm `make_beta_schedule("linear")`), float64."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """alpha_bar_t = prod_{i<=t} (1 - beta_i) (Ho et al. 2020, eq. 4)."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so the last step has SNR 0 (Lin et al. 2023, algorithm 1)."""
    sqrt_acp = alphas_cumprod_from_betas(betas).sqrt()
    first, last = sqrt_acp[0].clone(), sqrt_acp[-1].clone()
    sqrt_acp = (sqrt_acp - last) * first / (first - last)  # keeps step 0, zeroes step T-1
    acp = sqrt_acp**2
    alphas = torch.cat([acp[:1], acp[1:] / acp[:-1]])
    return 1.0 - alphas


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (Karras et al. 2022, VP as VE), float32."""
    acp = alphas_cumprod.double()
    return ((1 - acp) / acp).sqrt().float()


def sigma_to_t(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Fractional timestep of `sigma` by linear interpolation in log sigma (k-diffusion DiscreteSchedule)."""
    log_sigmas = sigmas.log().to(sigma.device)
    log_sigma = sigma.float().log()
    dists = log_sigma - log_sigmas[:, None]
    low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = ((low - log_sigma) / (low - high)).clamp(0, 1)
    t = (1 - w) * low_idx + w * high_idx
    return t.view(sigma.shape)


def t_to_sigma(t: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """sigma at a fractional timestep, interpolating log sigma (k-diffusion DiscreteSchedule)."""
    log_sigmas = sigmas.log().to(t.device)
    t = t.float()
    low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low_idx] + w * log_sigmas[high_idx]).exp()


def append_zero(x: torch.Tensor) -> torch.Tensor:
    """Sigma schedules end at 0: the last step returns the denoised image."""
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """n sigmas spaced evenly in sigma^(1/rho), then 0 (Karras et al. 2022, eq. 5)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return append_zero(sigmas.float())


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n sigmas evenly spaced in log sigma, then 0 (k-diffusion `get_sigmas_exponential`)."""
    sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()
    return append_zero(sigmas.float())


def get_sigmas_uniform(n: int, sigmas: torch.Tensor) -> torch.Tensor:
    """n sigmas at timesteps evenly spaced from T-1 to 0, then 0 (k-diffusion `DiscreteSchedule.get_sigmas`)."""
    t = torch.linspace(sigmas.shape[0] - 1, 0, n)
    return append_zero(t_to_sigma(t, sigmas))
