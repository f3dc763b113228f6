#!/usr/bin/env bash
# LoRA Studio on a fresh machine: sets up a local virtual environment, then
#   ./studio.sh demo    creates the demo project and starts the studio at http://localhost:7860/
#   ./studio.sh test    runs the whole test suite (as Forge Neo pins it, and as A1111 1.10.1 pins it)
#   ./studio.sh browser-test   only the browser test (tests/browser), installing Debian's chromium if needed
#   ./studio.sh ARGS    runs `python -m lora_trainer ARGS`
# Needs Python >= 3.10 (`PYTHON=python3.11 ./studio.sh ...` to pick one). Re-runs are quick: the
# environments are only touched when pyproject.toml or the pins under tests/envs/ change.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv
VENV3=.venv-gradio3
PIP_FLAGS=(--quiet --disable-pip-version-check)

stamp() { cat pyproject.toml tests/envs/*.txt studio.sh | sha256sum | cut -c1-16; }

setup_main() {
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    # Keep a torch that is already there and works with torchvision (open_clip needs both);
    # otherwise install the registry's current torch + torchvision (CUDA builds, fine on a CPU).
    if ! "$VENV/bin/python" -c "import torch, torchvision.ops; torchvision.ops.nms" >/dev/null 2>&1; then
        echo "studio.sh: installing torch and torchvision (about 5.5 GB, once)..."
        "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" --upgrade pip
        "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" torch torchvision
    fi
    if [ "$(cat "$VENV/.studio-stamp" 2>/dev/null)" != "$(stamp)" ]; then
        echo "studio.sh: installing LoRA Studio's dependencies..."
        "$VENV/bin/python" -m pip install "${PIP_FLAGS[@]}" -c tests/envs/gradio4.txt -e ".[test]"
        stamp > "$VENV/.studio-stamp"
    fi
}

setup_gradio3() {
    # AUTOMATIC1111 1.10.1 as it installs, in an environment of its own: its pins (tests/envs/gradio3.txt)
    # for every package we import, torch 2.1.2 and open_clip 2.20 included. The reference
    # implementations (diffusers, peft) are not installed here: the tests that need them skip.
    [ -x "$VENV3/bin/python" ] || "$PYTHON" -m venv "$VENV3"
    if [ "$(cat "$VENV3/.studio-stamp" 2>/dev/null)" != "$(stamp)" ]; then
        echo "studio.sh: installing the AUTOMATIC1111 1.10.1 test environment (torch 2.1.2, gradio 3.41.2; once)..."
        "$VENV3/bin/python" -m pip install "${PIP_FLAGS[@]}" --upgrade pip
        rm -f "$VENV3"/lib/python*/site-packages/zz_lora_studio_main_env.pth  # older studio.sh shared .venv's packages
        "$VENV3/bin/python" -m pip install "${PIP_FLAGS[@]}" -c tests/envs/gradio3.txt \
            torch torchvision open_clip_torch transformers safetensors gradio fastapi httpx numpy Pillow \
            pydantic requests pandas onnxruntime "tomli; python_version < '3.11'" pytest hypothesis playwright \
            onnx  # test-only: the tagger tests write a tiny ONNX model (pip picks one for open_clip 2.20's protobuf<4)
        "$VENV3/bin/python" -m pip install "${PIP_FLAGS[@]}" --no-deps -e .
        stamp > "$VENV3/.studio-stamp"
    fi
}

setup_browser() {
    # tests/browser drives Debian's Chromium through Playwright (no browser download). It is
    # installed when CI runs as root (CI=true) or when asked for (`./studio.sh browser-test`);
    # a plain `./studio.sh test` never needs sudo: without chromium the browser test is skipped.
    command -v chromium >/dev/null && return 0
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if [ "${1:-}" = asked ] && command -v sudo >/dev/null; then sudo=sudo; else sudo=none; fi
    fi
    if [ "$sudo" != none ] && { [ "${CI:-}" = true ] || [ "${1:-}" = asked ]; }; then
        echo "studio.sh: installing Debian's chromium for the browser test (about 30 s, once)..."
        if ! ($sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium) >/dev/null; then
            echo "studio.sh: WARNING: apt-get could not install chromium; the browser test will be skipped."
        fi
    else
        echo "studio.sh: no chromium here, so the browser test (tests/browser) is skipped;" \
             "\`./studio.sh browser-test\` installs it (apt-get, needs root or sudo) and runs it."
    fi
}

case "${1:-demo}" in
    demo)
        setup_main
        shift || true
        exec "$VENV/bin/python" -m lora_trainer demo "$@"
        ;;
    test)
        setup_main
        setup_gradio3
        setup_browser
        shift || true
        # The whole suite on AUTOMATIC1111 1.10's pins first (torch 2.1, open_clip 2.20, gradio 3.41.2;
        # the diffusers/peft comparisons and CPU fp16 skip there), then as Forge Neo pins it (gradio 4.40, numpy 2.3)
        # (its summary closes the log).
        "$VENV3/bin/python" -m pytest -q -p no:cacheprovider "$@"
        exec "$VENV/bin/python" -m pytest -q "$@"
        ;;
    browser-test)
        setup_main
        setup_browser asked
        shift || true
        exec "$VENV/bin/python" -m pytest -q tests/browser "$@"
        ;;
    *)
        setup_main
        exec "$VENV/bin/python" -m lora_trainer "$@"
        ;;
esac
