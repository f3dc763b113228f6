"""TrainConfig: every setting of the Colab trainers, typed, with the guide's defaults.

One field per line; the comment names the guide setting (colab-settings.md §2.2 SD1.5, §2.3 XL)
or the kohya key it comes from. `TrainConfig()` is the SD1.5 guide; `sdxl_defaults()` the XL one.
The `[train]` section of project.toml is `to_toml_dict()`; `from_toml_dict()` reads it back,
refusing unknown keys with the closest valid name. `validate()` is the one place that checks a
config against itself and against the dataset it will train on.

No torch here: the CLI's --help and the UI's forms import this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StudioError
from . import steps as steps_mod
from .buckets import Bucketer, make_bucketer
from .captions import CaptionOptions
from .lr_schedules import SCHEDULERS, LRSchedule, make_schedule, warmup_steps_for

if TYPE_CHECKING:
    from ..network.network import NetworkConfig
    from .data import DatasetSummary
    from .noise import NoiseOptions

ARCHS = ("sd15", "sdxl")
UNITS = ("epochs", "steps")
NETWORK_TYPES = ("LoRA", "LoCon")
MIXED_PRECISIONS = ("fp16", "bf16", "no")
SAVE_PRECISIONS = ("fp16", "bf16", "float")
# The notebooks' optimizer lists (SD1.5 extras cell and XL main cell), in kohya's spelling.
OPTIMIZERS = ("AdamW8bit", "AdamW", "Prodigy", "DAdaptation", "DAdaptAdam", "DAdaptLion", "Lion",
              "SGDNesterov", "SGDNesterov8bit", "AdaFactor", "CAME")
ADAPTIVE_OPTIMIZERS = ("Prodigy", "DAdaptation", "DAdaptAdam", "DAdaptLion")  # lr ~1: they find the step size
CAPTION_EXTENSIONS = (".txt", ".caption")
MAX_TOKEN_LENGTHS = (75, 150, 225)
CROSS_ATTENTION = ("sdpa", "xformers")


@dataclass
class DatasetFolder:
    """One image folder and how often it is seen per epoch (the Colab's "multiple folders" subsets)."""

    path: str = "dataset"  # relative paths are inside the project folder (kohya image_dir)
    repeats: int = 10  # the guide's num_repeats (kohya num_repeats)
    is_regularization: bool = False  # kohya is_reg: balanced to the training images, weighted by prior_loss_weight
    class_tokens: str = ""  # caption of images without a caption file ("" = the project name)


PATH_SETTINGS = ("checkpoint", "vae", "network_weights", "output_dir")  # besides datasets[].path


@dataclass
class TrainConfig:
    """All settings of one LoRA training run. Defaults are the guide's SD1.5 trainer."""

    # ---- project and model
    project_name: str = ""  # the guide's project_name: output_name and file prefix ("" = the project's name)
    output_dir: str = ""  # "" = the project's output folder (the WebUI's Lora/<project> inside the WebUI)
    arch: str = "sd15"  # "sd15" | "sdxl": which trainer of the guide; may be set without a checkpoint
    checkpoint: str = ""  # training_model / custom model path; "" = the model the WebUI has loaded
    vae: str = ""  # XL trainer's separate VAE (stabilityai/sdxl-vae); "" = the checkpoint's own
    v_parameterization: bool | None = None  # custom_model_is_vpred / SD2 box; None = what the checkpoint says
    zero_terminal_snr: bool | None = None  # XL sets it with v-pred; None = what the checkpoint says
    scale_v_pred_loss_like_noise_pred: bool | None = None  # XL sets it with v-pred; None = on for v-pred
    no_half_vae: bool = False  # XL: always on (the SDXL VAE makes NaNs in fp16)

    # ---- dataset and processing
    datasets: list[DatasetFolder] = field(default_factory=lambda: [DatasetFolder()])  # folder(s) with repeats
    caption_extension: str = ".txt"  # XL dropdown ".txt" | ".caption"
    resolution: int = 512  # SD1.5 slider 512-1024; XL hidden, 1024
    flip_aug: bool = False  # SD1.5 checkbox; XL not offered (off)
    shuffle_tags: bool = True  # the guide's shuffle_tags (kohya shuffle_caption)
    keep_tokens: int = 1  # the guide's activation_tags: leading tags never shuffled (0-3)
    keep_tokens_separator: str = ""  # kohya: text before it (e.g. "|||") stays fixed
    caption_dropout_rate: float = 0.0  # kohya: whole caption dropped with this probability
    caption_tag_dropout_rate: float = 0.0  # kohya: each non-kept tag dropped with this probability
    weighted_captions: bool = False  # SD1.5 extras: "(tag:1.2)" syntax in captions
    enable_bucket: bool = True  # both trainers: always on
    min_bucket_reso: int = 256  # SD1.5: 256 (320 above 640 px); XL 256
    max_bucket_reso: int = 1024  # SD1.5: 1024 (1280 above 640 px); XL 4096
    bucket_no_upscale: bool = False  # both trainers: upscaling allowed
    bucket_reso_steps: int = 64  # both trainers: 64 px
    cache_latents: bool = True  # SD1.5: in memory; XL checkbox (on)
    cache_latents_to_disk: bool = False  # XL cache_latents_to_drive (on): under <project>/.cache/latents
    cache_text_encoder_outputs: bool = False  # XL checkbox (off); also turns off shuffle and TE training
    prior_loss_weight: float = 1.0  # both trainers: 1.0, loss weight of regularization images

    # ---- steps
    unit: str = "epochs"  # the guide's preferred_unit: "epochs" | "steps"
    max_train_epochs: int = 10  # how_many in epochs mode
    max_train_steps: int = 2000  # how_many in steps mode (the form's "~2000 steps")
    train_batch_size: int = 2  # SD1.5 slider 1-8 (2); XL 1-16 (4)
    gradient_accumulation_steps: int = 1  # XL: 1
    save_every_n_epochs: int = 1  # 0 = only at the end
    keep_only_last_n_epochs: int = 10  # kohya save_last_n_epochs; 0 = keep all
    seed: int = 42  # both trainers: fixed 42

    # ---- learning
    unet_lr: float = 5e-4  # SD1.5 5e-4; XL 3e-4 (kohya learning_rate too)
    text_encoder_lr: float = 1e-4  # SD1.5 1e-4; XL 6e-5; 0 = text encoder not trained (styles)
    lr_scheduler: str = "cosine_with_restarts"  # constant, constant_with_warmup, cosine, cosine_with_restarts, linear, polynomial, rex
    lr_scheduler_num_cycles: int = 3  # the guide's lr_scheduler_number: restarts / REX cycles
    lr_scheduler_power: float = 1.0  # the guide's lr_scheduler_number for polynomial
    lr_warmup_ratio: float = 0.05  # warmup steps = int(total x ratio); SD1.5 0-0.5, XL 0-0.2
    min_snr_gamma: float = 5.0  # SD1.5 checkbox -> 5.0; XL slider 4-16 (8.0); 0 = off
    noise_offset: float = 0.0  # both trainers: none
    multires_noise_iterations: int = 0  # XL "multinoise": 6; 0 = off
    multires_noise_discount: float = 0.3  # XL "multinoise": 0.3
    ip_noise_gamma: float = 0.0  # XL checkbox + slider 0.05-0.1; 0 = off
    min_timestep: int = 0  # XL: 0
    max_timestep: int = 1000  # XL: 1000 (exclusive)
    optimizer: str = "AdamW8bit"  # the default when the SD1.5 optimizer cell is not run; XL dropdown default
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # key=value pairs (presets.recommended_optimizer_args)
    max_grad_norm: float = 1.0  # XL: 1.0 (kohya's default); 0 = no clipping
    loss_type: str = "l2"  # XL: "l2"

    # ---- network
    network_type: str = "LoRA"  # the guide's lora_type: "LoRA" | "LoCon" (both kohya networks.lora)
    network_dim: int = 16  # SD1.5 1-128 (16); XL 1-32 (8)
    network_alpha: float = 8.0  # SD1.5 8; XL 4; the guide: half of dim
    conv_dim: int = 8  # LoCon only: SD1.5 8; XL 16
    conv_alpha: float = 4.0  # LoCon only: SD1.5 4; XL 8
    network_dropout: float = 0.0  # kohya network_dropout; 0 = off
    network_weights: str = ""  # the guide's continue_from_lora (a .safetensors LoRA)

    # ---- precision and memory
    mixed_precision: str = "fp16"  # SD1.5 fixed fp16; XL "precision" dropdown: fp16 | bf16 | no (= "float")
    full_fp16: bool = False  # XL "full fp16" (default): the network too in fp16
    full_bf16: bool = False  # XL "full bf16"
    save_precision: str = "fp16"  # both trainers: fp16
    gradient_checkpointing: bool = False  # SD1.5 off; XL always on
    cross_attention: str = "sdpa"  # XL dropdown sdpa | xformers; we always run SDPA

    # ---- text encoder
    clip_skip: int = 2  # SD1.5 fixed 2; not used for SDXL (kohya ignores it)
    max_token_length: int = 225  # both trainers: 225

    # ---- samples (not in the Colab, which makes none; the Compare tab is the guide's check)
    sample_prompts: list[str] = field(default_factory=list)  # prompts rendered after sampled epochs
    sample_every_n_epochs: int = 0  # 0 = no samples during training
    sample_seed: int = 42  # the same seed every epoch, so samples compare
    sample_steps: int = 20  # sampler steps per sample image
    sample_cfg_scale: float = 7.0  # CFG of the samples (the WebUI's default)

    # ---- presets

    @classmethod
    def sd15_defaults(cls) -> TrainConfig:
        """The guide's SD1.5 Lora Trainer: 512 px, 10 repeats, batch 2, 10 epochs, 5e-4 / 1e-4,
        cosine with 3 restarts, 5% warmup, min-SNR 5, LoRA 16/8 (LoCon conv 8/4), clip skip 2."""
        return cls()

    @classmethod
    def sdxl_defaults(cls) -> TrainConfig:
        """The guide's XL Lora Trainer: 1024 px, 2 repeats, batch 4, 3e-4 / 6e-5, min-SNR 8,
        multires noise 6/0.3, LoRA 8/4 (LoCon conv 16/8), full fp16, gradient checkpointing,
        latents cached in memory and on disk, AdamW8bit with the guide's recommended args."""
        return cls(
            arch="sdxl",
            no_half_vae=True,
            datasets=[DatasetFolder(repeats=2)],
            resolution=1024,
            max_bucket_reso=4096,
            cache_latents_to_disk=True,
            train_batch_size=4,
            unet_lr=3e-4,
            text_encoder_lr=6e-5,
            min_snr_gamma=8.0,
            multires_noise_iterations=6,
            multires_noise_discount=0.3,
            optimizer_args={"weight_decay": 0.1, "betas": [0.9, 0.99]},
            network_dim=8,
            network_alpha=4.0,
            conv_dim=16,
            conv_alpha=8.0,
            full_fp16=True,
            gradient_checkpointing=True,
            clip_skip=1,
        )

    @classmethod
    def defaults_for(cls, arch: str) -> TrainConfig:
        if arch == "sd15":
            return cls.sd15_defaults()
        if arch == "sdxl":
            return cls.sdxl_defaults()
        raise StudioError(f"arch {arch!r} is not a model family LoRA Studio trains.", "Use 'sd15' or 'sdxl'.")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ---- derived settings (what the data pipeline, the loop and the network take)

    @property
    def locon(self) -> bool:
        return self.network_type == "LoCon"

    @property
    def train_text_encoder(self) -> bool:
        """kohya trains the text encoder(s) unless their LR is 0 or their outputs are cached."""
        return self.text_encoder_lr > 0 and not self.cache_text_encoder_outputs

    @property
    def caches_latents(self) -> bool:
        return self.cache_latents or self.cache_latents_to_disk

    def v_prediction(self, model_prediction: str = "eps") -> bool:
        """Train on v targets? The override if set, else the model's ("eps" | "v")."""
        return self.v_parameterization if self.v_parameterization is not None else model_prediction == "v"

    def uses_zero_terminal_snr(self, model_zero_terminal_snr: bool = False) -> bool:
        return self.zero_terminal_snr if self.zero_terminal_snr is not None else model_zero_terminal_snr

    def v_pred_like_noise_pred(self, v_prediction: bool) -> bool:
        """kohya scale_v_pred_loss_like_noise_pred: the XL trainer turns it on with v-pred."""
        on = self.scale_v_pred_loss_like_noise_pred
        return v_prediction and (on if on is not None else True)

    def caption_options(self) -> CaptionOptions:
        """Caption processing; with cached text-encoder outputs captions must not change (kohya)."""
        fixed = self.cache_text_encoder_outputs
        return CaptionOptions(
            shuffle=self.shuffle_tags and not fixed,
            keep_tokens=self.keep_tokens,
            keep_tokens_separator=self.keep_tokens_separator,
            caption_dropout_rate=0.0 if fixed else self.caption_dropout_rate,
            tag_dropout_rate=0.0 if fixed else self.caption_tag_dropout_rate,
        )

    def noise_options(self, v_prediction: bool) -> NoiseOptions:
        from .noise import NoiseOptions

        return NoiseOptions(
            noise_offset=self.noise_offset,
            multires_noise_iterations=self.multires_noise_iterations,
            multires_noise_discount=self.multires_noise_discount,
            ip_noise_gamma=self.ip_noise_gamma,
            min_timestep=self.min_timestep,
            max_timestep=self.max_timestep,
            v_prediction=v_prediction,
        )

    def bucketer(self) -> Bucketer:
        return make_bucketer(self.resolution, self.enable_bucket, self.min_bucket_reso, self.max_bucket_reso,
                             self.bucket_reso_steps, self.bucket_no_upscale)

    def network_config(self) -> NetworkConfig:
        """The network's shape (network.NetworkConfig)."""
        from ..network.network import NetworkConfig

        return NetworkConfig(
            dim=self.network_dim,
            alpha=float(self.network_alpha),
            conv_dim=self.conv_dim if self.locon else None,
            conv_alpha=float(self.conv_alpha) if self.locon else None,
            train_unet=True,
            train_text_encoder=self.train_text_encoder,
            dropout=self.network_dropout or None,
        )

    def warmup_steps(self, total_steps: int) -> int:
        return warmup_steps_for(self.lr_scheduler, self.lr_warmup_ratio, total_steps, self.lr_scheduler_num_cycles)

    def lr_schedule(self, total_steps: int) -> LRSchedule:
        return make_schedule(self.lr_scheduler, total_steps, self.lr_warmup_ratio, self.lr_scheduler_num_cycles,
                             self.lr_scheduler_power)

    def plan(self, folders: Sequence[steps_mod.FolderCount], bucket_counts: dict) -> steps_mod.StepPlan:
        """The run length (steps.plan_steps) with this config's batch, unit and warmup."""
        plan = steps_mod.plan_steps(folders, bucket_counts, max(1, self.train_batch_size), self.unit,
                                    self.max_train_epochs, self.max_train_steps, max(1, self.gradient_accumulation_steps))
        return dataclasses.replace(plan, warmup_steps=self.warmup_steps(plan.total_steps))

    def checkpoint_path(self, project_dir: str | Path) -> Path | None:
        """The model file to train on (relative: inside the project folder, project.in_project);
        None = the WebUI's model."""
        from ..project import in_project

        return in_project(project_dir, self.checkpoint) if self.checkpoint else None

    def with_paths(self, project_dir: str | Path, confine: Callable[[Path], Path]) -> TrainConfig:
        """This config with every path it names made absolute against the project folder and passed
        through `confine`, the one check of where a path may point (it raises a StudioError): the
        model files and the output folder; the dataset folders are checked the same way. An empty
        path stays empty (the defaults)."""
        from ..project import in_project

        def fix(text: str) -> str:
            return str(confine(in_project(project_dir, text)))

        changes = {name: fix(getattr(self, name)) for name in PATH_SETTINGS if getattr(self, name).strip()}
        for folder in self.datasets:  # checked, but kept as written: a project with relative folders can move
            fix(folder.path or ".")
        return self.replace(**changes)

    def resolve_folders(self, project_dir: str | Path) -> list[DatasetFolder]:
        """The dataset folders with relative paths made absolute against the project folder."""
        from ..project import in_project

        return [dataclasses.replace(f, path=str(in_project(project_dir, f.path))) for f in self.datasets]

    # ---- TOML

    def to_toml_dict(self) -> dict[str, Any]:
        """The `[train]` section of project.toml (None values are left out; they read back as None)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "datasets":
                value = [dataclasses.asdict(d) for d in value]
            elif isinstance(value, (list, dict)):
                value = _copy(value)
            out[f.name] = value
        return out

    @classmethod
    def from_toml_dict(cls, d: dict[str, Any], source: str = "[train]") -> TrainConfig:
        """A config from a `[train]` section. Missing keys take the defaults of the section's arch;
        unknown keys and wrongly typed values are StudioErrors naming the key."""
        if not isinstance(d, dict):
            raise StudioError(f"{source} is not a table.", "Write it as a [train] section of key = value lines.")
        arch = d.get("arch", "sd15")
        if arch not in ARCHS:
            raise StudioError(f"{source}: arch = {arch!r} is not one of {', '.join(ARCHS)}.", "Use 'sd15' or 'sdxl'.")
        base = cls.defaults_for(arch)
        hints = typing.get_type_hints(cls)
        changes: dict[str, Any] = {}
        for key, value in d.items():
            if key not in hints:
                raise StudioError(f"{source}: unknown setting {key!r}.", _closest(key, [f.name for f in dataclasses.fields(cls)]))
            if key == "datasets":
                changes[key] = _read_folders(value, source)
            else:
                changes[key] = _coerce(f"{source}.{key}", value, hints[key])
        return dataclasses.replace(base, **changes)

    def to_kohya_toml(self, project_dir: str | Path = ".", output_dir: str | Path = "", model_path: str = "") -> tuple[dict, dict]:
        """(training_config, dataset_config) with kohya's key names, as the Colab writes them (§2.5),
        for users who want to run sd-scripts themselves. None values are to be left out."""
        name = self.project_name or Path(project_dir).name
        warm = self.lr_scheduler not in ("constant",)
        training = {
            "network_arguments": {
                "unet_lr": self.unet_lr,
                "text_encoder_lr": self.text_encoder_lr if self.train_text_encoder else 0,
                "network_dim": self.network_dim,
                "network_alpha": self.network_alpha,
                "network_module": "networks.lora",
                "network_args": [f"conv_dim={self.conv_dim}", f"conv_alpha={self.conv_alpha}"] if self.locon else None,
                "network_train_unet_only": not self.train_text_encoder,
                "network_weights": self.network_weights or None,
                "network_dropout": self.network_dropout or None,
            },
            "optimizer_arguments": {
                "learning_rate": self.unet_lr,
                "lr_scheduler": "cosine" if self.lr_scheduler == "rex" else self.lr_scheduler,
                "lr_scheduler_type": "LoraEasyCustomOptimizer.RexAnnealingWarmRestarts.RexAnnealingWarmRestarts"
                if self.lr_scheduler == "rex" else None,
                "lr_scheduler_num_cycles": self.lr_scheduler_num_cycles if self.lr_scheduler == "cosine_with_restarts" else None,
                "lr_scheduler_power": self.lr_scheduler_power if self.lr_scheduler == "polynomial" else None,
                "lr_warmup_steps": self.lr_warmup_ratio if warm and self.lr_warmup_ratio and self.lr_scheduler != "rex" else None,
                "optimizer_type": self.optimizer,
                "optimizer_args": [f"{k}={_kohya_arg(v)}" for k, v in self.optimizer_args.items()] or None,
                "loss_type": self.loss_type,
                "max_grad_norm": self.max_grad_norm,
            },
            "training_arguments": {
                "pretrained_model_name_or_path": model_path or self.checkpoint or None,
                "vae": self.vae or None,
                "v_parameterization": self.v_parameterization or None,
                "zero_terminal_snr": self.zero_terminal_snr or None,
                "scale_v_pred_loss_like_noise_pred": self.scale_v_pred_loss_like_noise_pred or None,
                "max_train_epochs": self.max_train_epochs if self.unit == "epochs" else None,
                "max_train_steps": self.max_train_steps if self.unit == "steps" else None,
                "train_batch_size": self.train_batch_size,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "seed": self.seed,
                "max_token_length": self.max_token_length,
                "clip_skip": self.clip_skip if self.arch == "sd15" else None,
                "sdpa": self.cross_attention == "sdpa" or None,
                "xformers": self.cross_attention == "xformers" or None,
                "min_snr_gamma": self.min_snr_gamma or None,
                "noise_offset": self.noise_offset or None,
                "multires_noise_iterations": self.multires_noise_iterations or None,
                "multires_noise_discount": self.multires_noise_discount if self.multires_noise_iterations else None,
                "ip_noise_gamma": self.ip_noise_gamma or None,
                "min_timestep": self.min_timestep,
                "max_timestep": self.max_timestep,
                "mixed_precision": self.mixed_precision,
                "full_fp16": self.full_fp16 or None,
                "full_bf16": self.full_bf16 or None,
                "no_half_vae": self.no_half_vae or None,
                "gradient_checkpointing": self.gradient_checkpointing or None,
                "cache_latents": self.caches_latents,
                "cache_latents_to_disk": self.cache_latents_to_disk or None,
                "cache_text_encoder_outputs": self.cache_text_encoder_outputs or None,
                "weighted_captions": self.weighted_captions or None,
                "prior_loss_weight": self.prior_loss_weight,
            },
            "saving_arguments": {
                "save_precision": self.save_precision,
                "save_model_as": "safetensors",
                "save_every_n_epochs": self.save_every_n_epochs or None,
                "save_last_n_epochs": self.keep_only_last_n_epochs or None,
                "output_name": name,
                "output_dir": str(output_dir) if output_dir else (self.output_dir or None),
            },
        }
        subsets = []
        for f in self.resolve_folders(project_dir):
            subsets.append({
                "image_dir": f.path, "num_repeats": f.repeats,
                "is_reg": f.is_regularization or None, "class_tokens": f.class_tokens or None,
            })
        dataset = {
            "general": {
                "resolution": self.resolution,
                "shuffle_caption": self.caption_options().shuffle,
                "keep_tokens": self.keep_tokens,
                "keep_tokens_separator": self.keep_tokens_separator or None,
                "caption_dropout_rate": self.caption_dropout_rate or None,
                "caption_tag_dropout_rate": self.caption_tag_dropout_rate or None,
                "flip_aug": self.flip_aug,
                "caption_extension": self.caption_extension,
                "enable_bucket": self.enable_bucket,
                "bucket_no_upscale": self.bucket_no_upscale,
                "bucket_reso_steps": self.bucket_reso_steps,
                "min_bucket_reso": self.min_bucket_reso,
                "max_bucket_reso": self.max_bucket_reso,
            },
            "datasets": [{"subsets": subsets}],
        }
        return _drop_none(training), _drop_none(dataset)


# ---- TOML helpers -------------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _kohya_arg(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_kohya_arg(x) for x in v) + "]"
    return str(v)


def _closest(key: str, valid: Sequence[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if match:
        return f"Did you mean {match[0]!r}?"
    return "Remove it; the valid settings are listed in TrainConfig (lora_trainer/train/config.py)."


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _coerce(where: str, value: Any, hint: Any) -> Any:
    """Check a TOML value against a field's type; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(where, value, inner[0])
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value)] if args else list(value)
    elif origin is dict:
        if isinstance(value, dict):
            return _copy(value)
    elif hint is Any:
        return value
    want = _type_name(origin or hint)
    raise StudioError(f"{where} = {value!r} is not a {want}.", f"Write a {want} value (for example the default).")


