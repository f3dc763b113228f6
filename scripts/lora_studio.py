"""LoRA Studio inside AUTOMATIC1111 / Forge: registers the tab and the settings section, nothing more.

Everything else lives in the `lora_trainer` package, imported inside the callbacks so that loading
this file costs nothing. The packages install.py adds (onnxruntime, tomli on Python 3.10, ...) are
imported only where they are used: a WebUI started with --skip-install, before install.py ever
ran, still builds the tab, and the first action that needs a missing one says which and how to
add it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modules import script_callbacks

# The WebUI puts the extension folder on sys.path only while this file is imported (and restores
# it after), but the callbacks import `lora_trainer` later, so the folder must stay on the path.
EXTENSION_DIR = str(Path(__file__).resolve().parents[1])
if EXTENSION_DIR not in sys.path:
    sys.path.insert(0, EXTENSION_DIR)


def _context():
    from lora_trainer.host import webui_compat, webui_settings
    from lora_trainer.host.webui import WebUIHost
    from lora_trainer.ui.context import SEND_TO_TXT2IMG_KEY, StudioContext

    settings = webui_settings.read_settings()
    host = WebUIHost()  # lends the loaded model; generates and captions with the WebUI's own pipeline
    return StudioContext.for_root(
        webui_settings.studio_root(settings),
        mode="webui",
        settings=settings,
        host_folders=tuple(webui_settings.model_folders()),
        remote=webui_settings.remote_restricted(),
        host=host,
        # the WebUI's BLIP where it has one (Forge Neo does not); otherwise the tab offers CoCa only
        extra={"caption_fn": host.caption_fn() if webui_compat.has_blip() else None,
               SEND_TO_TXT2IMG_KEY: webui_compat.add_send_to_txt2img},
    )


def on_ui_tabs():
    from lora_trainer.ui.app import build_tab

    return [(build_tab(_context()), "LoRA Studio", "lora_studio")]


def on_app_started(demo, app):
    from lora_trainer.host.webui_api import on_app_started as routes

    routes(_context)(demo, app)  # only with --api / --nowebui, behind --api-auth


def on_ui_settings():
    from lora_trainer.host.webui_settings import register_settings

    register_settings()


script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
