"""The training settings form, generated from one table over the TrainConfig fields.

`SETTINGS` maps each field to its label, guide section, component kind, info text (the guide's
advice, briefly) and whether it is an expert option (folded away). `HIDDEN` names the fields the
form leaves out on purpose, and why. A test checks that the two together cover every field of
TrainConfig, so the form can not drift from the dataclass.

Values move between a TrainConfig and the components through `to_ui` / `config_from_values`;
nothing here builds a model or reads the dataset.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from ...errors import StudioError
from ...toml_io import value_of
from ...train.config import (
    ARCHS,
    CAPTION_EXTENSIONS,
    CROSS_ATTENTION,
    MIXED_PRECISIONS,
    NETWORK_TYPES,
    OPTIMIZERS,
    SAVE_PRECISIONS,
    UNITS,
    DatasetFolder,
    TrainConfig,
)
from ...train.lr_schedules import SCHEDULERS

SECTIONS = ("Setup", "Processing", "Steps", "Learning", "Structure", "Samples", "Precision and memory")
TRISTATE = ("auto", "on", "off")  # bool | None fields: None = what the checkpoint says


@dataclass(frozen=True)
class Setting:
    """One row of the form: a TrainConfig field (or `repeats`, the first folder's repeats)."""

    name: str
    label: str
    section: str
    kind: str  # text | lines | args | number | slider | checkbox | dropdown | tristate
    info: str
    expert: bool = False
    choices: tuple = ()
    minimum: float | None = None  # sliders
    maximum: float | None = None
    step: float | None = None

    @property
    def elem_id(self) -> str:
        return f"lora_studio_train_{self.name}"


def _s(name, label, section, kind, info, expert=False, choices=(), minimum=None, maximum=None, step=None) -> Setting:
    return Setting(name, label, section, kind, info, expert, tuple(choices), minimum, maximum, step)


# The order is the order on screen inside each section (and in the callbacks' argument lists).
SETTINGS: tuple[Setting, ...] = (
    # ---- Setup
    _s("checkpoint", "Model file", "Setup", "text",
       "The SD1.5 or SDXL checkpoint to train on (.safetensors or .ckpt), e.g. an anime model for anime characters. "
       "A path on the server; a relative path is inside the project folder."),
    _s("arch", "Model family", "Setup", "dropdown",
       "Which of the guide's trainers: SD1.5 (512 px) or SDXL (1024 px). Changing it fills in that trainer's defaults.",
       choices=ARCHS),
    _s("project_name", "File prefix", "Setup", "text",
       "Epoch files are <prefix>-01.safetensors, -02, ... Empty = the project's name.", expert=True),
    _s("output_dir", "Output folder", "Setup", "text",
       "Where the LoRA files go (a relative path is inside the project folder). Empty = the project's output folder "
       "(inside the WebUI: its Lora/<project> folder).",
       expert=True),
    _s("vae", "Separate VAE", "Setup", "text",
       "A VAE file to use instead of the checkpoint's own (the XL trainer uses the SDXL VAE). Empty = the checkpoint's.",
       expert=True),
    _s("v_parameterization", "V-prediction", "Setup", "tristate",
       "For v-prediction models (NoobAI V-Pred, SD2). auto = what the checkpoint says.", expert=True, choices=TRISTATE),
    _s("zero_terminal_snr", "Zero terminal SNR", "Setup", "tristate",
       "Goes with v-prediction in the XL trainer. auto = what the checkpoint says.", expert=True, choices=TRISTATE),
    _s("scale_v_pred_loss_like_noise_pred", "Scale v-pred loss like noise-pred", "Setup", "tristate",
       "The XL trainer turns it on with v-prediction. auto = on for v-prediction models.", expert=True, choices=TRISTATE),
    _s("no_half_vae", "Keep the VAE in full precision", "Setup", "checkbox",
       "The SDXL VAE makes black images (NaNs) in fp16; the XL trainer always keeps it in fp32.", expert=True),
    # ---- Processing
    _s("resolution", "Resolution", "Processing", "slider",
       "Training resolution. Images are sorted into aspect-ratio buckets, no cropping needed. 512 for SD1.5, 1024 for SDXL (the demo's micro model: 64).",
       minimum=64, maximum=2048, step=64),
    _s("flip_aug", "Flip images", "Processing", "checkbox",
       "Mirrors images at random: helps with fewer than 20 images. Leave off if asymmetry matters (a side ponytail)."),
    _s("shuffle_tags", "Shuffle tags", "Processing", "checkbox",
       "Shuffles each caption's tags every time it is seen, so no tag order is learned. The activation tags stay first."),
    _s("keep_tokens", "Activation tags", "Processing", "slider",
       "How many leading tags are never shuffled (kohya keep_tokens): your trigger word(s). 1 for one activation tag.",
       minimum=0, maximum=8, step=1),
    _s("caption_extension", "Caption extension", "Processing", "dropdown",
       "The caption file next to each image: .txt (the Dataset tab writes these) or .caption.", choices=CAPTION_EXTENSIONS),
    _s("caption_dropout_rate", "Caption dropout", "Processing", "number",
       "Chance that an image is trained with an empty caption. 0 = off; kohya users use 0.05-0.1."),
    _s("caption_tag_dropout_rate", "Tag dropout", "Processing", "number",
       "Chance that each tag (except the activation tags) is left out. 0 = off; 0.05-0.1 makes tags less sticky."),
    _s("keep_tokens_separator", "Keep-tokens separator", "Processing", "text",
       "Text before this mark (e.g. |||) in a caption is never shuffled, instead of counting tags. Empty = off.",
       expert=True),
    _s("weighted_captions", "Weighted captions", "Processing", "checkbox",
       "(tag:1.2) weights in captions (SD1.5 extras). This trainer reads them as plain text.", expert=True),
    _s("enable_bucket", "Aspect-ratio buckets", "Processing", "checkbox",
       "Both trainers always use buckets, so images of any shape train without cropping.", expert=True),
    _s("min_bucket_reso", "Smallest bucket side", "Processing", "number",
       "256 (320 for SD1.5 above 640 px).", expert=True),
    _s("max_bucket_reso", "Largest bucket side", "Processing", "number",
       "1024 for SD1.5 (1280 above 640 px), 4096 for SDXL.", expert=True),
    _s("bucket_no_upscale", "Do not upscale small images", "Processing", "checkbox",
       "Small images get a bucket of their own size instead of being enlarged. The guide allows upscaling.", expert=True),
    _s("bucket_reso_steps", "Bucket step (px)", "Processing", "number",
       "Bucket sides are multiples of this: 64 in both trainers.", expert=True),
    _s("cache_latents", "Cache latents in memory", "Processing", "checkbox",
       "Encode every image once instead of every step: much faster. Both trainers do it.", expert=True),
    _s("cache_latents_to_disk", "Cache latents on disk", "Processing", "checkbox",
       "Keep the encoded images in the project's .cache folder between runs (XL trainer: on).", expert=True),
    _s("cache_text_encoder_outputs", "Cache text-encoder outputs", "Processing", "checkbox",
       "SDXL only: saves memory, but turns off tag shuffling and text-encoder training.", expert=True),
    _s("prior_loss_weight", "Regularization loss weight", "Processing", "number",
       "Weight of regularization images in the loss: 1.0 in both trainers.", expert=True),
    # ---- Steps
    _s("repeats", "Repeats", "Steps", "number",
       "How often each image is seen per epoch. The guide: images x repeats about 200-400 for SD1.5, "
       "about 100 for SDXL (1 repeat with over 100 images)."),
    _s("unit", "Count in", "Steps", "dropdown",
       "Whether the length below is in epochs or in steps.", choices=UNITS),
    _s("max_train_epochs", "Epochs", "Steps", "number",
       "Length in epochs mode. About 10 epochs is a good start; one file is saved per epoch."),
    _s("max_train_steps", "Steps", "Steps", "number",
       "Length in steps mode, e.g. about 2000 steps."),
    _s("train_batch_size", "Batch size", "Steps", "slider",
       "Images per step. 2 or 3 for SD1.5; 4 for SDXL, more if the GPU has the memory. Higher is faster, not better.",
       minimum=1, maximum=16, step=1),
    _s("save_every_n_epochs", "Save every N epochs", "Steps", "number",
       "Write a LoRA file every N epochs, to compare them later. 0 = only at the end."),
    _s("keep_only_last_n_epochs", "Keep only the last N epochs", "Steps", "number",
       "Older epoch files go to the project's trash. 0 = keep all."),
    _s("gradient_accumulation_steps", "Gradient accumulation", "Steps", "number",
       "Add up the gradients of this many batches before each update: a larger batch without the memory. 1 = off.",
       expert=True),
    _s("seed", "Seed", "Steps", "number", "Fixes shuffling and noise: the same seed gives the same run. Both trainers use 42.",
       expert=True),
    # ---- Learning
    _s("unet_lr", "UNet learning rate", "Learning", "number",
       "5e-4 for SD1.5, 3e-4 for SDXL. Lower it (2e-4, 1e-4) for many images, a high dim, or if the LoRA makes black images."),
    _s("text_encoder_lr", "Text-encoder learning rate", "Learning", "number",
       "Half to a fifth of the UNet's (1e-4 SD1.5, 6e-5 SDXL). 0 = the text encoder is not trained, good for styles."),
    _s("lr_scheduler", "Scheduler", "Learning", "dropdown",
       "How the learning rate changes over the run. The guide: cosine_with_restarts.", choices=SCHEDULERS),
    _s("lr_scheduler_num_cycles", "Scheduler restarts", "Learning", "number",
       "Restarts of cosine_with_restarts, cycles of rex (the guide: 3); other schedulers ignore it."),
    _s("lr_warmup_ratio", "Warmup ratio", "Learning", "slider",
       "Share of the steps spent raising the learning rate from 0: the guide uses 0.05. Not used with constant.",
       minimum=0.0, maximum=0.5, step=0.01),
    _s("min_snr_gamma", "Min-SNR gamma", "Learning", "slider",
       "Balances the loss over noise levels so training converges faster: 5 (the paper's value) for SD1.5, 8 for SDXL. "
       "0 = off.", minimum=0.0, maximum=16.0, step=0.5),
    _s("optimizer", "Optimizer", "Learning", "dropdown",
       "AdamW8bit is the default. Prodigy and DAdaptation find their own step size: they want a learning rate "
       "near 1 (picking one fills in the guide's values).", choices=OPTIMIZERS),
    _s("optimizer_args", "Optimizer arguments", "Learning", "args",
       "key=value pairs, e.g. weight_decay=0.1 betas=[0.9,0.99]. Empty = the optimizer's defaults."),
    _s("noise_offset", "Noise offset", "Learning", "number",
       "Lets the model learn very dark and very bright images. 0 = off (both trainers); about 0.05-0.1 if wanted."),
    _s("multires_noise_iterations", "Multi-resolution noise", "Learning", "slider",
       "The XL trainer's 'multinoise' (6 iterations): helps colour balance and contrast. 0 = off.",
       minimum=0, maximum=10, step=1),
    _s("multires_noise_discount", "Multi-resolution discount", "Learning", "slider",
       "Strength of each coarser noise level: 0.3 in the XL trainer.", minimum=0.0, maximum=1.0, step=0.05),
    _s("ip_noise_gamma", "Input perturbation noise", "Learning", "number",
       "Extra noise on the inputs, a regulariser (XL option, off). 0 = off; 0.05-0.1 when on."),
    _s("lr_scheduler_power", "Polynomial power", "Learning", "number",
       "The polynomial scheduler's power: 1 is a straight line.", expert=True),
    _s("min_timestep", "Min timestep", "Learning", "number", "Train only on noise levels from here: 0.", expert=True),
    _s("max_timestep", "Max timestep", "Learning", "number", "... up to here (exclusive): 1000.", expert=True),
    _s("max_grad_norm", "Gradient clipping", "Learning", "number",
       "Clip the gradient to this norm: 1.0 (kohya's default). 0 = no clipping.", expert=True),
    _s("loss_type", "Loss", "Learning", "dropdown", "Mean squared error (l2), as both trainers.", expert=True,
       choices=("l2",)),
    # ---- Structure
    _s("network_type", "Type", "Structure", "dropdown",
       "LoRA trains the attention layers; LoCon also the convolutions, good for styles. Picking one fills in the "
       "guide's sizes.", choices=NETWORK_TYPES),
    _s("network_dim", "Network dim", "Structure", "slider",
       "The LoRA's size (rank): 8-32 is plenty. SD1.5 16, SDXL 8. Bigger files learn more detail and more noise.",
       minimum=1, maximum=128, step=1),
    _s("network_alpha", "Network alpha", "Structure", "slider",
       "Scales the LoRA's updates down: the guide uses half of dim. Lower alpha, smaller steps.",
       minimum=0.5, maximum=128, step=0.5),
    _s("conv_dim", "Conv dim", "Structure", "slider",
       "LoCon only: size of the convolution part. SD1.5 8, SDXL 16.", minimum=1, maximum=64, step=1),
    _s("conv_alpha", "Conv alpha", "Structure", "slider",
       "LoCon only: half of conv dim.", minimum=0.5, maximum=64, step=0.5),
    _s("network_dropout", "Network dropout", "Structure", "number",
       "Drops LoRA neurons at random while training, against overfitting. 0 = off; 0.1 if used."),
    _s("network_weights", "Continue from LoRA", "Structure", "text",
       "A .safetensors LoRA to start from (the guide's continue_from_lora). Not the same as one longer run: "
       "epochs restart. Resume continues a stopped run exactly.", expert=True),
    # ---- Samples
    _s("sample_prompts", "Sample prompts", "Samples", "lines",
       "One prompt per line, rendered with each sampled epoch's file at weight 1. Start with the activation tag."),
    _s("sample_every_n_epochs", "Sample every N epochs", "Samples", "number",
       "Make the sample images after every N saved epochs. 0 = no samples (the Compare tab is the guide's check)."),
    _s("sample_seed", "Sample seed", "Samples", "number", "The same seed every epoch, so the samples compare.",
       expert=True),
    _s("sample_steps", "Sample steps", "Samples", "number", "Sampler steps per sample image.", expert=True),
    _s("sample_cfg_scale", "Sample CFG scale", "Samples", "number", "CFG scale of the samples (the WebUI's default is 7).",
       expert=True),
    # ---- Precision and memory (all expert)
    _s("mixed_precision", "Mixed precision", "Precision and memory", "dropdown",
       "fp16 on most GPUs; bf16 on newer ones (not the free T4); no = full float32. The CPU always runs float32.",
       expert=True, choices=MIXED_PRECISIONS),
    _s("full_fp16", "Full fp16", "Precision and memory", "checkbox",
       "The XL trainer's 'full fp16': the least memory. Needs mixed precision fp16.", expert=True),
    _s("full_bf16", "Full bf16", "Precision and memory", "checkbox", "Needs mixed precision bf16.", expert=True),
    _s("save_precision", "Save precision", "Precision and memory", "dropdown",
       "The LoRA files' precision: fp16 in both trainers (half the size, no visible loss).",
       expert=True, choices=SAVE_PRECISIONS),
    _s("gradient_checkpointing", "Gradient checkpointing", "Precision and memory", "checkbox",
       "Trades speed for memory: the XL trainer always uses it, the SD1.5 one never.", expert=True),
    _s("cross_attention", "Cross attention", "Precision and memory", "dropdown",
       "The XL trainer's choice; this trainer always runs PyTorch's SDPA (as fast, nothing to install).",
       expert=True, choices=CROSS_ATTENTION),
    _s("clip_skip", "CLIP skip", "Precision and memory", "slider",
       "SD1.5: use the text encoder's second-to-last layer (2), as anime models expect. SDXL ignores it.",
       expert=True, minimum=1, maximum=12, step=1),
    _s("max_token_length", "Max caption tokens", "Precision and memory", "slider",
       "Captions longer than 75 tokens are read in chunks: 225 in both trainers.", expert=True,
       minimum=75, maximum=225, step=75),
)

# Fields the form leaves out on purpose.
HIDDEN: dict[str, str] = {
    "datasets": "The form edits the first folder's repeats (Steps > Repeats). More folders, regularization folders "
                "and class tokens are [[train.datasets]] tables in project.toml, kept as they are when the form saves.",
}
PSEUDO = ("repeats",)  # form rows that are not TrainConfig fields

# The fields an architecture change keeps: they describe the user's files, not the trainer.
KEEP_ON_ARCH = ("checkpoint", "project_name", "output_dir", "vae", "network_weights", "caption_extension",
                "sample_prompts", "sample_every_n_epochs", "sample_seed", "sample_steps", "sample_cfg_scale")

BY_NAME = {s.name: s for s in SETTINGS}
LABELS = {s.name: s.label for s in SETTINGS}
_HINTS = typing.get_type_hints(TrainConfig)


# ---- optimizer arguments as text ----------------------------------------------------------------


def _arg_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_arg_value(x) for x in v) + "]"
    if isinstance(v, str):
        return v if v and all(c.isalnum() or c in "._-" for c in v) else '"' + v.replace('"', '\\"') + '"'
    return repr(v) if isinstance(v, float) else str(v)