def _read_folders(value: Any, source: str) -> list[DatasetFolder]:
    if not isinstance(value, list):
        raise StudioError(f"{source}.datasets is not a list of folders.", "Write one [[train.datasets]] table per folder.")
    hints = typing.get_type_hints(DatasetFolder)
    out = []
    for i, item in enumerate(value):
        where = f"{source}.datasets[{i}]"
        if not isinstance(item, dict):
            raise StudioError(f"{where} is not a table.", "Give each folder a path and repeats.")
        for key in item:
            if key not in hints:
                raise StudioError(f"{where}: unknown setting {key!r}.", _closest(key, list(hints)))
        out.append(DatasetFolder(**{k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in item.items()}))
    return out


def load_train_config(section: dict[str, Any] | None, arch: str | None = None) -> TrainConfig:
    """The config of a project's `[train]` section (ProjectFile.section("train")); an empty section
    gives the defaults of `arch` (or SD1.5)."""
    section = dict(section or {})
    if arch and "arch" not in section:
        section["arch"] = arch
    return TrainConfig.from_toml_dict(section)


# ---- validation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: the field, its value, what is wrong (with the allowed range) and the fix."""

    field: str
    value: Any
    message: str
    fix: str = ""
    severity: str = "error"  # "error" stops a run; "warning" is shown and the run may go on

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        head = "Error" if self.is_error else "Warning"
        return f"{head}: {self.field} = {self.value!r}: {self.message}" + (f" {self.fix}" if self.fix else "")


