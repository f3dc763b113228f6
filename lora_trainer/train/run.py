"""The training job: a project, a TrainConfig and a Host in; LoRA files, samples and a loss log out.

    train_job(project, config, host, progress, cancel, resume=False) -> TrainResult

is what `jobs.JobManager.submit("train", title, lambda p, c: train_job(..., p, c), gpu=True)`
runs, and what the CLI runs. In order:

1. Validate: the config against itself and the dataset (every error in one StudioError; warnings
   become log lines), before any model is touched.
2. Borrow the model from the host, build the LoRA network (or continue `network_weights`), cache
   latents (and SDXL text-encoder outputs) as the config asks.
3. Resume, if asked: the newest state under `<project>/.cache/state/` (state.py).
4. The loop (loop.py). At each saved epoch: `<stem>-NN.safetensors` with kohya metadata into the
   host's output folder, the state beside it, older epochs beyond keep_only_last_n_epochs moved to
   the project's trash, and sample images through the host.
5. A NaN/inf loss stops at once with a plain message and keeps the last good epoch file. Cancel
   stops between steps; files of finished epochs stay, nothing half-written is left.

Samples are made by the host from the file just saved: `host.generate` with the prompt plus
`<lora:<stem>-NN:1>`, while the training network's hooks are off. So a sample is exactly what the
user gets from that file in the WebUI (or in our sampler, standalone), not an in-memory preview.
The host must be able to find the file: the WebUI looks in its Lora folder (the output folder),
the standalone host in its `lora_dirs` (the CLI passes the output folder).

`dry_run(project, config)` is the preview: step plan, buckets and the network's size, counted
on modules built on the meta device (no weights are loaded).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StudioError
from ..fileio import clean_leftovers
from ..locks import hold
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from .config import TrainConfig, raise_if_errors, validate

if TYPE_CHECKING:
    from ..host.base import Host
    from ..project import Project
    from .data import Dataset

SAMPLES_DIR = "samples"


@dataclass
class TrainResult:
    """What a run left behind."""

    output_dir: Path
    stem: str  # file prefix: `<stem>-NN.safetensors`
    files: list[Path] = field(default_factory=list)  # epoch files this run wrote, in order (some may be pruned since)
    epochs_done: int = 0
    total_epochs: int = 0
    steps_done: int = 0
    total_steps: int = 0
    final_loss: float | None = None  # running mean of the last epoch
    loss_log: Path | None = None
    samples: list[Path] = field(default_factory=list)
    state_file: Path | None = None
    resumed_from_epoch: int = 0

    @property
    def last_file(self) -> Path | None:
        return self.files[-1] if self.files else None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, Path):
                out[k] = str(v)
            elif isinstance(v, list):
                out[k] = [str(x) if isinstance(x, Path) else x for x in v]
        out["last_file"] = str(self.last_file) if self.last_file else None
        return out


# ---- small pieces ----------------------------------------------------------------------------


def file_stem(project: Project, config: TrainConfig) -> str:
    return config.project_name or project.file_stem


def output_dir_for(project: Project, config: TrainConfig, host: Host | None) -> Path:
    if config.output_dir.strip():  # relative: inside the project folder, as the tab resolves it
        from ..project import in_project

        return in_project(project.dir, config.output_dir)
    return host.lora_output_dir(project) if host is not None else project.output_dir


def load_and_validate(project: Project, config: TrainConfig, progress: ProgressFn = no_progress,
                      cancel: CancelToken | None = None) -> Dataset:
    """Scan the dataset and check the config against it; raise every error at once."""
    from .data import check_dataset, load_dataset

    raise_if_errors(validate(config))  # config errors first: a bad path should not wait for a scan
    dataset = load_dataset(config, project.dir, progress, cancel)
    problems = validate(config, dataset.summary)
    raise_if_errors(problems)
    for p in problems:
        progress(ProgressEvent(log=str(p)))
    check_dataset(dataset)
    return dataset


def tag_frequency(dataset: Dataset, config: TrainConfig) -> dict[str, dict[str, int]]:
    """kohya's ss_tag_frequency: per folder, each tag (lowercased) counted once per image."""
    out: dict[str, dict[str, int]] = {}
    for item in dataset.items:
        folder = Path(config.datasets[item.folder].path).name
        counts = out.setdefault(folder, {})
        for tag in (t.strip().lower() for t in item.caption.split(",")):
            if tag:
                counts[tag] = counts.get(tag, 0) + 1
    return out


