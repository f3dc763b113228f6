"""LoRA Studio's section in the WebUI's Settings tab, and typed reads of it and of the WebUI's folders.

Imports `modules.*` inside the functions only: this module is imported by the tab code, which also
runs standalone, where the functions here are simply never called.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..paths import remote_access_restricted
from ..settings import (
    SETTINGS_TABLE,
    StudioSettings,
    default_value,
    settings_from_values,
    with_env_fallbacks,
)

SECTION = ("lora_studio", "LoRA Studio")


def register_settings() -> None:
    """Add every row of SETTINGS_TABLE to the WebUI's options (call from `on_ui_settings`)."""
    from modules import shared

    for row in SETTINGS_TABLE:
        # No `component`: the WebUI picks a Textbox for text and a Checkbox for booleans itself,
        # so gradio is not imported here; `component_args` still reaches that component.
        info = shared.OptionInfo(
            default_value(row.field),
            row.label,
            component_args=dict(row.component_args) if row.component_args else None,
            section=SECTION,
        )
        info.info(row.info)
        if row.needs_reload_ui:
            info.needs_reload_ui()
        shared.opts.add_option(row.key, info)


def read_settings() -> StudioSettings:
    """The current settings (read at each call, so a change in the Settings tab applies at once)."""
    from modules import shared

    return with_env_fallbacks(settings_from_values(shared.opts.data.get, "WebUI settings"))


def studio_root(settings: StudioSettings) -> Path:
    """The studio folder: the setting, else $LORA_STUDIO_ROOT, else `<WebUI data folder>/lora-studio`."""
    from modules import paths

    if settings.root is not None:
        return settings.root
    return Path(os.environ.get("LORA_STUDIO_ROOT") or os.path.join(paths.data_path, "lora-studio"))


def remote_restricted() -> bool:
    """True when the WebUI is reachable from other computers and not started with the opt-in flag."""
    from modules import shared

    opts = shared.cmd_opts
    # AUTOMATIC1111 counts --ngrok and --server-name as listening too (its disable_extension_access).
    listen = bool(getattr(opts, "listen", False) or getattr(opts, "ngrok", None) or getattr(opts, "server_name", None))
    share = bool(getattr(opts, "share", False))
    return remote_access_restricted(listen, share, bool(getattr(opts, "enable_insecure_extension_access", False)))


def lora_dir() -> Path:
    """The WebUI's Lora folder (`--lora-dir`, else `<models>/Lora`)."""
    from modules import paths, shared

    return Path(getattr(shared.cmd_opts, "lora_dir", None) or os.path.join(paths.models_path, "Lora"))


def model_folders() -> list[Path]:
    """The WebUI's model folders, allowed roots for paths: the models folder and each folder moved
    out of it by a command-line flag."""
    from modules import paths, shared

    folders = [Path(paths.models_path)]
    # Forge Neo takes several folders per kind (--ckpt-dirs, --vae-dirs, ...): lists
    for flag in ("lora_dir", "lyco_dir_backcompat", "ckpt_dir", "vae_dir", "embeddings_dir",
                 "ckpt_dirs", "vae_dirs", "lora_dirs", "text_encoder_dirs"):
        value = getattr(shared.cmd_opts, flag, None)
        for one in value if isinstance(value, (list, tuple)) else [value]:
            if one and isinstance(one, (str, os.PathLike)) and Path(one) not in folders:
                folders.append(Path(one))
    return folders
