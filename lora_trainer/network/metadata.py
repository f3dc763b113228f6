"""The safetensors header of a LoRA file, written as kohya's train_network.py writes it.

Every value is a string: kohya applies `str()` to each (None -> "None", True -> "True",
(512, 512) -> "(512, 512)") and `json.dumps` to the nested ones (`ss_tag_frequency`,
`ss_dataset_dirs`, `ss_reg_dataset_dirs`, `ss_bucket_info`, `ss_network_args`). Consumers read
these: A1111 takes the card alias from `ss_output_name`, the SD version from
`ss_base_model_version`, the file hash from `sshs_model_hash` and the dataset tags from
`ss_tag_frequency` (reference/kohya-format.md 2, reference/webui-host.md 4.8).

`LoraMetadata` is what the trainer fills; `build_header` turns it into the header;
`safetensors_hashes` computes `sshs_model_hash` / `sshs_legacy_hash` the way kohya does.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

SAI_MODEL_SPEC_VERSION = "1.0.1"  # kohya since 2025-08 (commit d24d7338)
IMPLEMENTATION_VERSION = "lora-studio/0.1.0"

# kohya ss_base_model_version / modelspec values per architecture.
BASE_MODEL_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
MODELSPEC_ARCHITECTURE = {"sd15": "stable-diffusion-v1/lora", "sdxl": "stable-diffusion-xl-v1-base/lora"}
MODELSPEC_IMPLEMENTATION = {"sd15": "diffusers", "sdxl": "https://github.com/Stability-AI/generative-models"}
DEFAULT_RESOLUTION = {"sd15": (512, 512), "sdxl": (1024, 1024)}


@dataclass
class LoraMetadata:
    """What a LoRA file records about its training. Defaults are kohya's CLI defaults, so a field the
    trainer does not know is written as kohya would write it for an unset flag."""

    # -- the model
    arch: str = "sd15"  # "sd15" | "sdxl"
    v_prediction: bool = False  # sd15 + v -> ss_base_model_version "sd_v1_v", modelspec prediction_type "v"
    sd_model_name: str | None = None  # checkpoint basename
    sd_model_hash: str | None = None  # A1111 legacy 8-hex hash of the checkpoint, when known
    new_sd_model_hash: str | None = None  # full sha256 of the checkpoint, when known
    vae_name: str | None = None
    vae_hash: str | None = None
    new_vae_hash: str | None = None

    # -- the run
    session_id: int = 0  # one random int per training run, shared by its epoch files
    training_started_at: float = 0.0  # unix time
    training_finished_at: float | None = None  # unix time of this save; None = now
    output_name: str | None = None  # None = the file stem (so epoch files do not share an A1111 alias)
    epoch: int = 0
    steps: int = 0
    training_comment: str | None = None
    seed: int = 0

    # -- the network; None = taken from the network being saved
    network_module: str = "networks.lora"
    network_dim: int | None = None
    network_alpha: float | None = None
    network_dropout: float | None = None
    network_args: dict[str, Any] | None = None  # written only when given (kohya: only with --network_args)

    # -- optimisation
    learning_rate: float | None = None
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    optimizer: str = "torch.optim.adamw.AdamW"  # class __module__.__name__ plus "(k=v,...)" args
    lr_scheduler: str = "constant"
    lr_warmup_steps: int | float = 0
    max_train_steps: int = 1600
    num_epochs: int = 1
    num_batches_per_epoch: int = 0
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    full_fp16: bool = False
    fp8_base: bool = False
    fp8_base_unet: bool = False
    lowram: bool = False
    cache_latents: bool = False

    # -- noise and loss
    noise_offset: float | None = None
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float | None = None
    multires_noise_iterations: int | None = None
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float | None = None
    ip_noise_gamma_random_strength: bool = False
    zero_terminal_snr: bool = False
    min_snr_gamma: float | None = None
    debiased_estimation: bool = False
    scale_weight_norms: float | None = None
    prior_loss_weight: float = 1.0
    loss_type: str = "l2"
    huber_schedule: str = "snr"
    huber_scale: float = 1.0
    huber_c: float = 0.1
    min_timestep: int | None = None
    max_timestep: int | None = None

    # -- text
    clip_skip: int | None = None
    max_token_length: int | None = None
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    shuffle_caption: bool = False
    keep_tokens: int = 0

    # -- dataset
    num_train_images: int = 0  # images x repeats
    num_reg_images: int = 0
    num_validation_images: int = 0
    batch_size_per_device: int = 1
    total_batch_size: int = 1
    resolution: tuple[int, int] | None = None  # (w, h); None = the architecture's default
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_no_upscale: bool = False
    color_aug: bool = False
    flip_aug: bool = False
    random_crop: bool = False
    face_crop_aug_range: str | None = None
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)  # {folder: {tag: count}}
    dataset_dirs: dict[str, dict[str, int]] = field(default_factory=dict)  # {folder: {"n_repeats", "img_count"}}
    reg_dataset_dirs: dict[str, dict[str, int]] = field(default_factory=dict)
    bucket_info: dict[str, Any] | None = None  # {"buckets": {"0": {"resolution": [w, h], "count": n}}, "mean_img_ar_error": x}

    # -- validation (newer kohya keys; we do not validate yet)
    validation_seed: int | None = None
    validation_split: float = 0.0
    max_validation_steps: int | None = None
    validate_every_n_epochs: int | None = None
    validate_every_n_steps: int | None = None
    resize_interpolation: str | None = None

    # -- modelspec extras (kohya's --metadata_* flags)
    title: str | None = None  # None = output name
    author: str | None = None
    description: str | None = None
    license: str | None = None
    tags: str | None = None  # comma-separated
    trigger_phrase: str | None = None
    usage_hint: str | None = None

    # -- anything else, written verbatim (keys must be strings; values are str()'d)
    extra: dict[str, str] = field(default_factory=dict)

    def base_model_version(self) -> str:
        if self.arch == "sd15" and self.v_prediction:
            return "sd_v1_v"
        return BASE_MODEL_VERSION[self.arch]


def _json(value: Any) -> str:
    return json.dumps(value)  # kohya's json.dumps defaults (", " / ": " separators, ASCII escapes)


def build_header(meta: LoraMetadata, output_name: str, now: float) -> dict[str, str]:
    """The `ss_*` and `modelspec.*` keys (no `sshs_*`; those depend on the tensors, see save)."""
    if meta.arch not in BASE_MODEL_VERSION:
        raise ValueError(f"unknown architecture {meta.arch!r}: use one of {sorted(BASE_MODEL_VERSION)}")
    name = meta.output_name or output_name
    resolution = meta.resolution or DEFAULT_RESOLUTION[meta.arch]
    ss: dict[str, Any] = {
        "ss_session_id": meta.session_id,
        "ss_training_started_at": meta.training_started_at,
        "ss_output_name": name,
        "ss_learning_rate": meta.learning_rate,
        "ss_text_encoder_lr": meta.text_encoder_lr,
        "ss_unet_lr": meta.unet_lr,
        "ss_num_train_images": meta.num_train_images,
        "ss_num_validation_images": meta.num_validation_images,
        "ss_num_reg_images": meta.num_reg_images,
        "ss_num_batches_per_epoch": meta.num_batches_per_epoch,
        "ss_num_epochs": meta.num_epochs,
        "ss_gradient_checkpointing": meta.gradient_checkpointing,
        "ss_gradient_accumulation_steps": meta.gradient_accumulation_steps,
        "ss_max_train_steps": meta.max_train_steps,
        "ss_lr_warmup_steps": meta.lr_warmup_steps,
        "ss_lr_scheduler": meta.lr_scheduler,
        "ss_network_module": meta.network_module,
        "ss_network_dim": meta.network_dim,
        "ss_network_alpha": None if meta.network_alpha is None else float(meta.network_alpha),
        "ss_network_dropout": meta.network_dropout,
        "ss_mixed_precision": meta.mixed_precision,
        "ss_full_fp16": bool(meta.full_fp16),
        "ss_v2": False,  # SD2 is not supported; A1111 reads "True" as SD2
        "ss_base_model_version": meta.base_model_version(),
        "ss_clip_skip": meta.clip_skip,
        "ss_max_token_length": meta.max_token_length,
        "ss_cache_latents": bool(meta.cache_latents),
        "ss_seed": meta.seed,
        "ss_lowram": meta.lowram,
        "ss_noise_offset": meta.noise_offset,
        "ss_multires_noise_iterations": meta.multires_noise_iterations,
        "ss_multires_noise_discount": meta.multires_noise_discount,
        "ss_adaptive_noise_scale": meta.adaptive_noise_scale,
        "ss_zero_terminal_snr": meta.zero_terminal_snr,
        "ss_training_comment": meta.training_comment,
        "ss_sd_scripts_commit_hash": IMPLEMENTATION_VERSION,  # not sd-scripts: say who wrote the file
        "ss_optimizer": meta.optimizer,
        "ss_max_grad_norm": meta.max_grad_norm,
        "ss_caption_dropout_rate": meta.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": meta.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": meta.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": meta.face_crop_aug_range,
        "ss_prior_loss_weight": meta.prior_loss_weight,
        "ss_min_snr_gamma": meta.min_snr_gamma,
        "ss_scale_weight_norms": meta.scale_weight_norms,
        "ss_ip_noise_gamma": meta.ip_noise_gamma,
        "ss_debiased_estimation": bool(meta.debiased_estimation),
        "ss_noise_offset_random_strength": meta.noise_offset_random_strength,
        "ss_ip_noise_gamma_random_strength": meta.ip_noise_gamma_random_strength,
        "ss_loss_type": meta.loss_type,
        "ss_huber_schedule": meta.huber_schedule,
        "ss_huber_scale": meta.huber_scale,
        "ss_huber_c": meta.huber_c,
        "ss_fp8_base": bool(meta.fp8_base),
        "ss_fp8_base_unet": bool(meta.fp8_base_unet),
        "ss_validation_seed": meta.validation_seed,
        "ss_validation_split": meta.validation_split,
        "ss_max_validation_steps": meta.max_validation_steps,
        "ss_validate_every_n_epochs": meta.validate_every_n_epochs,
        "ss_validate_every_n_steps": meta.validate_every_n_steps,
        "ss_resize_interpolation": meta.resize_interpolation,
        # the plain-folder dataset keys (kohya without --dataset_config)
        "ss_batch_size_per_device": meta.batch_size_per_device,
        "ss_total_batch_size": meta.total_batch_size,
        "ss_resolution": tuple(resolution),
        "ss_color_aug": bool(meta.color_aug),
        "ss_flip_aug": bool(meta.flip_aug),
        "ss_random_crop": bool(meta.random_crop),
        "ss_shuffle_caption": bool(meta.shuffle_caption),
        "ss_enable_bucket": bool(meta.enable_bucket),
        "ss_bucket_no_upscale": bool(meta.bucket_no_upscale),
        "ss_min_bucket_reso": meta.min_bucket_reso,
        "ss_max_bucket_reso": meta.max_bucket_reso,
        "ss_keep_tokens": meta.keep_tokens,
        "ss_dataset_dirs": _json(meta.dataset_dirs),
        "ss_reg_dataset_dirs": _json(meta.reg_dataset_dirs),
        "ss_tag_frequency": _json(meta.tag_frequency),
        "ss_bucket_info": _json(meta.bucket_info),
    }
    if meta.network_args is not None:
        ss["ss_network_args"] = _json(meta.network_args)
    for key, value in (
        ("ss_sd_model_name", meta.sd_model_name),
        ("ss_sd_model_hash", meta.sd_model_hash),
        ("ss_new_sd_model_hash", meta.new_sd_model_hash),
        ("ss_vae_name", meta.vae_name),
        ("ss_vae_hash", meta.vae_hash),
        ("ss_new_vae_hash", meta.new_vae_hash),
    ):
        if value is not None:  # kohya writes these only when it knows them
            ss[key] = value
    # per-save keys (kohya's save_model)
    ss["ss_training_finished_at"] = now if meta.training_finished_at is None else meta.training_finished_at
    ss["ss_steps"] = meta.steps
    ss["ss_epoch"] = meta.epoch
    header = {k: str(v) for k, v in ss.items()}
    header.update(modelspec(meta, name, resolution, now))
    header.update({str(k): str(v) for k, v in meta.extra.items()})
    return header


def modelspec(meta: LoraMetadata, title: str, resolution: tuple[int, int], now: float) -> dict[str, str]:
    """The SAI ModelSpec 1.0.1 keys kohya adds to every save (library/sai_model_spec.py)."""
    spec = {
        "modelspec.sai_model_spec": SAI_MODEL_SPEC_VERSION,
        "modelspec.architecture": MODELSPEC_ARCHITECTURE[meta.arch],
        "modelspec.implementation": MODELSPEC_IMPLEMENTATION[meta.arch],
        "modelspec.title": meta.title or title,
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        # local time, seconds precision, no zone: what kohya writes
        "modelspec.date": datetime.datetime.fromtimestamp(int(now)).isoformat(),
        "modelspec.prediction_type": "v" if meta.v_prediction else "epsilon",
        "modelspec.implementation_version": IMPLEMENTATION_VERSION,
    }
    if meta.clip_skip is not None:
        spec["modelspec.encoder_layer"] = str(meta.clip_skip)
    if meta.min_timestep is not None or meta.max_timestep is not None:
        lo = 0 if meta.min_timestep is None else meta.min_timestep
        hi = 1000 if meta.max_timestep is None else meta.max_timestep
        spec["modelspec.timestep_range"] = f"{lo},{hi}"
    for key in ("author", "description", "license", "tags", "trigger_phrase", "usage_hint"):
        value = getattr(meta, key)
        if value is not None:
            spec[f"modelspec.{key}"] = str(value)
    return spec


# ---------------------------------------------------------------------------------------------
# Hashes


def _data_section(buffer: bytes) -> memoryview:
    """The bytes after the 8-byte header length and the JSON header: the raw tensor data."""
    n = int.from_bytes(buffer[:8], "little")
    return memoryview(buffer)[8 + n:]


def safetensors_hashes(tensors: dict[str, torch.Tensor], header: dict[str, str]) -> tuple[str, str]:
    """kohya's `precalculate_safetensors_hashes`: (sshs_model_hash, sshs_legacy_hash).

    The tensors are serialised in memory with only the `ss_*` keys (user-editable keys must not
    change the hash). model hash = sha256 of the tensor data (A1111's "addnet" hash, Civitai's
    AutoV3); legacy hash = first 8 hex of sha256 over bytes [1 MiB, 1 MiB + 64 KiB) of that buffer.
    """
    from safetensors.torch import save

    ss_only = {k: v for k, v in header.items() if k.startswith("ss_")}
    buffer = save(tensors, ss_only)
    model_hash = hashlib.sha256(_data_section(buffer)).hexdigest()
    legacy_hash = hashlib.sha256(buffer[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def file_model_hash(path) -> str:
    """The addnet hash of a safetensors file on disk: sha256 of everything after the header."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_json_value(value: str | None) -> Any:
    """A JSON-valued header entry, or None when absent or not JSON (other trainers write odd things)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except (ValueError, TypeError):
        return None


__all__ = [
    "LoraMetadata",
    "build_header",
    "file_model_hash",
    "modelspec",
    "parse_json_value",
    "safetensors_hashes",
]