def lora_metadata(config: TrainConfig, dataset: Dataset, plan, bundle, v_prediction: bool, ztsnr: bool,
                  optimizer: str, session_id: int, started: float, world: int):
    """The kohya header fields of this run (epoch and steps are set per save)."""
    from ..network.metadata import LoraMetadata

    dirs, reg_dirs = {}, {}
    for f, s in zip(config.datasets, dataset.summary.folders):
        entry = {"n_repeats": f.repeats, "img_count": s.images}
        (reg_dirs if f.is_regularization else dirs)[Path(f.path).name] = entry
    buckets = dataset.summary.bucket_counts
    errors = [abs(it.placement.ar_error) for it in dataset.items]
    bucket_info = {
        "buckets": {str(i): {"resolution": [w, h], "count": n} for i, ((w, h), n) in enumerate(sorted(buckets.items()))},
        "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0,
    } if config.enable_bucket else None
    return LoraMetadata(
        arch=bundle.arch, v_prediction=v_prediction, sd_model_name=bundle.name or None,
        session_id=session_id, training_started_at=started, seed=config.seed,
        learning_rate=config.unet_lr, unet_lr=config.unet_lr,
        text_encoder_lr=config.text_encoder_lr if config.train_text_encoder else 0.0,
        optimizer=optimizer, lr_scheduler=config.lr_scheduler, lr_warmup_steps=plan.warmup_steps,
        max_train_steps=plan.total_steps, num_epochs=plan.epochs, num_batches_per_epoch=plan.batches_per_epoch,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=config.gradient_checkpointing, max_grad_norm=config.max_grad_norm,
        mixed_precision=config.mixed_precision, full_fp16=config.full_fp16, cache_latents=config.caches_latents,
        noise_offset=config.noise_offset or None,
        multires_noise_iterations=config.multires_noise_iterations or None,
        multires_noise_discount=config.multires_noise_discount,
        ip_noise_gamma=config.ip_noise_gamma or None, zero_terminal_snr=ztsnr,
        min_snr_gamma=config.min_snr_gamma or None, prior_loss_weight=config.prior_loss_weight,
        min_timestep=config.min_timestep, max_timestep=config.max_timestep,
        clip_skip=config.clip_skip if bundle.arch == "sd15" else None, max_token_length=config.max_token_length,
        caption_dropout_rate=config.caption_dropout_rate, caption_tag_dropout_rate=config.caption_tag_dropout_rate,
        shuffle_caption=config.caption_options().shuffle, keep_tokens=config.keep_tokens,
        num_train_images=sum(f.steps for f in dataset.summary.folder_counts if not f.is_regularization),
        num_reg_images=sum(f.steps for f in dataset.summary.folder_counts if f.is_regularization),
        batch_size_per_device=config.train_batch_size,
        total_batch_size=config.train_batch_size * world * config.gradient_accumulation_steps,
        resolution=(config.resolution, config.resolution), enable_bucket=config.enable_bucket,
        min_bucket_reso=config.min_bucket_reso, max_bucket_reso=config.max_bucket_reso,
        bucket_no_upscale=config.bucket_no_upscale, flip_aug=config.flip_aug,
        tag_frequency=tag_frequency(dataset, config), dataset_dirs=dirs, reg_dataset_dirs=reg_dirs,
        bucket_info=bucket_info,
    )


