"""Sampling in the k-diffusion style: a denoiser, classifier-free guidance, and samplers.

The pieces, smallest first:
- `get_scalings(sigma, prediction)`: the one place where eps- and v-prediction differ.
- `DiscreteDenoiser`: turns a UNet (x_t, t, cond) -> eps | v into a plain callable
  (x, sigma, **cond) -> denoised x, converting sigma to the model's (fractional) timestep.
- `CFGDenoiser`: classifier-free guidance around it, uncond and cond in one batch.
- `sample_euler`, `sample_euler_ancestral`, `sample_dpmpp_2m`: one signature
  `(model, x, sigmas, extra_args=None, callback=None, ...)`; progress and cancel are the callback.
- `generate(bundle, prompt, ...)`: a seeded, reproducible txt2img image from a `ModelBundle`.

Randomness comes from a CPU `torch.Generator` seeded once per image (initial noise, then the
ancestral noise), so the same seed gives the same image on CPU and GPU up to kernel rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import StudioError
from ..infotext import format_infotext, number
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from . import schedule as sched

if TYPE_CHECKING:
    from PIL import Image

    from .bundle import ModelBundle

PREDICTIONS = ("eps", "v")


# ---- 1. the denoiser -------------------------------------------------------------------------


def get_scalings(sigma: torch.Tensor, prediction: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) with denoised = c_skip * x + c_out * model(c_in * x) (Karras et al. 2022, table 1).

    eps: the model predicts the noise, denoised = x - sigma * eps.
    v:   the model predicts v = sqrt(a) eps - sqrt(1 - a) x0 with a = 1 / (sigma^2 + 1)
         (Salimans & Ho 2022), which gives the sigma_data = 1 scalings below.
    """
    c_in = 1 / (sigma**2 + 1) ** 0.5
    if prediction == "eps":
        return torch.ones_like(sigma), -sigma, c_in
    if prediction == "v":
        return 1 / (sigma**2 + 1), -sigma * c_in, c_in
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """Append singleton dims to x until it has target_dims dims (for per-sample sigmas)."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * missing]


ModelFn = Callable[..., torch.Tensor]  # (x_in, t, **cond) -> eps or v, same shape as x_in


class DiscreteDenoiser:
    """A model trained on 1000 discrete timesteps as a continuous-sigma denoiser (k-diffusion DiscreteSchedule)."""

    def __init__(self, model_fn: ModelFn, sigmas: torch.Tensor, prediction: str):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.model_fn = model_fn
        self.sigmas = sigmas.float()  # ascending, one per training timestep
        self.prediction = prediction

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in get_scalings(sigma.float(), self.prediction))
        t = sched.sigma_to_t(sigma, self.sigmas)
        out = self.model_fn(x * c_in, t, **cond).float()
        return x * c_skip + out * c_out


def _batch_cond(a: dict, b: dict) -> dict | None:
    """Concatenate two condition dicts along the batch, or None when they can not share a batch."""
    if a.keys() != b.keys():
        return None
    out = {}
    for k, va in a.items():
        vb = b[k]
        if va is None or vb is None:
            if va is not vb:
                return None
            out[k] = None
        elif va.shape[1:] != vb.shape[1:]:  # e.g. prompts of 77 and 154 tokens
            return None
        else:
            out[k] = torch.cat([va, vb])
    return out


class CFGDenoiser:
    """Classifier-free guidance: uncond + (cond - uncond) * scale (Ho & Salimans 2022).

    Called as `model(x, sigma, cond=..., uncond=..., cond_scale=...)` where cond/uncond are the
    keyword arguments of the inner denoiser (e.g. {"context": ..., "y": ...}). Uncond and cond run
    as one batch when their shapes allow; with cond_scale == 1 only the conditional pass runs.
    """

    def __init__(self, inner: DiscreteDenoiser):
        self.inner = inner

    def __call__(self, x, sigma, cond: dict, uncond: dict | None = None, cond_scale: float = 1.0):
        if uncond is None or cond_scale == 1.0:
            return self.inner(x, sigma, **cond)
        both = _batch_cond(uncond, cond)
        if both is None:
            u = self.inner(x, sigma, **uncond)
            c = self.inner(x, sigma, **cond)
        else:
            u, c = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), **both).chunk(2)
        return u + (c - u) * cond_scale


# ---- 2. samplers -----------------------------------------------------------------------------

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (sigma, sigma_next) -> noise like x


def default_noise_sampler(x: torch.Tensor, generator: torch.Generator | None = None) -> NoiseSampler:
    """Fresh Gaussian noise shaped like x; from `generator` (a CPU generator) when given."""

    def sample(sigma, sigma_next):
        if generator is None:
            return torch.randn_like(x)
        return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)

    return sample


def get_ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """(sigma_down, sigma_up) for an ancestral step from sigma_from to sigma_to (k-diffusion)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, algorithm 2 without churn)."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        d = (x - denoised) / sigma
        x = x + d * (sigma_next - sigma)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, eta=1.0, s_noise=1.0, noise_sampler=None):
    """Ancestral sampling with Euler steps (k-diffusion; Song et al. 2021 ancestral sampling)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        d = (x - denoised) / sigma
        x = x + d * (sigma_down - sigma)
        if sigma_next > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None):
    """DPM-Solver++(2M), multistep second order in log-sigma time (Lu et al. 2022, algorithm 2)."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    h_last = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_next == 0:  # the last step returns the denoised image
            x = denoised
            break
        h = math.log(sigma) - math.log(sigma_next)  # t = -log(sigma); h = t_next - t
        if old_denoised is None:
            denoised_d = denoised
        else:
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - math.expm1(-h) * denoised_d
        old_denoised, h_last = denoised, h
    return x


