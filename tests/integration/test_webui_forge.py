"""Opt-in: LoRA Studio inside a real Forge checkout (2.0.1v1.10.1, commit dfdcbab).

    LORA_STUDIO_FORGE_DIR=/path/to/stable-diffusion-webui-forge [LORA_STUDIO_FORGE_PYTHON=.../python] \\
        python -m pytest tests/integration/test_webui_forge.py

The Forge folder needs repositories/huggingface_guess (lllyasviel/huggingface_guess at 8482624,
the commit Forge's launch_utils pins; Forge's loader imports it, and no other clone is needed for
SD1.5: the tokenizer and configs ship in backend/huggingface), an SD1.5 checkpoint in
models/Stable-diffusion (any weights: a full-size random one is enough) and a Python with Forge's
requirements (gradio 4.40.0, pydantic 2, sentencepiece for its gguf package; facexlib is optional).
The extension is linked into extensions/ for the run. Forge runs in a subprocess on the CPU
(--always-cpu, webui_forge_driver.py) and reports each step: it boots, install.py would install
nothing Forge provides, the tab builds (the family read from the selected checkpoint's header,
nothing loaded: Forge loads on first use), txt2img works, a LoRA
trains on the loaded model through the WebUI host, the file is in the Lora list with its card,
sd_forge_lora applies it, the Compare grid renders through Forge (weight 0 = no LoRA, the epochs
differ), and txt2img without it gives the same image as before training.

How the checkout used on the development machine was made, offline (no downloads; the Python
packages come from the A1111 test venv and the project's .venv, plus the machine's package index):

    git --git-dir=<mirror of lllyasviel/stable-diffusion-webui-forge> archive dfdcbab | tar -x -C /work/forge
    mkdir -p /work/forge/repositories/huggingface_guess
    git --git-dir=<mirror of lllyasviel/huggingface_guess> archive 84826248b49bb7ca754c73293299c4d4e23a548d \\
        | tar -x -C /work/forge/repositories/huggingface_guess
    cd /work/forge && /root/.pyenv/versions/3.11.7/bin/python3.11 -m venv venv
    printf '%s\\n' /work/webui/venv/lib/python3.11/site-packages /work/main/.venv/lib/python3.11/site-packages \\
        > venv/lib/python3.11/site-packages/zz_reuse_webui_and_studio.pth   # torch 2.15, gradio 4.40, A1111 extras
    venv/bin/python -m pip install --no-deps gradio_rangeslider==0.0.6 gradio_imageslider==0.0.20 loadimg==0.1.2 \\
        sentencepiece joblib
    ln -s /work/webui/models/Stable-diffusion/random-sd15.safetensors models/Stable-diffusion/
    # (/work/webui_assets/make_assets.py wrote that random SD1.5 checkpoint)

On 2 shared CPU cores a run takes 1-3 minutes (boot 9-19 s, tab 5-9 s, first txt2img (it loads the
checkpoint) 5-28 s, training 4 steps at 256 px 21-41 s, grid of 6 cells 17-37 s).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.webui_steps import run_driver

FORGE = os.environ.get("LORA_STUDIO_FORGE_DIR")

pytestmark = pytest.mark.skipif(not FORGE or not Path(FORGE, "modules_forge", "main_thread.py").is_file(),
                                reason="set LORA_STUDIO_FORGE_DIR to a Forge 2.0.1v1.10.1 checkout")


def test_train_on_the_loaded_model(tmp_path):
    forge = Path(FORGE)
    python = os.environ.get("LORA_STUDIO_FORGE_PYTHON") or str(forge / "venv" / "bin" / "python")
    run_driver(forge, python, "webui_forge_driver.py", tmp_path / "studio")
