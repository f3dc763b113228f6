"""The training loop: a list of steps you can read in one sitting (after nanoGPT's train.py).

Every optimizer step is

    1. set the learning rate        lr = schedule.lr_at(step, base_lr), per group (UNet, text encoder)
    2. micro-steps (accumulation)   per batch: latents (cached or VAE) -> text conditioning
                                    (cached, frozen or trained) -> noise, timesteps, noisy latents
                                    -> UNet (SDXL: y with the size embeddings) -> eps or v target
                                    -> min-SNR weighted loss -> backward
    3. stop on NaN/inf              before the update, so the weights stay the last good ones
    4. clip the gradient norm
    5. optimizer step, then free the gradients
    6. log                          one event and one CSV row

and at an epoch end the caller's `on_epoch_end` saves (run.py).

Randomness: each batch k of epoch e draws its noise, timesteps, VAE sample and LoRA dropout
from seeds derived from (config.seed, e, k) alone, and the data's order, flips and captions are
functions of the same numbers (data.py). So a run is reproducible, a resumed run continues
exactly, and N processes equal one process with N times the accumulation (distributed.py).

The base model is borrowed: its parameters stay frozen (requires_grad False) and are never moved,
cast or written; only the LoRA network (float32) is trained. Mixed precision runs the forward
under autocast in the host's dtype; fp16 adds a GradScaler.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import StudioError
from ..progress import CancelToken, ProgressEvent
from . import distributed as dist_mod
from .data import Batch, TrainData, epoch_batches, mix_seed
from .lr_schedules import LRSchedule
from .noise import NoiseOptions, loss_weights, noise_batch, training_loss

# ---- optimizers ------------------------------------------------------------------------------

# The guide's recommended optimizer arguments (colab-settings.md §2.3 `recommended_values`), used
# when the config gives none. AdamW keeps torch's defaults, as kohya does.
RECOMMENDED_ARGS: dict[str, dict[str, Any]] = {
    "AdamW8bit": {"weight_decay": 0.1, "betas": (0.9, 0.99)},
    "Prodigy": {"decouple": True, "weight_decay": 0.01, "betas": (0.9, 0.999), "d_coef": 2,
                "use_bias_correction": True, "safeguard_warmup": True},
    "AdaFactor": {"scale_parameter": False, "relative_step": False, "warmup_init": False},
}

_INSTALL = {
    "AdamW8bit": ("bitsandbytes", "pip install bitsandbytes"),
    "Prodigy": ("prodigyopt", "pip install prodigyopt"),
    "DAdaptation": ("dadaptation", "pip install dadaptation"),
    "DAdaptAdam": ("dadaptation", "pip install dadaptation"),
    "DAdaptLion": ("dadaptation", "pip install dadaptation"),
    "Lion": ("lion_pytorch", "pip install lion-pytorch"),
}


def optimizer_args(name: str, given: dict[str, Any], warmup_steps: int) -> dict[str, Any]:
    """The optimizer's keyword arguments: the config's, else the guide's recommended ones."""
    args = dict(given) if given else dict(RECOMMENDED_ARGS.get(name, {}))
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    if name == "Prodigy" and not given and warmup_steps == 0:
        args["safeguard_warmup"] = False  # the guide: only with warmup
    return args


def available_optimizer(name: str, device: torch.device) -> tuple[str, str]:
    """The optimizer to run for the configured one, and a log line when they differ.

    The guide's default, AdamW8bit, needs bitsandbytes and a CUDA GPU. Without them the same
    update in 32 bit (AdamW with the same arguments, only more optimizer memory) is what a user
    wants, not a run that refuses to start. Other optimizers are never swapped.
    """
    if name != "AdamW8bit":
        return name, ""
    if device.type != "cuda":
        return "AdamW", "AdamW8bit needs a CUDA GPU; training with AdamW (32-bit, same arguments) instead."
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "AdamW", ("AdamW8bit needs the bitsandbytes package (pip install bitsandbytes); "
                         "training with AdamW (32-bit, same arguments, more memory) instead.")
    return name, ""