def format_args(args: dict[str, Any]) -> str:
    """{"weight_decay": 0.1, "betas": [0.9, 0.99]} -> "weight_decay=0.1 betas=[0.9,0.99]" (kohya's spelling)."""
    return " ".join(f"{k}={_arg_value(v)}" for k, v in args.items())


def _split_args(text: str) -> list[str]:
    """Split on spaces and commas outside brackets and quotes (the two notebooks use either)."""
    parts, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch in "[(":
            depth += 1
            cur.append(ch)
        elif ch in "])":
            depth -= 1
            cur.append(ch)
        elif ch in " ,\t\n" and depth == 0:
            if cur:
                parts.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        parts.append("".join(cur))
    return parts


def parse_args(text: str) -> dict[str, Any]:
    """The inverse of format_args: values are TOML (numbers, true/false, [lists]); other text stays a string."""
    out: dict[str, Any] = {}
    for part in _split_args(text or ""):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise StudioError(f"Optimizer arguments: {part!r} is not key=value.",
                              "Write pairs like weight_decay=0.1 betas=[0.9,0.99], or leave the box empty.")
        parsed = value_of(value)
        out[key] = parsed.strip("\"'") if isinstance(parsed, str) else parsed  # a half-quoted word stays a word
    return out


# ---- config <-> component values ------------------------------------------------------------------