def to_trash(project_dir: Path, paths: list[Path], reason: str) -> None:
    """Move files to the project's trash. Files outside the project (the WebUI's Lora folder) are
    first moved into `<project>/.cache/superseded/`, since a trash batch holds project paths."""
    from ..trash import move_to_trash

    inside, staged = [], []
    root = project_dir.resolve()
    for p in paths:
        if not p.exists():
            continue
        if p.resolve().is_relative_to(root):
            inside.append(p)
        else:
            dest = project_dir / ".cache" / "superseded" / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), str(dest))
            staged.append(dest)
    if inside or staged:
        move_to_trash(project_dir, inside + staged, reason)


def precision(config: TrainConfig, device, progress: ProgressFn):
    """(autocast dtype or None, GradScaler or None). Mixed precision is a GPU feature: on the CPU
    the model runs in the host's dtype (float32 standalone)."""
    import torch

    if config.mixed_precision == "no":
        return None, None
    if device.type != "cuda":
        progress(ProgressEvent(log=f"mixed precision {config.mixed_precision} is for GPUs; training on the CPU in the model's precision."))
        return None, None
    if config.full_fp16 or config.full_bf16:
        progress(ProgressEvent(log="full fp16/bf16: the LoRA weights stay float32 (the frozen base is half precision); "
                                   "this costs a few MB and keeps small updates from rounding away."))
    if config.mixed_precision == "bf16":
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


# ---- the job ---------------------------------------------------------------------------------


