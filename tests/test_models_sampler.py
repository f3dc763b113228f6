"""Noise schedule numbers, the eps/v denoiser math, CFG, samplers and seeded generation."""

from __future__ import annotations

import math

import pytest
import torch

from lora_trainer.errors import Cancelled, StudioError
from lora_trainer.models import sampler as K
from lora_trainer.models import schedule as S
from lora_trainer.models.bundle import bundle_from_state_dict
from lora_trainer.models.demo import demo_state_dict
from lora_trainer.progress import CancelToken


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids oversubscription stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# ---- schedule


def test_sd_schedule_numbers():
    s = S.NoiseSchedule()
    acp = s.alphas_cumprod()
    assert acp.dtype == torch.float32 and acp.shape == (1000,)
    assert acp[0].item() == pytest.approx(1 - 0.00085, abs=1e-7)  # first beta is beta_start
    # alpha_bar_999 = prod(1 - beta_i), betas linear in sqrt between 0.00085 and 0.012
    betas = [(0.00085**0.5 + i / 999 * (0.012**0.5 - 0.00085**0.5)) ** 2 for i in range(1000)]
    assert acp[999].item() == pytest.approx(math.prod(1 - b for b in betas), rel=1e-5)
    assert acp[999].item() == pytest.approx(0.0046601, rel=1e-4)
    sig = s.sigmas()
    assert sig[-1].item() == pytest.approx(14.6146, abs=1e-3)  # A1111 / k-diffusion sigma_max for SD
    assert sig[0].item() == pytest.approx(0.0291675, abs=1e-6)


def test_zero_terminal_snr_rescale():
    z = S.NoiseSchedule(zero_terminal_snr=True)
    acp = z.alphas_cumprod()
    assert acp[-1].item() == 0.0
    assert acp[0].item() == pytest.approx(S.NoiseSchedule().alphas_cumprod()[0].item(), rel=1e-6)
    assert bool((acp[1:] < acp[:-1]).all())
    # sampling replaces the zero as A1111 does, so sigma_max is finite
    assert z.sampling_alphas_cumprod()[-1].item() == pytest.approx(S.ZTSNR_SAMPLING_ALPHA_BAR)
    assert z.sigmas()[-1].item() == pytest.approx(4518.76, rel=1e-4)


def test_karras_sigmas_formula():
    smin, smax, rho = 0.0292, 14.6146, 7.0
    sig = S.get_sigmas_karras(3, smin, smax, rho)
    mid = ((smax ** (1 / rho) + smin ** (1 / rho)) / 2) ** rho
    assert sig.tolist() == pytest.approx([smax, mid, smin, 0.0], rel=1e-6)
    exp = S.get_sigmas_exponential(3, smin, smax)
    assert exp.tolist() == pytest.approx([smax, math.sqrt(smin * smax), smin, 0.0], rel=1e-6)


def test_sigma_t_round_trip():
    sigmas = S.NoiseSchedule().sigmas()
    t = torch.tensor([0.0, 1.0, 500.0, 999.0])
    assert S.t_to_sigma(t, sigmas).tolist() == pytest.approx(sigmas[[0, 1, 500, 999]].tolist(), rel=1e-5)
    assert S.sigma_to_t(sigmas[[0, 1, 500, 999]], sigmas).tolist() == pytest.approx(t.tolist(), abs=1e-3)
    frac = torch.tensor([123.25, 700.5])
    assert S.sigma_to_t(S.t_to_sigma(frac, sigmas), sigmas).tolist() == pytest.approx(frac.tolist(), abs=1e-3)
    uni = S.get_sigmas_uniform(5, sigmas)
    assert uni[0].item() == pytest.approx(sigmas[-1].item(), rel=1e-5) and uni[-1].item() == 0.0


# ---- denoiser


def test_scalings_known_values():
    c_skip, c_out, c_in = K.get_scalings(torch.tensor([1.0]), "v")
    assert (c_skip.item(), c_out.item(), c_in.item()) == pytest.approx((0.5, -1 / math.sqrt(2), 1 / math.sqrt(2)))
    c_skip, c_out, c_in = K.get_scalings(torch.tensor([2.0]), "eps")
    assert (c_skip.item(), c_out.item(), c_in.item()) == pytest.approx((1.0, -2.0, 1 / math.sqrt(5)))


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_denoiser_recovers_x0_from_the_true_prediction(prediction):
    """A model that returns the exact eps (or v) for x_t gives back x0 for every sigma."""
    sigmas = S.NoiseSchedule().sigmas()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    s4 = sigma[:, None, None, None]
    x = x0 + s4 * eps  # k-diffusion's x; the model sees x / sqrt(sigma^2 + 1) = sqrt(a) x0 + sqrt(1-a) eps
    a = 1 / (s4**2 + 1)
    target = eps if prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0

    def model_fn(x_in, t):
        assert torch.allclose(x_in, a.sqrt() * x0 + (1 - a).sqrt() * eps, atol=1e-5)
        return target

    den = K.DiscreteDenoiser(model_fn, sigmas, prediction)
    assert torch.allclose(den(x, sigma), x0, atol=1e-5)


