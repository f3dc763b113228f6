"""Opt-in: LoRA Studio inside a real AUTOMATIC1111 1.10.1 checkout.

    LORA_STUDIO_WEBUI_DIR=/path/to/stable-diffusion-webui [LORA_STUDIO_WEBUI_PYTHON=.../python] \\
        python -m pytest tests/integration/test_webui_a1111.py

The WebUI folder needs its repositories/ (stablediffusion, generative-models, k-diffusion), an SD1.5
checkpoint in models/Stable-diffusion (any weights: a full-size random one is enough), the
openai/clip-vit-large-patch14 config and tokenizer in the Hugging Face cache, and a Python with its
requirements (gradio 3.41.2). The extension is linked into extensions/ for the run. The WebUI runs
in a subprocess on the CPU (webui_a1111_driver.py) and reports each step: it boots, install.py
would install nothing the WebUI provides, the tab builds, the model loads, txt2img works, a LoRA
trains 2 epochs on the loaded model through the WebUI host, the files are in the Lora list with
their cards, the WebUI's Lora extension applies one, the Compare grid of epochs x weights is
rendered by the WebUI's own pipeline (weight 0 = the no-LoRA column, the epochs differ), and
txt2img without the LoRA gives the same image as before training.

How the checkout used on the development machine was made, offline (it passed in 409 s on 2 CPU
cores, 10 training steps):

    - the WebUI at v1.10.1 (CoderBotics-ai/stable-diffusion-webui is that release), with its
      repositories/ (stable-diffusion-stability-ai, generative-models, k-diffusion, BLIP,
      stable-diffusion-webui-assets) at the commits modules/launch_utils.py names;
    - a venv with requirements_versions.txt exactly (torch 2.1.2, open-clip-torch 2.20.0,
      transformers 4.30.2, gradio 3.41.2, pydantic 1), plus pillow-avif-plugin 1.4.3 (its
      requirements name it; modules/images.py imports it) and OpenAI's `clip` package (a checkout
      of openai/CLIP on the path: launch_utils installs it from git); on Python 3.10 also `tomli`,
      which the extension imports before its install.py could add it;
    - openai/clip-vit-large-patch14's config.json, tokenizer files and vocab in the Hugging Face
      cache (no weights: the checkpoint carries them); Forge's backend/huggingface/ ships the same
      files under runwayml/stable-diffusion-v1-5/tokenizer and text_encoder;
    - a full-size random SD1.5 checkpoint built by the WebUI's own ldm classes from
      configs/v1-inference.yaml, CLIPTextModel for the text encoder, saved fp16; every floating
      tensor that ldm initialises to zeros (the zero-module output convolutions, and in the text
      encoder those transformers leaves at zero) replaced by N(0, 0.02) noise, else the LoRA's
      gradients are zero and "the epochs differ" cannot hold.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.webui_steps import run_driver

WEBUI = os.environ.get("LORA_STUDIO_WEBUI_DIR")

pytestmark = pytest.mark.skipif(not WEBUI or not Path(WEBUI, "modules", "shared.py").is_file(),
                                reason="set LORA_STUDIO_WEBUI_DIR to an AUTOMATIC1111 1.10.1 checkout")


def test_train_on_the_loaded_model(tmp_path):
    webui = Path(WEBUI)
    python = os.environ.get("LORA_STUDIO_WEBUI_PYTHON") or str(webui / "venv" / "bin" / "python")
    run_driver(webui, python, "webui_a1111_driver.py", tmp_path / "studio")
