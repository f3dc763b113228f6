"""The pretrained micro models that ship with the studio, and how the demo gets a copy.

Each file in `models/` is a real single-file checkpoint (load_bundle reads it like any other),
fp16, made by `python -m lora_trainer.demo.pretrain --arch <arch>` on a 2-core CPU; SHA256 is
what that command printed. CI and the tests never pretrain: they use these files.

Status: none ships yet. The pretraining pipeline runs, but its VAE does not yet reconstruct the
world well enough (see pretrain.py), so a model whose UNet learned the world has not been made.
Until one is listed in SHA256, `available()` is False and the demo uses a random tiny model.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from ..errors import StudioError
from ..fileio import atomic_path

MODELS_DIR = Path(__file__).parent / "models"
SHA256: dict[str, str] = {}  # arch -> sha256 of models/micro-<arch>.safetensors, once it ships
ARCHES = ("sd15", "sdxl")
MARKER_KEY = "lora_studio_demo"  # header field of every micro model (pretrain.micro_metadata)


def micro_path(arch: str) -> Path:
    if arch not in ARCHES:
        raise StudioError(f"There is no micro model of {arch!r}.", f"Use one of: {', '.join(ARCHES)}.")
    return MODELS_DIR / f"micro-{arch}.safetensors"


def available(arch: str = "sd15") -> bool:
    """True when the learned micro model of `arch` ships (it is listed and its file is there)."""
    return arch in SHA256 and micro_path(arch).is_file()


def micro_model(arch: str = "sd15") -> Path:
    """The shipped micro model of `arch`, or a StudioError that says how to make it."""
    path = micro_path(arch)
    if not available(arch):
        raise StudioError(f"The demo's model {path} is missing.",
                          f"Reinstall the studio, or remake it: python -m lora_trainer.demo.pretrain --arch {arch}")
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_micro_model(path: Path) -> bool:
    """True when `path` is one of the learned micro models (its header says so)."""
    from ..models.checkpoint import read_safetensors_metadata

    try:
        return MARKER_KEY in read_safetensors_metadata(path)
    except StudioError:
        return False


def copy_micro_model(dest: str | Path, arch: str = "sd15") -> Path:
    """A copy of the shipped micro model at `dest` (atomic; a copy, so editing or training on the
    project's model never touches the package)."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        shutil.copyfile(micro_model(arch), tmp)
    return dest
