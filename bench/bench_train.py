"""Training step time and memory: our loop beside a plain diffusers + peft LoRA loop, same weights.

    python bench/bench_train.py                 # CUDA: SD1.5 at 512 px, SDXL at 1024 px, fp16 autocast
    python bench/bench_train.py --arch sd15     # CPU: REDUCED resolution (256 px), fp32 (said in the output)

Real SD1.5 / SDXL UNet architectures with random weights (no checkpoint, no download). For each
setting (batch 1/2, gradient checkpointing off/on, latents cached or VAE-encoded every step) one
optimizer step is timed for:

- ours: `loop.optimizer_step` over `loop.DiffusionLoss` (our UNet, our LoRA network through forward
  hooks, min-SNR weighted loss, gradient clipping, AdamW; fused on CUDA),
- reference: diffusers' UNet2DConditionModel holding the SAME tensors (bench_unet.diffusers_twin),
  LoRA injected by peft on the same layers at the same rank (kohya's Transformer targets: attention
  q/k/v/out, proj_in/out, feed-forward), the same loss and optimizer, written as the diffusers
  examples write a training step.

Both read the same precomputed text conditioning (text encoders not trained, as in the SDXL
guide's cached-text setting) and, uncached, encode images with the same VAE. Steps alternate
between the two so background load hits both; the median is reported. Memory: on CUDA the peak
allocated above the resting state; on the CPU the peak resident memory above the resting state,
sampled every 2 ms (glibc is told to return freed tensors to the system at once, so the number
tracks live memory).

Measured on the 2-core CPU dev machine (fp32, 256 px, shared with other jobs, so +-15%):
SD1.5 ours/diffusers step time 1.03-1.13 at batch 1-2 before the LoRA scale fold and the
checkpointing policy below, 0.89 (ckpt off) and 0.99 (ckpt on) at batch 1 after, memory 0.92-1.03;
with one thread at 128 px (CPU time, 4 alternating steps) 0.90. The 0.8x target is out of reach on
this CPU: a torch.profiler step shows 94% of the time in convolution and GEMM kernels (slow_conv2d
and mkldnn convs, mm, addmm, SDPA) that both loops run with the same shapes and call counts (1152
mm, 88 addmm, 162 convs each); everything else (norms, SiLU, adds, copies, the LoRA scale, the
optimizer) is the remaining 6%. channels_last activations did not help here (same kernel choice,
NHWC 3x3 convs 0-40% slower in a micro-benchmark). What is ours: the LoRA scale multiplies the
(out, dim) up weight, not the layer's output (no full-size pass in forward or backward, and no
float(alpha) GPU sync per layer), and checkpointing skips blocks whose activations are small or
already stored (conv_in, Downsamples, SD1.5's attention-free 4x4 level: 4 MB, 0.45 s of recompute
at 256 px batch 1). No GPU numbers yet; the sync removal and the saved passes matter more there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

# Freed tensors go back to the OS at once, so resident memory follows live memory (CPU numbers).
if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and __name__ == "__main__":
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_unet import diffusers_twin, timed

from lora_trainer.models.bundle import ModelBundle
from lora_trainer.models.schedule import NoiseSchedule
from lora_trainer.models.unet import UNet, UNetConfig
from lora_trainer.models.vae import AutoencoderKL, VAEConfig
from lora_trainer.network.network import NetworkConfig, create_network_for
from lora_trainer.train import loop as L
from lora_trainer.train.data import Batch
from lora_trainer.train.lr_schedules import LRSchedule
from lora_trainer.train.noise import NoiseOptions, loss_weights

NATIVE_PX = {"sd15": 512, "sdxl": 1024}
CPU_PX = 256
GUIDE = {"sd15": (16, 8.0, 5.0), "sdxl": (8, 4.0, 8.0)}  # (dim, alpha, min-SNR gamma) of the guide's presets
PEFT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
CONTEXT_TOKENS = 227  # kohya's layout at max_token_length 225 (what our loop trains with)


# ---- memory ----------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocated, or sampled RSS on the CPU."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.base, self._stop = _rss(), threading.Event()
            self._top = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._top = max(self._top, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._top, _rss()) - self.base


# ---- the two steps ---------------------------------------------------------------------------


class FixedData:
    """Stands in for TrainData: every batch index gives the same prebuilt batch."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self.items: list = []
        self.batch_size, self.seed = len(batch), 0

    def make_batch(self, epoch: int, index: int, indices) -> Batch:
        return self.batch