def _import_optimizer(name: str):
    """The optimizer class for a guide name; a StudioError saying how to install a missing package."""
    if name == "AdamW":
        return torch.optim.AdamW
    if name == "SGDNesterov":
        return torch.optim.SGD
    if name == "AdaFactor":
        from transformers.optimization import Adafactor

        return Adafactor
    if name not in _INSTALL:
        raise StudioError(f"The optimizer {name!r} is not supported by this trainer.",
                          "Use AdamW, AdamW8bit, Prodigy, AdaFactor, Lion, SGDNesterov or the DAdapt optimizers.")
    module, how = _INSTALL[name]
    try:
        mod = __import__(module)
    except ImportError:
        raise StudioError(f"The optimizer {name} needs the Python package {module!r}, which is not installed.",
                          f"Install it into the WebUI's or the studio's environment ({how}), or pick AdamW.") from None
    if name == "AdamW8bit":
        return mod.optim.AdamW8bit
    if name == "Prodigy":
        return mod.Prodigy
    if name == "Lion":
        return mod.Lion
    return getattr(mod, {"DAdaptation": "DAdaptAdaGrad"}.get(name, name))


def make_optimizer(name: str, groups: list[dict], args: dict[str, Any], device: torch.device) -> torch.optim.Optimizer:
    """An optimizer over the network's parameter groups. AdamW runs fused on CUDA when torch has it
    (feature detection: the `fused` keyword)."""
    cls = _import_optimizer(name)
    kwargs = dict(args)
    if name == "SGDNesterov":
        kwargs.setdefault("momentum", 0.9)
        kwargs.setdefault("nesterov", True)
    if name == "AdamW" and device.type == "cuda" and "fused" in inspect.signature(cls).parameters:
        kwargs.setdefault("fused", True)
    try:
        opt = cls(groups, **kwargs)
    except TypeError as e:
        raise StudioError(f"The optimizer arguments {args} do not fit {name} ({e}).",
                          "Fix optimizer_args in the [train] section, or clear it for the guide's values.") from None
    for group in opt.param_groups:  # the schedule's 100%; `lr` itself changes every step (and is in a saved state)
        group["base_lr"] = group["lr"]
    return opt


def optimizer_label(opt: torch.optim.Optimizer, args: dict[str, Any]) -> str:
    """kohya's ss_optimizer: `module.Class(k=v,...)`."""
    cls = type(opt)
    label = f"{cls.__module__}.{cls.__name__}"
    if args:
        label += "(" + ",".join(f"{k}={v}" for k, v in args.items()) + ")"
    return label


# ---- the loss of one batch -------------------------------------------------------------------