def to_ui(setting: Setting, config: TrainConfig) -> Any:
    """The component value that shows `config`'s value of this setting."""
    if setting.name == "repeats":
        return config.datasets[0].repeats if config.datasets else DatasetFolder().repeats
    value = getattr(config, setting.name)
    if setting.kind == "tristate":
        return {None: "auto", True: "on", False: "off"}[value]
    if setting.kind == "args":
        return format_args(value)
    if setting.kind == "lines":
        return "\n".join(value)
    return value


def form_values(config: TrainConfig) -> list[Any]:
    """Component values for every row of SETTINGS, in order."""
    return [to_ui(s, config) for s in SETTINGS]


def _number(setting: Setting, value: Any, want: type) -> int | float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise StudioError(f"{setting.label} is empty.", "Type a number (the info under the field gives the guide's value).")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StudioError(f"{setting.label} = {value!r} is not a number.", "Type a number such as 1, 0.05 or 5e-4.") from None
    if not math.isfinite(number):
        raise StudioError(f"{setting.label} = {value!r} is not a finite number.", "Type an ordinary number.")
    if want is int:
        if not number.is_integer():
            raise StudioError(f"{setting.label} = {value} must be a whole number.", f"Use {round(number)}.")
        return int(number)
    return number


def from_ui(setting: Setting, value: Any) -> Any:
    """The TrainConfig value of a component value; a StudioError names the field when it can not be read."""
    if setting.name == "repeats":
        return _number(setting, value, int)
    hint = _HINTS[setting.name]
    if setting.kind == "tristate":
        return {"auto": None, "on": True, "off": False}.get(str(value), None)
    if setting.kind == "args":
        return parse_args(str(value or ""))
    if setting.kind == "lines":
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]
    if hint is bool:
        return bool(value)
    if hint in (int, float):
        return _number(setting, value, hint)
    return "" if value is None else str(value).strip()