def make_inputs(arch: str, batch: int, px: int, cfg: UNetConfig, device: torch.device, cached: bool):
    g = torch.Generator().manual_seed(1)
    lat = px // 8
    context = torch.randn(batch, CONTEXT_TOKENS, cfg.context_dim, generator=g)
    text = {"context": context}
    if arch == "sdxl":
        text["pooled"] = torch.randn(batch, 1280, generator=g)
    return Batch(
        epoch=1, index=0, bucket=(px, px), paths=[Path("x.png")] * batch, captions=[""] * batch,
        flipped=[False] * batch, is_regularization=[False] * batch, loss_weights=torch.ones(batch),
        original_sizes_hw=[(px, px)] * batch, crop_top_lefts=[(0, 0)] * batch, target_sizes_hw=[(px, px)] * batch,
        latents=torch.randn(batch, 4, lat, lat, generator=g) if cached else None,
        images=None if cached else torch.rand(batch, 3, px, px, generator=g) * 2 - 1,
        text=text,
    )


def ours_step(arch, unet, vae, batch, device, autocast_dtype, scaler, ckpt, dim, alpha, gamma):
    bundle = ModelBundle(arch, "eps", False, unet, (), vae, NoiseSchedule())
    network = create_network_for(arch, unet, [], NetworkConfig(dim=dim, alpha=alpha, train_text_encoder=False))
    network.to(device)
    model = L.DiffusionLoss(bundle, network, None, NoiseOptions(), NoiseSchedule().alphas_cumprod(), gamma,
                            False, False, autocast_dtype)
    optimizer = L.make_optimizer("AdamW", network.param_groups(1e-4, 0.0), {}, device)
    setup = L.LoopSetup(model=model, network=network, data=FixedData(batch), optimizer=optimizer,
                        schedule=LRSchedule("constant", 100), epochs=1, total_steps=100, scaler=scaler, device=device)
    order = [[0]]
    n_params = sum(p.numel() for p in network.parameters())
    state = {"step": 0}

    def step():
        L.set_lr(setup, state["step"])
        L.optimizer_step(setup, 1, order, 0, state["step"])
        state["step"] += 1

    def enter():
        network.attach()
        unet.set_gradient_checkpointing(ckpt)

    def leave():
        network.detach()
        unet.set_gradient_checkpointing(False)

    return step, enter, leave, n_params


def reference_step(arch, ref, vae, batch, device, autocast_dtype, scaler, ckpt, dim, alpha, gamma):
    """A diffusers-example training step (train_text_to_image_lora.py's loop body, min-SNR included)."""
    from peft import get_peft_model_state_dict

    params = [p for p in ref.parameters() if p.requires_grad]  # the LoRA peft added in build()
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(params, lr=1e-4, **fused)
    acp = NoiseSchedule().alphas_cumprod().to(device)
    dtype = next(ref.parameters()).dtype
    n_params = sum(v.numel() for v in get_peft_model_state_dict(ref).values())
    g = torch.Generator().manual_seed(2)

    def step():
        if batch.latents is not None:
            latents = batch.latents.to(device)
        else:
            with torch.no_grad():
                latents = vae.images_to_latents(batch.images.to(device)).float()
        noise = torch.randn(latents.shape, generator=g).to(device)
        t = torch.randint(0, 1000, (latents.shape[0],), generator=g).to(device)
        ab = acp[t].view(-1, 1, 1, 1)
        noisy = ab.sqrt() * latents + (1 - ab).sqrt() * noise
        kwargs = {}
        if arch == "sdxl":
            side = float(batch.bucket[0])
            time_ids = torch.tensor([[side, side, 0.0, 0.0, side, side]] * latents.shape[0], device=device)
            kwargs["added_cond_kwargs"] = {"text_embeds": batch.text["pooled"].to(device, dtype), "time_ids": time_ids}
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else torch.autocast(device.type, enabled=False)
        with ctx:
            pred = ref(noisy.to(dtype), t, encoder_hidden_states=batch.text["context"].to(device, dtype), **kwargs).sample
        w = loss_weights(t.cpu(), acp.cpu(), gamma)
        loss = (F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3)) * w.to(device)).mean()
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def enter():
        if ckpt:
            ref.enable_gradient_checkpointing()
        else:
            ref.disable_gradient_checkpointing()
        ref.train()

    def leave():
        ref.eval()

    return step, enter, leave, n_params