def train_job(
    project: Project,
    config: TrainConfig,
    host: Host,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train a LoRA for `project` on the host's model; see the module docstring for the steps.

    Under torchrun, call `distributed.init_from_env()` first: every process runs this function,
    process 0 alone writes files and sends progress events.
    """
    from . import distributed as D

    info = D.current()
    progress = progress if info.is_main else no_progress
    # One training per project at a time, across processes: the lock is the main process's.
    with hold(project.dir, "training", f"A training of {project.name}") if info.is_main else contextlib.nullcontext():
        return _train_locked(project, config, host, progress, cancel, resume, info)


def _train_locked(project: Project, config: TrainConfig, host: Host, progress: ProgressFn, cancel: CancelToken | None,
                  resume: bool, info) -> TrainResult:
    import torch

    from .state import STATE_DIR, saved_states

    # 1. validate before anything heavy
    progress(ProgressEvent(None, "checking the dataset and settings"))
    dataset = load_and_validate(project, config, progress, cancel)
    stem = file_stem(project, config)
    out_dir = output_dir_for(project, config, host)
    if info.is_main:
        clean_leftovers(out_dir, project.dir / STATE_DIR, project.dir)  # what a killed save left
    state = None
    if resume:
        states = saved_states(project.dir, stem)
        if not states:
            raise StudioError(f"There is no saved training state of {stem!r} in {project.dir / '.cache' / 'state'} to resume.",
                              "Start the run without --resume.")
        from .state import load_state

        state = load_state(states[max(states)])
    from ..host.base import BorrowRequest
    from .memory import vram_problem

    def memory_check(arch: str, free: int, resident: int, where: str):
        return vram_problem(arch, config, free, resident, where)

    with host.borrow_bundle(BorrowRequest(memory_check=memory_check)) as bundle:
        if bundle.arch != config.arch:
            raise StudioError(f"The settings are for {config.arch} but the model is {bundle.arch}.",
                              f"Set arch = \"{bundle.arch}\" in the [train] section (or load a {config.arch} model).")
        device = bundle.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        return _train(project, config, host, bundle, dataset, stem, out_dir, state, info, device, progress, cancel)


def _activation_text(project: Project, config: TrainConfig) -> str:
    """The dataset's leading tags as a prompt writes them (the Lora tab's "activation text")."""
    from ..compare.plan import dataset_prompt_tags, escape_tag

    try:
        activation, _ = dataset_prompt_tags(project.dataset_dir, max(1, config.keep_tokens))
    except (OSError, StudioError):
        return ""
    return ", ".join(escape_tag(t) for t in activation)


def _train(project, config: TrainConfig, host, bundle, dataset, stem: str, out_dir: Path, state, info, device,
           progress: ProgressFn, cancel: CancelToken | None) -> TrainResult:
    import torch

    from ..errors import Cancelled
    from ..models.conditioning import SD15TextConditioner, SDXLTextConditioner
    from ..models.schedule import NoiseSchedule
    from ..network.epochs import epoch_file, saved_epochs
    from ..network.io import load_weights
    from ..network.network import create_network
    from . import distributed as D
    from . import loop as L
    from .data import TrainData, latent_cache_for, mix_seed, text_cache_for
    from .logs import LossLog, log_path
    from .state import (
        TrainState,
        files_to_prune,
        resume_mismatches,
        rng_states,
        save_state,
        saved_states,
        set_rng_states,
        state_file,
    )

    world, A = info.world_size, max(1, config.gradient_accumulation_steps)
    v_pred = config.v_prediction(bundle.prediction)
    ztsnr = config.uses_zero_terminal_snr(bundle.zero_terminal_snr)
    train_te = config.train_text_encoder

    # 2a. the network: the same initial weights in every process and every run of this seed
    with L.isolated_rng():
        torch.manual_seed(mix_seed("init", config.seed) % 2**63)
        network = create_network(bundle, config.network_config())
    if config.network_weights:
        load_weights(network, config.network_weights, progress)

    # 2b. text conditioning as kohya trains it: max_token_length/75 chunks, kohya's token layout
    towers = [te for _, te in bundle.text_encoders]
    chunks = config.max_token_length // 75
    if bundle.arch == "sd15":
        conditioner = SD15TextConditioner(towers[0], bundle.tokenizer, config.clip_skip, chunks, kohya_layout=True)
    else:
        conditioner = SDXLTextConditioner(towers[0], towers[1], bundle.tokenizer, chunks, kohya_layout=True)

    # 2c. caches (disk caches are written by process 0, then read by all)
    vae_gen = torch.Generator().manual_seed(mix_seed("latents", config.seed))

    def encode_images(x):
        return bundle.encode_images(x, vae_gen)

    def encode_texts(captions):
        out = conditioner(captions)
        return {"context": out.context, "pooled": out.pooled}

    latent_cache = latent_cache_for(config, project.dir, encode_images, f"{bundle.name}|{bundle.arch}|{bundle.vae.config}")
    text_cache = text_cache_for(config, project.dir, encode_texts, f"{bundle.name}|{bundle.arch}|kohya{chunks}")
    def prepare(cache) -> None:
        if cache is latent_cache:
            cache.prepare(dataset.items, max(1, config.train_batch_size), progress, cancel)
        else:
            cache.prepare([it.caption for it in dataset.items], 8, progress, cancel)

    for cache in (c for c in (latent_cache, text_cache) if c is not None):
        if cache.cache_dir is None:  # in memory: every process encodes for itself
            prepare(cache)
            continue
        if info.is_main:
            prepare(cache)
        D.barrier(info)
        if not info.is_main:
            prepare(cache)  # reads what process 0 wrote
    data = TrainData.from_config(dataset, config, latent_cache, text_cache,
                                 on_warning=lambda w: progress(ProgressEvent(log=w)))

    # 2d. run length (counted with every process's micro-batches), LR, optimizer, precision
    plan = config.replace(gradient_accumulation_steps=A * world).plan(dataset.summary.folder_counts, dataset.summary.bucket_counts)
    if plan.total_steps <= 0:
        raise StudioError("The run has 0 steps.", "Raise max_train_epochs or max_train_steps.")
    schedule = config.lr_schedule(plan.total_steps)
    groups = network.param_groups(config.unet_lr, config.text_encoder_lr if train_te else 0.0)
    opt_args = L.optimizer_args(config.optimizer, config.optimizer_args, plan.warmup_steps)
    opt_name, note = L.available_optimizer(config.optimizer, device)
    if note:
        progress(ProgressEvent(log=note))
    optimizer = L.make_optimizer(opt_name, groups, opt_args, device)
    autocast_dtype, scaler = precision(config, device, progress)

    # 3. resume
    session_id, started = random.randrange(2**32), time.time()
    start = L.LoopPosition()
    if state is not None:
        wrong = resume_mismatches(state.config, config.to_toml_dict())
        if wrong:
            raise StudioError("The saved run used other settings, so it can not be continued exactly: " + "; ".join(wrong) + ".",
                              "Put those settings back, or start a new run without --resume.")
        if state.epoch >= plan.epochs:
            raise StudioError(f"The saved run of {stem!r} already finished all {plan.epochs} epochs.",
                              "Raise max_train_epochs to train further, or start a new run.")
        network.load_state_dict({k: v.to(device) for k, v in state.network.items()})
        optimizer.load_state_dict(state.optimizer)
        if scaler is not None and state.scaler:
            scaler.load_state_dict(state.scaler)
        set_rng_states(state.rng)
        session_id, started = state.session_id, state.training_started_at
        start = L.LoopPosition(state.epoch, state.step)
        progress(ProgressEvent(log=f"resuming {stem} after epoch {state.epoch} (step {state.step} of {plan.total_steps})"))
    session_id, started = D.broadcast_object((session_id, started), info)

    model = L.DiffusionLoss(bundle, network, conditioner, config.noise_options(v_pred),
                            NoiseSchedule(zero_terminal_snr=ztsnr).alphas_cumprod(), config.min_snr_gamma,
                            config.v_pred_like_noise_pred(v_pred), train_te, autocast_dtype)
    setup = L.LoopSetup(
        model=D.wrap(model, info, device, find_unused=train_te), network=network, data=data, optimizer=optimizer, schedule=schedule,
        epochs=plan.epochs, total_steps=plan.total_steps, accumulation=A, max_grad_norm=config.max_grad_norm,
        scaler=scaler, dist=info, device=device, seed=config.seed,
    )
    meta = lora_metadata(config, dataset, plan, bundle, v_pred, ztsnr, L.optimizer_label(optimizer, opt_args),
                         session_id, started, world)
    result = TrainResult(out_dir, stem, total_epochs=plan.epochs, total_steps=plan.total_steps, resumed_from_epoch=start.epoch)
    log = LossLog(log_path(project.logs_dir, project.name.replace("/", "_"))) if info.is_main else None
    activation_text = _activation_text(project, config) if info.is_main else ""  # for the host's card of each epoch
    if info.is_main:
        result.loss_log = log.path
        progress(ProgressEvent(0.0, f"training {stem}: {plan.epochs} epochs, {plan.total_steps} steps", log=plan.preview()))

    # 4. the loop, with saving at epoch ends
    def on_step(rec: L.StepRecord) -> None:
        result.steps_done, result.final_loss = rec.step, rec.avg_loss
        if log is not None:
            log.add(rec.extra())
        progress(rec.event())

    def on_epoch_end(epoch: int, step: int) -> None:
        result.epochs_done, result.steps_done = epoch, step
        final = step >= plan.total_steps or epoch >= plan.epochs
        every = config.save_every_n_epochs
        if info.is_main and (final or (every and epoch % every == 0)):
            save_epoch(epoch, step)
        if log is not None:
            log.flush()
        D.barrier(info)

    def save_epoch(epoch: int, step: int) -> None:
        from ..host.base import SavedLora
        from ..network.io import save_network

        path = epoch_file(out_dir, stem, epoch, plan.epochs)
        if path.exists() and path not in result.files:  # a file of an earlier run: keep it in the trash
            to_trash(project.dir, [path], f"replaced by a new training run of {stem}")
        save_network(network, path, dataclasses.replace(meta, epoch=epoch, steps=step), config.save_precision.replace("float", "fp32"))
        result.files.append(path)
        previous = saved_states(project.dir, stem)
        state_path = save_state(state_file(project.dir, stem, epoch, plan.epochs), TrainState(
            epoch=epoch, step=step, network={k: v.float() for k, v in network.state_dict().items()},
            optimizer=optimizer.state_dict(), scaler=scaler.state_dict() if scaler is not None else None,
            rng=rng_states(), config=config.to_toml_dict(), session_id=session_id, training_started_at=started,
            avg_loss=result.final_loss or 0.0))
        result.state_file = state_path
        for old in previous.values():  # states are a cache: only the newest is needed to resume
            if old != state_path:
                old.unlink(missing_ok=True)
        epochs = {n: p for n, p in saved_epochs(out_dir, stem).items() if n <= epoch}
        prune = files_to_prune(epochs, config.keep_only_last_n_epochs)
        if prune:
            to_trash(project.dir, [epochs[n] for n in prune], f"keep only the last {config.keep_only_last_n_epochs} epochs of {stem}")
        progress(ProgressEvent(log=f"saved {path.name} (epoch {epoch}, step {step})"))
        host.on_lora_saved(SavedLora(path, project.name, bundle.arch, activation_text))  # before this epoch's samples
        if config.sample_every_n_epochs and config.sample_prompts and (epoch % config.sample_every_n_epochs == 0 or final_epoch(epoch, step)):
            result.samples += make_samples(host, project, config, bundle.arch, path.stem, network, progress, cancel)

    def final_epoch(epoch: int, step: int) -> bool:
        return step >= plan.total_steps or epoch >= plan.epochs

    try:
        with L.isolated_rng(), L.training_mode(bundle, network, config.gradient_checkpointing, train_te):
            L.train_loop(setup, start, on_step, on_epoch_end, cancel)
    except L.TrainingDiverged as e:
        if log is not None:
            log.flush()
        kept = f" The last good file is {result.files[-1].name}." if result.files else " No epoch had been saved yet."
        raise StudioError(
            f"The loss became {'NaN' if e.loss != e.loss else 'infinite'} at step {e.step} (epoch {e.epoch}), so training stopped "
            f"before that update.{kept}",
            "Lower the learning rate (unet_lr / text_encoder_lr), or use mixed_precision = \"bf16\" on a GPU that has it; "
            "with fp16 on SDXL keep no_half_vae on.") from None
    except Cancelled:
        if log is not None:
            log.flush()
        raise
    progress(ProgressEvent(1.0, f"done: {result.epochs_done} epochs, {result.steps_done} steps",
                           log=f"finished {stem}: {', '.join(p.name for p in result.files)}"))
    return result


def make_samples(host, project, config: TrainConfig, arch: str, lora_name: str, network, progress: ProgressFn,
                 cancel: CancelToken | None) -> list[Path]:
    """Render the config's sample prompts with the just-saved epoch `<lora:lora_name:1>` through the host."""
    import torch

    from ..host.base import infotext_of
    from ..models.sampler import save_png
    from . import loop as L

    out = []
    samples_dir = project.output_dir / SAMPLES_DIR
    try:
        host.refresh_loras()
        with L.network_paused(network), torch.no_grad():
            for i, prompt in enumerate(config.sample_prompts):
                request = host.default_generation(arch).replace(
                    prompt=f"{prompt} <lora:{lora_name}:1>", seed=config.sample_seed,
                    steps=config.sample_steps, cfg_scale=config.sample_cfg_scale)
                for image in host.generate(request, no_progress, cancel):
                    path = samples_dir / f"{lora_name}-{i + 1:02d}.png"
                    save_png(image, path, infotext_of(image))
                    out.append(path)
    except StudioError as e:
        progress(ProgressEvent(log=f"no samples for {lora_name}: {e}"))
    return out