def test_cfg_one_is_the_conditional_prediction_and_batching_matches():
    calls = []

    def model_fn(x, t, context, y=None):
        calls.append(x.shape[0])
        return x * context.mean(dim=(1, 2))[:, None, None, None] + t[:, None, None, None] * 1e-3

    den = K.DiscreteDenoiser(model_fn, S.NoiseSchedule().sigmas(), "eps")
    cfg = K.CFGDenoiser(den)
    x, sigma = torch.randn(1, 4, 2, 2), torch.tensor([3.0])
    cond, uncond = {"context": torch.full((1, 77, 8), 0.5), "y": None}, {"context": torch.full((1, 77, 8), -0.25), "y": None}
    assert torch.equal(cfg(x, sigma, cond=cond, uncond=uncond, cond_scale=1.0), den(x, sigma, **cond))
    assert calls == [1, 1]  # scale 1: one conditional pass, no uncond
    out = cfg(x, sigma, cond=cond, uncond=uncond, cond_scale=7.0)
    assert calls[-1] == 2  # one batch of uncond + cond
    u, c = den(x, sigma, **uncond), den(x, sigma, **cond)
    assert torch.allclose(out, u + (c - u) * 7.0, atol=1e-5)
    # prompts of different lengths can not share a batch: two passes, same result
    long_uncond = {"context": torch.full((1, 154, 8), -0.25), "y": None}
    out2 = cfg(x, sigma, cond=cond, uncond=long_uncond, cond_scale=7.0)
    assert calls[-2:] == [1, 1] and torch.allclose(out2, out, atol=1e-5)


@pytest.mark.parametrize("fn", [K.sample_euler, K.sample_euler_ancestral, K.sample_dpmpp_2m])
def test_samplers_reach_a_point_distribution(fn):
    """If every image is x0, the ideal denoiser returns x0 and every sampler must end there."""
    x0 = torch.tensor([[[[0.3, -0.7]]]])
    sigmas = S.get_sigmas_karras(6, 0.03, 14.6)
    x = torch.randn(1, 1, 1, 2, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    seen = []
    out = fn(lambda x, s: x0.expand_as(x), x, sigmas, callback=lambda d: seen.append(d["i"]))
    assert torch.allclose(out, x0, atol=1e-5) and seen == list(range(6))


def test_ancestral_step():
    down, up = K.get_ancestral_step(2.0, 1.0, eta=1.0)
    assert down**2 + up**2 == pytest.approx(1.0) and up == pytest.approx(math.sqrt(3) / 2)
    assert K.get_ancestral_step(2.0, 1.0, eta=0.0) == (1.0, 0.0)


def test_sampler_and_scheduler_names():
    assert K.resolve_sampler("dpm++ 2m") is K.sample_dpmpp_2m
    assert K.resolve_sampler("euler_a") is K.sample_euler_ancestral
    assert K.sampler_label("euler ancestral") == "Euler a"
    with pytest.raises(StudioError, match="DPM\\+\\+ 2M"):
        K.resolve_sampler("UniPC")
    with pytest.raises(StudioError, match="karras"):
        K.get_sigmas("beta", 10, S.NoiseSchedule().sigmas())


# ---- generate on a tiny model


@pytest.fixture(scope="module")
def tiny15():
    return bundle_from_state_dict(demo_state_dict("sd15", seed=0)).to(dtype=torch.float32)


def _gen(bundle, **kw):
    args = {"prompt": "a red cube", "negative": "blurry", "seed": 1, "steps": 3, "cfg": 5.0, "width": 64, "height": 64}
    args.update(kw)
    return K.generate_latents(bundle, **args)


def test_generate_is_seeded(tiny15):
    a, b, c = _gen(tiny15), _gen(tiny15), _gen(tiny15, seed=2)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    ea1, ea2 = _gen(tiny15, sampler="Euler a"), _gen(tiny15, sampler="Euler a")
    assert torch.equal(ea1, ea2) and not torch.allclose(ea1, a)
    img = K.generate(tiny15, "a red cube", seed=1, steps=2, width=128, height=64)
    assert img.size == (128, 64) and img.mode == "RGB"


def test_generate_progress_and_cancel(tiny15):
    events = []
    _gen(tiny15, progress=events.append)
    assert [e.fraction for e in events] == pytest.approx([1 / 3, 2 / 3, 1.0])
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        _gen(tiny15, cancel=token)


def test_generate_rejects_bad_sizes(tiny15):
    with pytest.raises(StudioError, match="multiple of 64"):
        _gen(tiny15, width=96)


def test_a_missing_lora_file_is_named(tiny15, tmp_path):
    from lora_trainer.network.io import apply_loras  # the caller applies LoRAs around generate()

    with pytest.raises(StudioError, match="x.safetensors does not exist"):
        with apply_loras(tiny15, [(str(tmp_path / "x.safetensors"), 0.8)], mode="hooks"):
            _gen(tiny15)


def test_infotext_matches_the_webui_format():
    p = K.GenerationParams(
        prompt="1girl, solo", negative="lowres", seed=1, steps=20, cfg=7.0, width=512, height=768,
        model_hash="0123456789", model_name="tiny15", loras=(("/x/my_lora-03.safetensors", 0.8),),
    )
    assert p.infotext() == (
        "1girl, solo <lora:my_lora-03:0.8>\n"
        "Negative prompt: lowres\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, "
        "Model hash: 0123456789, Model: tiny15, RNG: CPU"
    )
    q = K.GenerationParams(prompt="x", cfg=7.5, sampler="euler a", scheduler="uniform", extra={"Note": "a, b"})
    assert q.infotext() == 'x\nSteps: 20, Sampler: Euler a, Schedule type: Uniform, CFG scale: 7.5, Seed: 1, Size: 512x512, RNG: CPU, Note: "a, b"'