class DiffusionLoss(nn.Module):
    """Batch -> loss. Its only submodule is the LoRA network, so DDP over it syncs only LoRA
    gradients; the borrowed model is reached through hooks and a plain reference."""

    def __init__(
        self,
        bundle,
        network: nn.Module,
        conditioner,
        noise_options: NoiseOptions,
        alphas_cumprod: torch.Tensor,
        min_snr_gamma: float,
        v_pred_like_noise_pred: bool,
        train_text_encoder: bool,
        autocast_dtype: torch.dtype | None,
    ):
        super().__init__()
        self.network = network
        self.bundle = bundle  # not a Module: not registered, never moved
        self.conditioner = conditioner
        self.noise_options = noise_options
        self.alphas_cumprod = alphas_cumprod  # the training schedule (ztsnr-rescaled if the run says so)
        self.min_snr_gamma = min_snr_gamma
        self.v_pred_like_noise_pred = v_pred_like_noise_pred
        self.train_text_encoder = train_text_encoder
        self.autocast_dtype = autocast_dtype

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def conditioning(self, batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(context (B, T, C), SDXL y (B, adm) or None) in float32."""
        if batch.text is not None:  # cached (SDXL, text encoders not trained)
            context, pooled = batch.text["context"].to(device), batch.text.get("pooled")
        else:
            grad = torch.enable_grad() if self.train_text_encoder else torch.no_grad()
            with grad, self._autocast(device):
                out = self.conditioner(batch.captions)
            context, pooled = (out.context, out.pooled) if self.bundle.arch == "sdxl" else (out, None)
        if self.bundle.arch != "sdxl":
            return context.float(), None
        from ..models.conditioning import sdxl_size_vector

        pooled = pooled.to(device).float()
        y = sdxl_size_vector(pooled, torch.tensor(batch.original_sizes_hw), torch.tensor(batch.crop_top_lefts),
                             torch.tensor(batch.target_sizes_hw))
        return context.float(), y

    def forward(self, batch: Batch, seed: int) -> torch.Tensor:
        bundle = self.bundle
        device, dtype = bundle.device, bundle.dtype
        # 1. latents: cached, or a VAE posterior sample drawn from this batch's seed
        if batch.latents is not None:
            x0 = batch.latents.to(device, torch.float32)
        else:
            with torch.no_grad():
                x0 = bundle.encode_images(batch.images, torch.Generator().manual_seed(mix_seed("vae", seed))).to(device).float()
        # 2. text conditioning
        context, y = self.conditioning(batch, device)
        # 3. noise, timesteps, noisy latents (CPU generator: the same numbers on any device)
        noised = noise_batch(x0, self.alphas_cumprod, self.noise_options, torch.Generator().manual_seed(seed))
        # 4. the UNet's eps or v, in the model's dtype (autocast when mixed precision is on)
        with self._autocast(device):
            pred = bundle.unet(noised.noisy.to(dtype), noised.timesteps, context.to(dtype),
                               y.to(dtype) if y is not None else None)
        # 5. per-sample MSE (fp32) x prior-loss / min-SNR weights, mean over the batch
        w = loss_weights(noised.timesteps, self.alphas_cumprod, self.min_snr_gamma, self.noise_options.v_prediction,
                         self.v_pred_like_noise_pred, batch.loss_weights)
        return training_loss(pred, noised.target, w)


# ---- state changes for the duration of training ------------------------------------------------


@contextlib.contextmanager
def training_mode(bundle, network: nn.Module, gradient_checkpointing: bool, train_text_encoder: bool) -> Iterator[None]:
    """Freeze the base, hook the network in, turn on checkpointing; all undone on exit.

    The base parameters' requires_grad flags and the modules' modes and checkpointing flags are put
    back; the network's hooks come off. No base tensor is moved, cast or written.
    """
    modules = bundle.modules()
    grads = [(p, p.requires_grad) for m in modules.values() for p in m.parameters()]
    modes = [(m, m.training) for mod in modules.values() for m in mod.modules()]
    ckpt = [(m, m.gradient_checkpointing) for m in modules.values() if hasattr(m, "gradient_checkpointing")]
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        if gradient_checkpointing:
            bundle.unet.set_gradient_checkpointing(True)
            if train_text_encoder:  # the text towers check pointing only in train mode
                for _, te in bundle.text_encoders:
                    te.set_gradient_checkpointing(True)
                    te.train()
        network.train()
        network.attach()
        yield
    finally:
        network.detach()
        for m, flag in ckpt:
            m.gradient_checkpointing = flag
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


@contextlib.contextmanager
def network_paused(network) -> Iterator[None]:
    """Take the training hooks off (and dropout) while the host generates samples through the same model."""
    network.detach()
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)
        network.attach()


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """The loop reseeds torch's global RNG per batch (LoRA dropout); put the process's RNG states
    (python, numpy, torch CPU and CUDA) back afterwards, since a WebUI shares them."""
    from .state import rng_states, set_rng_states

    saved = rng_states()
    try:
        yield
    finally:
        set_rng_states(saved)


# ---- progress numbers ------------------------------------------------------------------------


def peak_memory_gb(device: torch.device) -> float:
    """Peak CUDA memory allocated on `device`, or the process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    except ImportError:
        try:
            import psutil

            return psutil.Process().memory_info().peak_wset / 2**30  # Windows
        except (ImportError, AttributeError):
            return 0.0


@dataclass
class StepRecord:
    """What one optimizer step reports (ProgressEvent.extra and the CSV row)."""

    step: int  # 1-based: steps done
    total_steps: int
    epoch: int
    loss: float
    avg_loss: float  # running mean over the current epoch (kohya's "avr_loss")
    lr_unet: float
    lr_te: float
    it_s: float
    mem_gb: float
    time_s: float

    def extra(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def event(self) -> ProgressEvent:
        left = self.total_steps - self.step
        eta = left / self.it_s if self.it_s > 0 else None
        speed = f"{self.it_s:.2f} it/s" if self.it_s >= 1 or self.it_s == 0 else f"{1 / self.it_s:.2f} s/it"
        text = f"epoch {self.epoch}, step {self.step}/{self.total_steps}, loss {self.avg_loss:.4f}, {speed}"
        return ProgressEvent(self.step / max(1, self.total_steps), text, eta, self.extra())


class TrainingDiverged(Exception):
    """The loss became NaN or infinite; the update was not applied."""

    def __init__(self, step: int, epoch: int, loss: float):
        super().__init__(f"loss {loss} at step {step}")
        self.step, self.epoch, self.loss = step, epoch, loss


# ---- the loop --------------------------------------------------------------------------------


@dataclass
class LoopSetup:
    """Everything the loop touches, built by run.py (or a test, or the bench)."""

    model: nn.Module  # DiffusionLoss, DDP-wrapped with several processes
    network: nn.Module  # the LoRA network (its parameters are the optimizer's)
    data: TrainData
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    epochs: int  # epochs of the run (the last may stop early in steps mode)
    total_steps: int  # optimizer steps of the run
    accumulation: int = 1  # micro-steps per optimizer step, per process
    max_grad_norm: float = 1.0  # 0 = no clipping
    scaler: Any = None  # torch.amp.GradScaler for fp16
    dist: dist_mod.DistInfo = dist_mod.SINGLE
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 42

    def __post_init__(self) -> None:
        self.base_lrs = [g.get("base_lr", g["lr"]) for g in self.optimizer.param_groups]
        self.group_names = [g.get("name", "") for g in self.optimizer.param_groups]


@dataclass
class LoopPosition:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken


def batches_per_step(setup: LoopSetup) -> int:
    return setup.dist.world_size * setup.accumulation


def steps_in_epoch(n_batches: int, setup: LoopSetup) -> int:
    return math.ceil(n_batches / batches_per_step(setup))


def set_lr(setup: LoopSetup, step: int) -> dict[str, float]:
    """1. Every group's LR for optimizer step `step` (0-based): a pure function of the step."""
    lrs = {}
    for group, base, name in zip(setup.optimizer.param_groups, setup.base_lrs, setup.group_names):
        group["lr"] = setup.schedule.lr_at(step, base)
        lrs[name] = group["lr"]
    return lrs


def micro_batches(setup: LoopSetup, epoch: int, order: list[list[int]], group: int) -> Iterator[tuple[int, Batch | None]]:
    """This process's (batch index k, batch) for each micro-step of optimizer step `group` of the
    epoch; None where the epoch has run out (or a batch's images could not be read)."""
    per_step, world, rank = batches_per_step(setup), setup.dist.world_size, setup.dist.rank
    for m in range(setup.accumulation):
        k = group * per_step + m * world + rank
        yield k, (setup.data.make_batch(epoch, k, order[k]) if k < len(order) else None)


def optimizer_step(setup: LoopSetup, epoch: int, order: list[list[int]], group: int, step: int) -> float:
    """2.-5. One optimizer step over this process's micro-batches; returns the mean loss over all
    processes. Raises TrainingDiverged (before updating) when it is not finite."""
    model, scaler, A = setup.model, setup.scaler, setup.accumulation
    loss_sum = torch.zeros((), dtype=torch.float64)
    count = 0
    filler: Batch | None = None
    # 2. micro-steps: each loss / A, so the accumulated gradient is the mean (DDP then averages ranks)
    for m, (k, batch) in enumerate(micro_batches(setup, epoch, order, group)):
        weight = 1.0 / A
        if batch is None:
            if not setup.dist.enabled:
                continue  # one process: nothing to wait for
            # DDP needs the same backward calls on every process: a zero-weight stand-in.
            filler = filler or next((b for i in range(len(order)) if (b := setup.data.make_batch(epoch, i, order[i]))), None)
            if filler is None:
                raise StudioError("None of the training images could be read.", "Check the dataset folder.")
            batch, weight = filler, 0.0
        torch.manual_seed(mix_seed("dropout", setup.seed, epoch, k))  # LoRA dropout: per batch, like the rest
        with dist_mod.no_sync(model, skip=m < A - 1):
            loss = model(batch, mix_seed("step", setup.seed, epoch, k))
            scaled = loss * weight
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if weight:
            loss_sum += loss.detach().double().cpu()
            count += 1
    totals = dist_mod.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(count), dtype=torch.float64)]), setup.dist)
    mean = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
    # 3. stop before the update if the loss is not a number
    if not math.isfinite(mean):
        setup.optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(step + 1, epoch, mean)
    # 4. clip (fp16: unscale first, so the norm is the true one)
    params = [p for g in setup.optimizer.param_groups for p in g["params"]]
    if scaler is not None:
        scaler.unscale_(setup.optimizer)
    if setup.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, setup.max_grad_norm)
    # 5. update, then free the gradients
    if scaler is not None:
        scaler.step(setup.optimizer)
        scaler.update()
    else:
        setup.optimizer.step()
    setup.optimizer.zero_grad(set_to_none=True)
    return mean