# WebUI names -> sampler functions, so infotext and the CLI speak the WebUI's language.
SAMPLERS: dict[str, Callable] = {
    "Euler": sample_euler,
    "Euler a": sample_euler_ancestral,
    "DPM++ 2M": sample_dpmpp_2m,
}

# scheduler key -> the label A1111 writes as "Schedule type"
SCHEDULERS: dict[str, str] = {"karras": "Karras", "exponential": "Exponential", "uniform": "Uniform"}


def get_sigmas(scheduler: str, steps: int, model_sigmas: torch.Tensor) -> torch.Tensor:
    """The steps + 1 sigmas (last 0) of a named schedule over a model's sigma range."""
    sigma_min, sigma_max = float(model_sigmas[0]), float(model_sigmas[-1])
    if scheduler == "karras":
        return sched.get_sigmas_karras(steps, sigma_min, sigma_max)
    if scheduler == "exponential":
        return sched.get_sigmas_exponential(steps, sigma_min, sigma_max)
    if scheduler == "uniform":
        return sched.get_sigmas_uniform(steps, model_sigmas)
    raise StudioError(f"Unknown scheduler {scheduler!r}.", f"Use one of: {', '.join(SCHEDULERS)}.")


def resolve_sampler(name: str) -> Callable:
    """A sampler by its WebUI name, case-insensitively ("dpm++ 2m", "euler_a" also work)."""
    key = name.strip().lower().replace("_", " ")
    for label, fn in SAMPLERS.items():
        if key in (label.lower(), fn.__name__.removeprefix("sample_").replace("_", " ")):
            return fn
    if key == "euler ancestral":
        return sample_euler_ancestral
    raise StudioError(f"Unknown sampler {name!r}.", f"Use one of: {', '.join(SAMPLERS)}.")


def sampler_label(name: str) -> str:
    """The WebUI name of a sampler, as written in infotext."""
    fn = resolve_sampler(name)
    return next(label for label, f in SAMPLERS.items() if f is fn)


# ---- 3. generate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationParams:
    """Everything that determines an image; `infotext()` writes it the way the WebUI does."""

    prompt: str
    negative: str = ""
    seed: int = 1
    steps: int = 20
    cfg: float = 7.0
    width: int = 512
    height: int = 512
    sampler: str = "DPM++ 2M"
    scheduler: str = "karras"
    model_hash: str = ""  # first 10 hex digits of the checkpoint file's sha256 (A1111 "shorthash")
    model_name: str = ""  # the checkpoint file's stem
    loras: tuple[tuple[str, float], ...] = ()  # (file, weight) applied during sampling
    extra: dict[str, str] = field(default_factory=dict)  # more "Key: value" pairs, appended in order

    def infotext(self) -> str:
        """A1111's PNG "parameters" text (modules/processing.py `create_infotext`)."""
        pairs: list[tuple[str, str]] = [
            ("Steps", str(self.steps)),
            ("Sampler", sampler_label(self.sampler)),
            ("Schedule type", SCHEDULERS.get(self.scheduler, self.scheduler)),
            ("CFG scale", number(self.cfg)),
            ("Seed", str(self.seed)),
            ("Size", f"{self.width}x{self.height}"),
        ]
        if self.model_hash:
            pairs.append(("Model hash", self.model_hash))
        if self.model_name:
            pairs.append(("Model", self.model_name))
        pairs.append(("RNG", "CPU"))  # our noise comes from a CPU generator, like A1111's "CPU" source
        pairs.extend(self.extra.items())
        prompt = self.prompt + "".join(f" <lora:{Path(p).stem}:{number(w)}>" for p, w in self.loras)
        return format_infotext(prompt, self.negative, pairs)