# ---- the dry run -----------------------------------------------------------------------------


def _meta_modules(arch: str, checkpoint: str = ""):
    """(unet, [(prefix, text tower)]) on the meta device: real sizes, no memory, no weights read.

    With a .safetensors checkpoint the shapes come from its header (so a tiny or unusual model is
    counted as it is); otherwise the architecture's standard configs."""
    import torch

    from ..models.bundle import TE_PREFIXES
    from ..models.clip_text import ClipTextConfig, ClipTextModel
    from ..models.unet import UNet, UNetConfig

    ucfg = UNetConfig.sd15() if arch == "sd15" else UNetConfig.sdxl()
    te_cfgs = [ClipTextConfig.clip_l()] if arch == "sd15" else [ClipTextConfig.clip_l(), ClipTextConfig.clip_bigg()]
    if checkpoint and checkpoint.endswith(".safetensors") and Path(checkpoint).is_file():
        try:
            ucfg, te_cfgs = _configs_from_header(Path(checkpoint), arch)
        except (KeyError, ValueError, IndexError, StudioError, OSError):
            pass  # an unusual layout: count the standard architecture
    with torch.device("meta"):
        unet = UNet(ucfg)
        tes = [(prefix, ClipTextModel(c)) for prefix, c in zip(TE_PREFIXES[arch], te_cfgs)]
    return unet, tes