def config_from_values(base: TrainConfig, values: typing.Sequence[Any]) -> TrainConfig:
    """`base` with every form value applied (values in SETTINGS order). Fields the form does not show
    (the other dataset folders) come from `base`."""
    if len(values) != len(SETTINGS):
        raise ValueError(f"{len(values)} values for {len(SETTINGS)} settings")
    changes: dict[str, Any] = {}
    repeats = None
    for setting, value in zip(SETTINGS, values):
        if setting.name == "repeats":
            repeats = from_ui(setting, value)
        else:
            changes[setting.name] = from_ui(setting, value)
    folders = list(base.datasets) or [DatasetFolder()]
    if repeats is not None:
        folders[0] = dataclasses.replace(folders[0], repeats=repeats)
    return base.replace(datasets=folders, **changes)


def arch_preset(arch: str, current: TrainConfig) -> TrainConfig:
    """The family's guide defaults, keeping the fields that describe the user's files, and the
    dataset folders (their repeats are suggested separately)."""
    preset = TrainConfig.defaults_for(arch)
    kept = {name: getattr(current, name) for name in KEEP_ON_ARCH}
    folders = [dataclasses.replace(f, repeats=preset.datasets[0].repeats) if i == 0 else f
               for i, f in enumerate(current.datasets or preset.datasets)]
    return preset.replace(datasets=folders, **kept)


