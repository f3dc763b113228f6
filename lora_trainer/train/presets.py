"""The guide's recommendations that depend on a choice: optimizer args, adaptive-optimizer
overrides and LoRA/LoCon sizes (colab-settings.md §2.2 extras, §2.3 "recommended_values").

The family presets themselves are `TrainConfig.sd15_defaults()` / `sdxl_defaults()`; these
functions return a new TrainConfig and never change the one given.
"""

from __future__ import annotations

from typing import Any

from .config import ADAPTIVE_OPTIMIZERS, OPTIMIZERS, TrainConfig

# The XL trainer's "recommended values" per optimizer (the SD1.5 one gives args only to Prodigy/DAdapt).
_XL_ARGS: dict[str, dict[str, Any]] = {
    "AdamW8bit": {"weight_decay": 0.1, "betas": [0.9, 0.99]},
    "AdaFactor": {"scale_parameter": False, "relative_step": False, "warmup_init": False},
    "CAME": {"weight_decay": 0.04},
}
_ADAPTIVE_ARGS = {"decouple": True, "weight_decay": 0.01, "betas": [0.9, 0.999]}
_PRODIGY_EXTRA = {"d_coef": 2, "use_bias_correction": True}
ADAPTIVE_LR = {"sd15": 0.5, "sdxl": 0.75}  # the guide forces this LR for Prodigy / DAdaptation

# (dim, alpha, conv_dim, conv_alpha): the guide's "recommended values" tables.
RECOMMENDED_NETWORK = {
    ("sd15", "LoRA"): (16, 8.0, 8, 4.0),
    ("sd15", "LoCon"): (16, 8.0, 8, 4.0),
    ("sdxl", "LoRA"): (8, 4.0, 16, 8.0),
    ("sdxl", "LoCon"): (16, 8.0, 16, 8.0),  # the XL guide's "Style LoCon"
}


def recommended_optimizer_args(optimizer: str, arch: str = "sd15", warmup_ratio: float = 0.05) -> dict[str, Any]:
    """The optimizer_args the guide fills in for `optimizer` ({} where it gives none)."""
    if optimizer in ADAPTIVE_OPTIMIZERS:
        args = dict(_ADAPTIVE_ARGS)
        if optimizer == "Prodigy":
            args.update(_PRODIGY_EXTRA)
            args["safeguard_warmup"] = warmup_ratio > 0
        return args
    if arch == "sdxl":
        return {k: (list(v) if isinstance(v, list) else v) for k, v in _XL_ARGS.get(optimizer, {}).items()}
    return {}


def with_optimizer(config: TrainConfig, optimizer: str, recommended: bool = True) -> TrainConfig:
    """`config` with another optimizer and, if `recommended`, the guide's values for it:
    its args, and for Prodigy/DAdaptation the LR (0.5 SD1.5, 0.75 SDXL) and alpha = dim; the SD1.5
    guide also switches to constant_with_warmup, the XL one from full to mixed precision."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer {optimizer!r}: must be one of {', '.join(OPTIMIZERS)}")
    if not recommended:
        return config.replace(optimizer=optimizer)
    changes: dict[str, Any] = {
        "optimizer": optimizer,
        "optimizer_args": recommended_optimizer_args(optimizer, config.arch, config.lr_warmup_ratio),
    }
    if optimizer in ADAPTIVE_OPTIMIZERS:
        lr = ADAPTIVE_LR[config.arch]
        changes.update(unet_lr=lr, text_encoder_lr=lr if config.text_encoder_lr > 0 else 0.0,
                       network_alpha=float(config.network_dim))
        if config.arch == "sd15":
            changes.update(lr_scheduler="constant_with_warmup", lr_warmup_ratio=0.05)
            changes["optimizer_args"] = recommended_optimizer_args(optimizer, config.arch, 0.05)
        else:
            changes.update(full_fp16=False, full_bf16=False)
    return config.replace(**changes)


def with_network_type(config: TrainConfig, network_type: str) -> TrainConfig:
    """`config` as a LoRA or LoCon with the guide's recommended sizes for its family."""
    dim, alpha, conv_dim, conv_alpha = RECOMMENDED_NETWORK[(config.arch, network_type)]
    return config.replace(network_type=network_type, network_dim=dim, network_alpha=alpha,
                          conv_dim=conv_dim, conv_alpha=conv_alpha)


def bucket_bounds_for(arch: str, resolution: int) -> tuple[int, int]:
    """(min, max) bucket side: SD1.5 256/1024, 320/1280 above 640 px; XL 256/4096."""
    if arch == "sdxl":
        return 256, 4096
    return (320, 1280) if resolution > 640 else (256, 1024)