def _configs_from_header(path: Path, arch: str):
    import torch
    from safetensors import safe_open

    from ..models import checkpoint as ckpt
    from ..models.unet import UNetConfig

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    tensors = ckpt.normalize_keys(tensors)
    unet_sd = ckpt.part(tensors, ckpt.UNET_PREFIX)
    ucfg = UNetConfig.from_state_dict_shapes({k: tuple(v.shape) for k, v in unet_sd.items()})
    if arch == "sd15":
        tes = [ckpt.infer_clip_config(ckpt.part(tensors, ckpt.SD15_TE_PREFIX), "quick_gelu")]
    else:
        tes = [ckpt.infer_clip_config(ckpt.part(tensors, ckpt.SDXL_TE1_PREFIX), "quick_gelu"),
               ckpt.infer_open_clip_config(ckpt.part(tensors, ckpt.SDXL_TE2_PREFIX))]
    return ucfg, tes


def network_plan(config: TrainConfig, arch: str | None = None) -> dict[str, Any]:
    """{arch, network, modules: {part: n}, parameters: {part: n}, trainable_parameters, size_mb}."""
    from ..network.network import create_network_for

    arch = arch or config.arch
    unet, tes = _meta_modules(arch, config.checkpoint)
    net = create_network_for(arch, unet, tes, config.network_config())
    params: dict[str, int] = {}
    for key, lora in net.loras():
        part = net.target(key).part
        params[part] = params.get(part, 0) + sum(p.numel() for p in lora.parameters())
    bytes_per = {"fp16": 2, "bf16": 2}.get(config.save_precision, 4)
    return {
        "arch": arch,
        "network": config.network_type,
        "modules": net.counts(),
        "parameters": params,
        "trainable_parameters": sum(params.values()),
        "file_mb": round(sum(params.values()) * bytes_per / 2**20, 2),
    }