def train_loop(
    setup: LoopSetup,
    start: LoopPosition,
    on_step: Callable[[StepRecord], None],
    on_epoch_end: Callable[[int, int], None],
    cancel: CancelToken | None = None,
) -> LoopPosition:
    """Run from `start` to the end of the run. Cancel is honoured between steps (nothing is saved
    for the unfinished epoch); `on_epoch_end(epoch, step)` runs after each completed epoch."""
    step = start.step
    clock, last_step, it_s = time.monotonic(), step, 0.0
    t0 = clock
    for epoch in range(start.epoch + 1, setup.epochs + 1):
        order = epoch_batches(setup.data.items, setup.data.batch_size, setup.data.seed, epoch)
        epoch_losses: list[float] = []
        for group in range(steps_in_epoch(len(order), setup)):
            if step >= setup.total_steps:
                break
            if cancel is not None:
                cancel.raise_if_cancelled()
            lrs = set_lr(setup, step)  # 1.
            loss = optimizer_step(setup, epoch, order, group, step)  # 2.-5.
            step += 1
            # 6. log
            epoch_losses.append(loss)
            now = time.monotonic()
            if now - clock >= 1.0 or step == setup.total_steps or step - last_step >= 20:
                rate = (step - last_step) / max(now - clock, 1e-9)
                it_s = rate if it_s == 0 else 0.7 * it_s + 0.3 * rate  # smoothed for a steady ETA
                clock, last_step = now, step
            on_step(StepRecord(step, setup.total_steps, epoch, loss, sum(epoch_losses) / len(epoch_losses),
                               lrs.get("unet", 0.0), lrs.get("textencoder", 0.0), it_s,
                               peak_memory_gb(setup.device), now - t0))
        on_epoch_end(epoch, step)
        if step >= setup.total_steps:
            return LoopPosition(epoch, step)
    return LoopPosition(setup.epochs, step)