def errors(problems: Sequence[Problem]) -> list[Problem]:
    return [p for p in problems if p.is_error]


def raise_if_errors(problems: Sequence[Problem]) -> None:
    """A StudioError listing every error (warnings are not raised)."""
    errs = errors(problems)
    if errs:
        raise StudioError("The training settings have problems:\n" + "\n".join(f"- {p}" for p in errs),
                          "Fix them in the Train tab or in the [train] section of project.toml.")


def validate(config: TrainConfig, summary: DatasetSummary | None = None) -> list[Problem]:
    """Every problem of `config`, and of `config` with this dataset if a summary is given."""
    p: list[Problem] = []
    c = config

    def err(name: str, message: str, fix: str = "", severity: str = "error") -> None:
        p.append(Problem(name, getattr(c, name, None), message, fix, severity))

    def warn(name: str, message: str, fix: str = "") -> None:
        err(name, message, fix, "warning")

    def choice(name: str, allowed: Sequence[str]) -> bool:
        value = getattr(c, name)
        if value in allowed:
            return True
        close = [a for a in allowed if a.lower() == str(value).lower()] or difflib.get_close_matches(str(value), allowed, 1, 0.4)
        err(name, f"must be one of {', '.join(map(str, allowed))}.", f"Did you mean {close[0]!r}?" if close else "")
        return False

    def at_least(name: str, low: float, what: str = "") -> bool:
        value = getattr(c, name)
        if isinstance(value, (int, float)) and value >= low:
            return True
        err(name, f"must be {low} or more{what}.", f"Set it to {low} or more.")
        return False

    # 1. model
    choice("arch", ARCHS)
    for name in ("checkpoint", "vae", "network_weights"):
        value = getattr(c, name)
        if value and not Path(value).is_file():
            err(name, "the file does not exist.", "Give the full path of an existing file, or leave it empty.")
    if c.network_weights and not c.network_weights.endswith(".safetensors"):
        err("network_weights", "must be a .safetensors LoRA (the guide's continue_from_lora).", "Pick the LoRA file to continue from.")
    if any(ch in '/\\:*?"<>|' or ord(ch) < 32 for ch in c.project_name):
        err("project_name", "is used as a file name, so it must not contain / \\ : * ? \" < > | or control characters.",
            "Use letters, digits, '-' and '_'.")
    if c.zero_terminal_snr and c.v_parameterization is False:
        warn("zero_terminal_snr", "zero terminal SNR is meant for v-prediction models; with epsilon targets the last timestep teaches nothing.",
             "Turn on v_parameterization, or turn zero_terminal_snr off.")

    # 2. dataset and buckets
    if not c.datasets:
        err("datasets", "no image folder is configured.", "Add the project's dataset folder with its repeats.")
    for i, f in enumerate(c.datasets):
        if not isinstance(f.repeats, int) or f.repeats < 1:
            p.append(Problem(f"datasets[{i}].repeats", f.repeats, "must be 1 or more.", "The guide: images x repeats around 200-400 (SD1.5) or 100 (SDXL)."))
    if c.datasets and all(f.is_regularization for f in c.datasets):
        err("datasets", "every folder is a regularization folder; there is nothing to learn.", "Mark the training folder as not regularization.")
    choice("caption_extension", CAPTION_EXTENSIONS)
    step_unit = 64 if c.arch == "sd15" else 32
    if at_least("resolution", 64) and c.resolution % 64:
        err("resolution", "must be a multiple of 64.", f"Use {max(1, round(c.resolution / 64)) * 64}.")
    elif c.resolution < 256 and c.resolution < _native_side(c.checkpoint):  # the demo's micro models are 64 px
        warn("resolution", f"{c.resolution} px suits only tiny models such as the demo's.",
             "Real models train at 512 (SD1.5) or 1024 (SDXL); 256 is the least the guide allows.")
    if c.resolution > 2048:
        err("resolution", "must be at most 2048.", "The guide trains SD1.5 at 512 and SDXL at 1024.")
    if at_least("bucket_reso_steps", step_unit) and c.bucket_reso_steps % step_unit:
        err("bucket_reso_steps", f"must be a multiple of {step_unit} for {c.arch}.", "The guide uses 64.")
    if c.enable_bucket and not c.bucket_no_upscale:
        if not 64 <= c.min_bucket_reso <= c.resolution:
            err("min_bucket_reso", f"must be between 64 and the resolution ({c.resolution}).", "The guide uses 256.")
        if c.max_bucket_reso < c.resolution:
            err("max_bucket_reso", f"must be at least the resolution ({c.resolution}).", "The guide uses 1024 (SD1.5) or 4096 (SDXL).")
    most_tags = max(75, c.max_token_length or 75)  # keep_tokens counts tags; each tag is a token or more
    if at_least("keep_tokens", 0) and c.keep_tokens > most_tags:
        err("keep_tokens", f"must be at most {most_tags}: more tags than a caption of {most_tags} tokens can hold.",
            "The guide keeps 1 (the activation tag); to keep every tag in place, turn Shuffle tags off instead.")
    for name in ("caption_dropout_rate", "caption_tag_dropout_rate"):
        if not 0 <= getattr(c, name) < 1:
            err(name, "must be in [0, 1).", "0 turns it off; kohya users use 0.05-0.1.")
    if c.weighted_captions:
        warn("weighted_captions", "weighted captions are read as plain text by this trainer.", "Remove the (tag:1.2) weights or turn this off.")
    if c.cache_text_encoder_outputs:
        if c.arch != "sdxl":
            err("cache_text_encoder_outputs", "only the SDXL trainer caches text-encoder outputs.", "Turn it off for SD1.5.")
        if c.text_encoder_lr > 0:
            err("cache_text_encoder_outputs", f"the text encoder cannot be trained (text_encoder_lr = {c.text_encoder_lr}) while its outputs are cached.",
                "Set text_encoder_lr to 0, or turn the cache off.")
        if c.shuffle_tags or c.caption_dropout_rate or c.caption_tag_dropout_rate:
            warn("cache_text_encoder_outputs", "cached captions never change, so tag shuffling and caption dropout are off.",
                 "Turn the cache off to shuffle tags.")
    if not 0 <= c.prior_loss_weight:
        err("prior_loss_weight", "must be 0 or more.", "The guide uses 1.0.")

    # 3. steps
    choice("unit", UNITS)
    at_least("train_batch_size", 1)
    at_least("gradient_accumulation_steps", 1)
    if c.unit == "epochs":
        at_least("max_train_epochs", 1, " in epochs mode")
    elif c.unit == "steps":
        at_least("max_train_steps", 1, " in steps mode")
    at_least("save_every_n_epochs", 0, " (0 = only at the end)")
    at_least("keep_only_last_n_epochs", 0, " (0 = keep all)")
    at_least("seed", 0)

    # 4. learning
    if not c.unet_lr > 0:
        err("unet_lr", "must be more than 0 (the UNet is always trained).", "The guide uses 5e-4 (SD1.5) or 3e-4 (SDXL).")
    if c.text_encoder_lr < 0:
        err("text_encoder_lr", "must be 0 or more (0 = the text encoder is not trained).", "The guide uses 1e-4 (SD1.5) or 6e-5 (SDXL).")
    if c.optimizer in ADAPTIVE_OPTIMIZERS and 0 < c.unet_lr < 0.1:
        warn("unet_lr", f"{c.optimizer} finds its own step size and expects a learning rate near 1.",
             "The guide uses 0.5 (SD1.5) or 0.75 (SDXL) with it.")
    if choice("lr_scheduler", SCHEDULERS):
        if c.lr_scheduler in ("cosine_with_restarts", "rex"):
            at_least("lr_scheduler_num_cycles", 1)
        if c.lr_scheduler == "polynomial" and not c.lr_scheduler_power > 0:
            err("lr_scheduler_power", "must be more than 0.", "1 is a straight line.")
        if c.lr_scheduler == "constant" and c.lr_warmup_ratio > 0:
            warn("lr_warmup_ratio", "the constant scheduler has no warmup, so this is ignored.", "Use constant_with_warmup to warm up.")
    if not 0 <= c.lr_warmup_ratio <= 0.5:
        err("lr_warmup_ratio", "must be between 0 and 0.5.", "The guide uses 0.05.")
    at_least("min_snr_gamma", 0, " (0 = off)")
    if not 0 <= c.noise_offset < 1:
        err("noise_offset", "must be in [0, 1).", "0 = off; kohya suggests about 0.1.")
    at_least("multires_noise_iterations", 0, " (0 = off)")
    if c.multires_noise_iterations and not 0 < c.multires_noise_discount < 1:
        err("multires_noise_discount", "must be in (0, 1).", "The guide uses 0.3.")
    if not 0 <= c.ip_noise_gamma < 1:
        err("ip_noise_gamma", "must be in [0, 1).", "0 = off; the guide's slider is 0.05-0.1.")
    if not 0 <= c.min_timestep < c.max_timestep <= 1000:
        err("max_timestep", f"timesteps must satisfy 0 <= min_timestep ({c.min_timestep}) < max_timestep <= 1000.", "Use 0 and 1000.")
    choice("optimizer", OPTIMIZERS)
    at_least("max_grad_norm", 0, " (0 = no clipping)")
    choice("loss_type", ("l2",))

    # 5. network
    choice("network_type", NETWORK_TYPES)
    if at_least("network_dim", 1, " (the LoRA's rank)") and c.network_dim > 1024:
        err("network_dim", "must be at most 1024.", "The guide uses 8-32.")
    if not c.network_alpha > 0:
        err("network_alpha", "must be more than 0.", f"The guide: half of dim ({max(1, c.network_dim // 2)}).")
    elif c.network_alpha > c.network_dim:
        warn("network_alpha", f"alpha above dim ({c.network_dim}) scales the LoRA up, which is rarely wanted.", "The guide: half of dim.")
    if c.locon:
        at_least("conv_dim", 1, " for LoCon")
        if not c.conv_alpha > 0:
            err("conv_alpha", "must be more than 0 for LoCon.", "The guide: half of conv_dim.")
    if not 0 <= c.network_dropout < 1:
        err("network_dropout", "must be in [0, 1).", "0 = off.")

    # 6. precision and text
    choice("mixed_precision", MIXED_PRECISIONS)
    choice("save_precision", SAVE_PRECISIONS)
    if c.full_fp16 and c.mixed_precision != "fp16":
        err("full_fp16", f"needs mixed_precision fp16 (it is {c.mixed_precision}).", "Set mixed_precision to fp16 or turn full_fp16 off.")
    if c.full_bf16 and c.mixed_precision != "bf16":
        err("full_bf16", f"needs mixed_precision bf16 (it is {c.mixed_precision}).", "Set mixed_precision to bf16 or turn full_bf16 off.")
    choice("cross_attention", CROSS_ATTENTION)
    if c.arch == "sd15" and not 1 <= c.clip_skip <= 12:
        err("clip_skip", "must be between 1 and 12.", "The guide uses 2.")
    if c.max_token_length not in MAX_TOKEN_LENGTHS:
        err("max_token_length", f"must be one of {', '.join(map(str, MAX_TOKEN_LENGTHS))}.", "The guide uses 225.")
    if c.sample_every_n_epochs and not c.sample_prompts:
        warn("sample_prompts", "samples are asked for every few epochs, but there is no prompt.", "Add a prompt or set sample_every_n_epochs to 0.")
    at_least("sample_every_n_epochs", 0)
    if c.sample_every_n_epochs:
        at_least("sample_steps", 1)

    if summary is not None:
        p.extend(_dataset_problems(c, summary))
    return p