# ---- driver ----------------------------------------------------------------------------------


def build(arch: str, device: torch.device, dtype: torch.dtype):
    cfg = UNetConfig.sd15() if arch == "sd15" else UNetConfig.sdxl()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet(cfg).to(device=device, dtype=dtype).eval().requires_grad_(False)
    ref = diffusers_twin(cfg, unet).requires_grad_(False)
    from peft import LoraConfig

    dim, alpha, _ = GUIDE[arch]
    ref.add_adapter(LoraConfig(r=dim, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=PEFT_TARGETS))
    for p in ref.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA weights in float32, as ours
    vae = AutoencoderKL(VAEConfig.sd15() if arch == "sd15" else VAEConfig.sdxl()).to(device=device, dtype=dtype).eval().requires_grad_(False)
    print(f"{arch}: built the UNet (shared by both loops) and the VAE in {time.perf_counter() - t0:.1f} s", flush=True)
    return cfg, unet, ref, vae


def bench_setting(arch, parts, device, autocast_dtype, batch_size, px, ckpt, cached, iters) -> dict:
    cfg, unet, ref, vae = parts
    dim, alpha, gamma = GUIDE[arch]
    batch = make_inputs(arch, batch_size, px, cfg, device, cached)
    scaler = (lambda: torch.amp.GradScaler("cuda")) if autocast_dtype == torch.float16 else (lambda: None)
    ours = ours_step(arch, unet, vae, batch, device, autocast_dtype, scaler(), ckpt, dim, alpha, gamma)
    theirs = reference_step(arch, ref, vae, batch, device, autocast_dtype, scaler(), ckpt, dim, alpha, gamma)
    times = {"ours": [], "ref": []}
    mem = {"ours": 0, "ref": 0}
    runs = {"ours": ours, "ref": theirs}
    for name, (step, enter, leave, _) in runs.items():  # warm-up: optimizer state, allocator, kernels
        enter()
        step()
        leave()
    for _ in range(iters):
        for name, (step, enter, leave, _) in runs.items():
            enter()
            with PeakMemory(device) as m:
                times[name].append(timed(step, device))
            mem[name] = max(mem[name], m.peak)
            leave()
    return {
        "s_ours": statistics.median(times["ours"]), "s_ref": statistics.median(times["ref"]),
        "gb_ours": mem["ours"] / 2**30, "gb_ref": mem["ref"] / 2**30,
        "params_ours": ours[3], "params_ref": theirs[3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, help="sd15, sdxl or sd15,sdxl (default: both)")
    parser.add_argument("--px", type=int, default=None, help="image side (default: native on CUDA, 256 on CPU)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps per loop and setting")
    parser.add_argument("--batches", default="1,2")
    parser.add_argument("--quick", action="store_true", help="CPU: fewer settings (for a 2-core machine)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    autocast_dtype = torch.float16 if cuda else None
    iters = args.iters or (10 if cuda else 2)
    if not cuda:
        print(f"No CUDA device: CPU with {torch.get_num_threads()} threads, float32, random weights, at a REDUCED "
              f"resolution ({args.px or CPU_PX} px) instead of 512/1024 px. Memory = peak RSS above rest (activations, "
              "gradients).", flush=True)
    for arch in (args.arch or "sd15,sdxl").split(","):
        px = args.px or (NATIVE_PX[arch] if cuda else CPU_PX)
        parts = build(arch, device, dtype)
        settings = [(b, ck, True) for b in map(int, args.batches.split(",")) for ck in (False, True)] + [(1, False, False)]
        if args.quick or (not cuda and arch == "sdxl"):
            settings = [(1, False, True), (1, True, True)]
        for b, ck, cached in settings:
            r = bench_setting(arch, parts, device, autocast_dtype, b, px, ck, cached, iters)
            print(f"{arch} {px}px batch {b} ckpt {'on ' if ck else 'off'} latents {'cached ' if cached else 'encoded'}: "
                  f"ours {r['s_ours']:.3f} s/step {r['gb_ours']:.2f} GB | diffusers+peft {r['s_ref']:.3f} s/step "
                  f"{r['gb_ref']:.2f} GB | time ratio {r['s_ours'] / r['s_ref']:.2f}, memory ratio "
                  f"{r['gb_ours'] / max(r['gb_ref'], 1e-9):.2f} | LoRA params {r['params_ours']:,} vs {r['params_ref']:,}",
                  flush=True)
        del parts


if __name__ == "__main__":
    main()