def dry_run_info(project: Project, config: TrainConfig) -> dict[str, Any]:
    """Everything `dry_run` says, as JSON-able values. Validation errors raise StudioError."""
    from .data import plan_summary

    dataset = load_and_validate(project, config)
    plan = dataset.plan(config)
    problems = validate(config, dataset.summary)
    return {
        "project": project.name,
        "preview": plan_summary(config, dataset),
        "steps": {"batches_per_epoch": plan.batches_per_epoch, "steps_per_epoch": plan.steps_per_epoch,
                  "epochs": plan.epochs, "total_steps": plan.total_steps, "warmup_steps": plan.warmup_steps},
        "buckets": {f"{w}x{h}": n for (w, h), n in sorted(dataset.summary.bucket_counts.items())},
        "network": network_plan(config),
        "warnings": [str(p) for p in problems if not p.is_error],
    }


def dry_run(project: Project, config: TrainConfig) -> str:
    """The step preview and the network's plan, in sentences; loads no model weights."""
    info = dry_run_info(project, config)
    net = info["network"]
    modules = ", ".join(f"{part} {n}" for part, n in net["modules"].items())
    params = ", ".join(f"{part} {n:,}" for part, n in net["parameters"].items())
    lines = [info["preview"],
             (f"{net['network']} for {net['arch']}: modules {modules}; trainable parameters {net['trainable_parameters']:,} "
              f"({params}); about {net['file_mb']} MB per file.")]
    lines += info["warnings"]
    return "\n".join(lines)


def dry_run_json(project: Project, config: TrainConfig) -> str:
    return json.dumps(dry_run_info(project, config), indent=1)