def _dataset_problems(c: TrainConfig, s: DatasetSummary) -> list[Problem]:
    p: list[Problem] = []
    for i, f in enumerate(s.folders):
        name = f"datasets[{i}].path"
        if not f.exists:
            p.append(Problem(name, f.path, "the folder does not exist.", "Create it or fix the path."))
        elif f.images == 0:
            p.append(Problem(name, f.path, "the folder has no images (.png .jpg .jpeg .webp .bmp).", "Add images in the Dataset tab."))
        elif f.captions == 0:  # the Colab's class-token mode: every image trains on the project name
            if c.keep_tokens > 0:
                p.append(Problem("keep_tokens", c.keep_tokens, f"{f.path} has no caption files, so there is no activation tag to keep "
                                 "(every image is trained on the project name).", "Tag the images in the Dataset tab, or set keep_tokens to 0.",
                                 "warning"))
        elif f.captions < f.images:
            p.append(Problem(name, f.path, f"{f.images - f.captions} of {f.images} images have no {c.caption_extension} caption; "
                             "they train on the folder's class tokens (or the project name).", "Tag them in the Dataset tab.", "warning"))
    if s.folders and sum(f.images for f in s.folders if not f.is_regularization) == 0 and all(f.exists for f in s.folders):
        p.append(Problem("datasets", [f.path for f in s.folders], "there are no training images.", "Add images in the Dataset tab."))
    for path, reason in s.unreadable:
        p.append(Problem("datasets", path, f"cannot be read ({reason}); it will be skipped.", "Replace or remove the file.", "warning"))
    for stem in s.duplicate_stems:
        p.append(Problem("datasets", stem, "two images share this name with different extensions, so they share one caption file.",
                         "Rename one of them."))
    if c.keep_tokens > 0 and s.images_with_captions and s.max_tags == 0:
        p.append(Problem("keep_tokens", c.keep_tokens, "the captions are empty, so there is no activation tag to keep.",
                         "Put the activation tag first in each caption.", "warning"))
    if s.train_images > 0:
        plan = c.plan(s.folder_counts, s.bucket_counts)
        if plan.too_long:
            p.append(Problem("max_train_epochs" if c.unit == "epochs" else "max_train_steps",
                             c.max_train_epochs if c.unit == "epochs" else c.max_train_steps,
                             f"the run would take {plan.total_steps} steps (over {steps_mod.MAX_SENSIBLE_STEPS}); you probably made a mistake.",
                             "Lower the repeats or the epochs.", "warning"))
        if c.lr_scheduler == "rex" and plan.total_steps and c.warmup_steps(plan.total_steps) >= plan.total_steps // max(1, c.lr_scheduler_num_cycles):
            p.append(Problem("lr_warmup_ratio", c.lr_warmup_ratio, "REX's warmup is as long as a whole cycle.", "Lower the warmup ratio."))
    return p


def _native_side(checkpoint: str) -> int:
    """The picture side the checkpoint was trained at, from its header (models.checkpoint.native_size);
    the largest family's when there is no readable file to ask."""
    from ..models.checkpoint import FAMILY_SIZE

    if checkpoint and Path(checkpoint).is_file():
        try:
            from ..models.checkpoint import describe, native_size

            info = describe(checkpoint)
            return min(native_size(info["arch"], info["metadata"]))
        except StudioError:
            pass
    return max(FAMILY_SIZE.values())


def clip_skip_of(project, checkpoint: str | Path) -> int:
    """The CLIP skip `project` trains with (SD1.5 only; 1 for SDXL), so that its grids and samples
    read prompts as its training did."""
    from ..models.checkpoint import describe

    if describe(checkpoint)["arch"] != "sd15":
        return 1
    value = project.load_file().section("train").get("clip_skip", TrainConfig.clip_skip)
    return value if isinstance(value, int) and 1 <= value <= 12 else TrainConfig.clip_skip
