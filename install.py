"""Installs what LoRA Studio needs into the WebUI's Python, and nothing else.

The WebUI runs this file at every start, in a subprocess with the WebUI's root on PYTHONPATH (so
`import launch` works). It installs only missing packages, through the WebUI's own `launch.run_pip`
(which honours --skip-install and INDEX_URL), and it never touches the packages the WebUI pins:
those are left out of every plan, and pinned to their installed versions with a constraints file so
that no dependency of ours can move them either. Any failure prints a sentence; the WebUI starts.
"""

from __future__ import annotations

import os
import sys
import tempfile

# What the WebUI owns. A different torch/gradio/transformers/numpy/Pillow breaks the WebUI itself,
# so if one is missing we say so and leave it to the WebUI's own installer.
PROTECTED = ("torch", "torchvision", "xformers", "gradio", "transformers", "numpy", "Pillow")

# Our runtime needs beyond the WebUI (distribution names as pip knows them). onnxruntime is
# chosen separately: it comes in a CPU and a CUDA build that must not be installed together.
REQUIRED = ("safetensors", "open_clip_torch", "requests", "pandas")

ONNX_CPU = "onnxruntime"
ONNX_GPU = "onnxruntime-gpu"
# PyPI's onnxruntime-gpu is built for CUDA 12 since 1.19; 1.18.1 is the last one for CUDA 11.8.
ONNX_GPU_CUDA11 = "onnxruntime-gpu==1.18.1"


def plan_installs(installed: set[str], cuda_available: bool, cuda_major: int | None = 12,
                  python_version: tuple[int, int] = sys.version_info[:2]) -> list[str]:
    """The pip requirements to install, given the distributions already `installed` (any case).

    Never names a PROTECTED package. onnxruntime: nothing if either build is present, else the GPU
    build where torch can use CUDA (`cuda_major`: the CUDA version torch was built for), else CPU.
    """
    have = {name.lower() for name in installed}
    plan = [name for name in REQUIRED if name.lower() not in have]
    if ONNX_CPU not in have and ONNX_GPU not in have:
        if not cuda_available:
            plan.append(ONNX_CPU)
        else:
            plan.append(ONNX_GPU_CUDA11 if cuda_major == 11 else ONNX_GPU)
    if python_version < (3, 11) and "tomli" not in have:  # tomllib is in the standard library from 3.11
        plan.append("tomli")
    return [p for p in plan if _dist_name(p).lower() not in {q.lower() for q in PROTECTED}]


def missing_protected(installed: set[str]) -> list[str]:
    have = {name.lower() for name in installed}
    return [name for name in PROTECTED if name.lower() not in have and name != "xformers"]  # xformers is optional


def _dist_name(requirement: str) -> str:
    return requirement.split("==")[0].split(">")[0].split("<")[0].strip()


def cuda_usable() -> tuple[bool, int | None]:
    """(torch can use CUDA, the CUDA major version torch was built for). ROCm builds answer False:
    onnxruntime-gpu is CUDA only."""
    try:
        import torch
    except ImportError:
        return False, None
    version = getattr(torch.version, "cuda", None)
    if not version or not torch.cuda.is_available():
        return False, None
    return True, int(version.split(".")[0])


def constraints_text(names) -> str:
    """`name==version` for each installed protected package, so pip can not move them."""
    from importlib import metadata

    lines = []
    for name in names:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def main() -> None:
    import launch

    candidates = {*REQUIRED, *PROTECTED, ONNX_CPU, ONNX_GPU, "tomli"}
    installed = {name for name in candidates if launch.is_installed(name)}

    for name in missing_protected(installed):
        print(f"LoRA Studio: {name} is not installed in the WebUI's Python. LoRA Studio does not install it "
              f"(the WebUI manages its version); run the WebUI's own installer (webui.sh / webui-user.bat) again.")

    has_onnx = ONNX_CPU in installed or ONNX_GPU in installed
    cuda, cuda_major = cuda_usable() if not has_onnx else (False, None)  # importing torch is slow: only if needed
    plan = plan_installs(installed, cuda, cuda_major)
    if not plan:
        return

    with tempfile.TemporaryDirectory(prefix="lora_studio_install_") as tmp:
        constraints = os.path.join(tmp, "constraints.txt")
        with open(constraints, "w", encoding="utf-8") as f:
            f.write(constraints_text(n for n in PROTECTED if n in installed))
        for requirement in plan:
            if not _install(launch, requirement, constraints) and _dist_name(requirement) == ONNX_GPU:
                print(f"LoRA Studio: trying {ONNX_CPU} instead of {requirement}.")
                _install(launch, ONNX_CPU, constraints)


def _install(launch, requirement: str, constraints: str) -> bool:
    try:
        launch.run_pip(f'install "{requirement}" -c "{constraints}"', f"LoRA Studio requirement: {requirement}")
        return True
    except Exception as e:  # noqa: BLE001 - one failed package must not stop the WebUI
        print(f"LoRA Studio: could not install {requirement}: {e}. The feature that needs it will say so; "
              f"to install it yourself, use the WebUI's Python: python -m pip install \"{requirement}\"")
        return False


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - the installer must never stop the WebUI from starting
        print(f"LoRA Studio: the installer stopped early ({type(e).__name__}: {e}). The WebUI will start; "
              f"LoRA Studio features that need a missing package will say so.")