def generate(
    bundle: ModelBundle,
    prompt: str,
    negative: str = "",
    seed: int = 1,
    steps: int = 20,
    cfg: float = 7.0,
    width: int = 512,
    height: int = 512,
    sampler: str = "DPM++ 2M",
    scheduler: str = "karras",
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    emphasis: bool = False,
) -> Image.Image:
    """One txt2img image, reproducible for a seed; see `generate_latents` for the steps. LoRAs are
    the caller's: applied to the bundle around the call (network.io.apply_loras)."""
    latents = generate_latents(
        bundle, prompt, negative, seed, steps, cfg, width, height, sampler, scheduler, progress, cancel,
        emphasis=emphasis,
    )
    return latents_to_pil(bundle, latents)


def generate_latents(
    bundle: ModelBundle,
    prompt: str,
    negative: str = "",
    seed: int = 1,
    steps: int = 20,
    cfg: float = 7.0,
    width: int = 512,
    height: int = 512,
    sampler: str = "DPM++ 2M",
    scheduler: str = "karras",
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    emphasis: bool = False,
) -> torch.Tensor:
    """The denoised latents (1, C, H/8, W/8) of one txt2img generation.

    emphasis=True reads A1111's `(word:1.2)`, `[word]`, escapes and BREAK in both prompts
    (models/prompt_weights.py); False reads them as plain text."""
    _check_size(width, height, 8 * 2 ** (len(bundle.unet.config.channel_mult) - 1))
    if steps < 1:
        raise StudioError(f"Steps must be at least 1, got {steps}.", "Use 20 or more steps for real images.")
    sample_fn = resolve_sampler(sampler)
    sigmas = get_sigmas(scheduler, steps, bundle.schedule.sigmas())

    # 1. conditioning: cond and uncond at this image's size (SDXL's size embedding)
    cond = bundle.unet_kwargs(bundle.encode_prompts([prompt], width=width, height=height, emphasis=emphasis))
    uncond = None
    if cfg != 1.0:
        uncond = bundle.unet_kwargs(
            bundle.encode_prompts([negative], width=width, height=height, is_negative=True, emphasis=emphasis)
        )

    # 2. initial noise from a CPU generator, so the seed means the same on every device
    gen = torch.Generator("cpu").manual_seed(int(seed))
    shape = (1, bundle.latent_channels, height // 8, width // 8)
    x = torch.randn(shape, generator=gen, dtype=torch.float32).to(bundle.device) * sigmas[0]

    # 3. sample
    denoiser = CFGDenoiser(DiscreteDenoiser(bundle.predict, bundle.schedule.sigmas().to(bundle.device), bundle.prediction))
    extra = {"cond": cond, "uncond": uncond, "cond_scale": float(cfg)}

    def callback(d):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(ProgressEvent(fraction=(d["i"] + 1) / steps, text=f"sampling step {d['i'] + 1}/{steps}"))

    kwargs = {}
    if sample_fn is sample_euler_ancestral:
        kwargs["noise_sampler"] = default_noise_sampler(x, gen)
    return sample_fn(denoiser, x, sigmas.to(bundle.device), extra_args=extra, callback=callback, **kwargs)


def latents_to_pil(bundle: ModelBundle, latents: torch.Tensor) -> Image.Image:
    """Decode one latent with the bundle's VAE and convert [-1, 1] to an 8-bit RGB image."""
    from PIL import Image

    with torch.no_grad():
        img = bundle.decode_latents(latents)[0].float()
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def _check_size(width: int, height: int, multiple: int) -> None:
    """The UNet halves the latents at each level and must double them back to the same size."""
    for name, v in (("width", width), ("height", height)):
        if v < multiple or v % multiple:
            raise StudioError(
                f"Image {name} {v} is not a positive multiple of {multiple}, which this model needs.",
                f"Round it to a multiple of {multiple} (e.g. {max(multiple, round(v / multiple) * multiple)}).",
            )


def save_png(image: Image.Image, path: str | Path, parameters: str) -> None:
    """Write `image` atomically with `parameters` in the PNG text chunk the WebUI reads."""
    from PIL import PngImagePlugin

    from ..fileio import atomic_path

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