# ---- the guide's suggestions -------------------------------------------------------------------


def suggest_repeats(arch: str, images: int) -> int:
    """Repeats so that images x repeats lands where the guide aims: 200-400 for SD1.5 (we aim at
    the middle, 300), about 100 for SDXL (and 1 repeat with more than 100 images)."""
    if images <= 0:
        return TrainConfig.defaults_for(arch).datasets[0].repeats
    target = 100 if arch == "sdxl" else 300
    return max(1, round(target / images))


def repeats_advice(arch: str, images: int) -> str:
    r = suggest_repeats(arch, images)
    aim = "about 100 for SDXL" if arch == "sdxl" else "200-400 for SD1.5"
    return f"The guide's repeats for {images} images: {r} ({images} x {r} = {images * r}; aim for {aim})."


def problem_sentence(field: str, value: Any, message: str, fix: str) -> str:
    """A validation problem in the form's words: the label, the value, what is wrong, the fix."""
    base = field.split(".")[0]
    if field.startswith("datasets[") and field.endswith(".repeats"):
        label = "Repeats" if field.startswith("datasets[0]") else f"Repeats of folder {field[9:field.index(']')]}"
    elif base.startswith("datasets"):
        label = "Dataset folder"
    else:
        label = LABELS.get(base, base)
    shown = value if not isinstance(value, str) else (f"'{value}'" if value else "empty")
    return f"{label} is {shown}: {message}" + (f" {fix}" if fix else "")
