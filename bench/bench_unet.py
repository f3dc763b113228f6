"""UNet forward time: our ldm-named UNet beside diffusers' UNet2DConditionModel, same weights.

    python bench/bench_unet.py                    # CUDA: SD1.5 at 512px and SDXL at 1024px, fp16
    python bench/bench_unet.py --arch sd15        # CPU: a reduced latent size, fp32 (said in the output)

Weights are random (no downloads). diffusers' model is built on the meta device and given our
tensors through its own single-file converter, so both models share one copy of the weights.
Timings alternate between the two models and report the median, so background load hits both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# Run as a script from anywhere: make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lora_trainer.models.unet import (
    SDXL_SIZE_EMBED_DIM,
    UNet,
    UNetConfig,
    timestep_embedding,
)

# Latent side at the native resolution: 512 px / 8 for SD1.5, 1024 px / 8 for SDXL.
NATIVE_LATENT = {"sd15": 64, "sdxl": 128}
# On CPU a full-size forward takes minutes; this keeps a run short while every layer still runs.
CPU_LATENT = 32


def timed(fn, device: torch.device) -> float:
    """Seconds one call of fn takes, with CUDA's queue drained before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def diffusers_twin(cfg: UNetConfig, ours: UNet):
    """diffusers' UNet holding our tensors (no copy)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from tests.test_models_unet import diffusers_kwargs  # the configuration the equivalence tests prove

    kwargs = diffusers_kwargs(cfg)
    with torch.device("meta"):
        ref = UNet2DConditionModel(**kwargs)
    checkpoint = {"model.diffusion_model." + k: v for k, v in ours.state_dict().items()}
    ref.load_state_dict(convert_ldm_unet_checkpoint(checkpoint, kwargs), strict=True, assign=True)
    return ref.eval()


def bench_arch(arch: str, device: torch.device, dtype: torch.dtype, latent: int, batch: int, iters: int) -> None:
    cfg = UNetConfig.sd15() if arch == "sd15" else UNetConfig.sdxl()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    ours = UNet(cfg).to(device=device, dtype=dtype).eval()
    ref = diffusers_twin(cfg, ours)
    print(f"{arch}: built both models in {time.perf_counter() - t0:.1f} s")

    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, latent, latent, generator=g).to(device, dtype)
    t = torch.full((batch,), 500, device=device)
    ctx = torch.randn(batch, 77, cfg.context_dim, generator=g).to(device, dtype)
    ours_kw, ref_kw = {}, {}
    if cfg.adm_in_channels is not None:
        pooled = torch.randn(batch, cfg.adm_in_channels - SDXL_SIZE_EMBED_DIM, generator=g).to(device, dtype)
        side = float(latent * 8)
        time_ids = torch.tensor([[side, side, 0.0, 0.0, side, side]] * batch, device=device)
        sizes = timestep_embedding(time_ids.flatten(), 256).reshape(batch, -1).to(dtype)
        ours_kw["y"] = torch.cat([pooled, sizes], dim=1)
        ref_kw["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}

    def run_ours():
        return ours(x, t, ctx, **ours_kw)

    def run_ref():
        return ref(x, t, encoder_hidden_states=ctx, **ref_kw).sample


    with torch.inference_mode():
        # Warm-up: kernel selection, allocator growth, lazy inits.
        a, b = run_ours(), run_ref()
        diff = (a.float() - b.float()).abs().max().item()
        times_ours, times_ref = [], []
        for _ in range(iters):
            times_ours.append(timed(run_ours, device) * 1000.0)  # ms
            times_ref.append(timed(run_ref, device) * 1000.0)
    ms_ours, ms_ref = statistics.median(times_ours), statistics.median(times_ref)
    print(
        f"{arch}: batch {batch}, latent {latent}x{latent} ({latent * 8}px), {dtype}, {device.type}: "
        f"ours {ms_ours:.1f} ms, diffusers {ms_ref:.1f} ms, ratio ours/diffusers {ms_ours / ms_ref:.3f}, "
        f"max |diff| {diff:.2e}"
    )
    if device.type == "cuda":
        print(f"{arch}: peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, help="sd15, sdxl or sd15,sdxl (default: both on CUDA, sd15 on CPU)")
    parser.add_argument("--latent", type=int, default=None, help="latent side (default: native on CUDA, 32 on CPU)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=None, help="timed forwards per model")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype_name = args.dtype or ("fp16" if cuda else "fp32")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    # SDXL in fp32 needs about 10 GB of RAM even with shared weights: opt in on CPU.
    archs = (args.arch or ("sd15,sdxl" if cuda else "sd15")).split(",")
    iters = args.iters or (10 if cuda else 3)
    if not cuda:
        print(
            f"No CUDA device: running on CPU with {torch.get_num_threads()} threads, random weights, at a "
            f"REDUCED latent size ({args.latent or CPU_LATENT}) instead of the native one."
        )
    for arch in archs:
        latent = args.latent or (NATIVE_LATENT[arch] if cuda else CPU_LATENT)
        bench_arch(arch, device, dtype, latent, args.batch, iters)


if __name__ == "__main__":
    main()
