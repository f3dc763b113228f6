"""`demo-model` and `generate` from the command line, on tiny SD1.5 and SDXL checkpoints (CPU)."""

from __future__ import annotations

import hashlib

import numpy as np

import pytest
import torch
from PIL import Image

from lora_trainer.cli import main
from lora_trainer.cli.generate import parse_lora


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids oversubscription stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_demo_model_then_generate_writes_png_with_parameters(tmp_path, arch, capsys):
    model = tmp_path / f"tiny_{arch}.safetensors"
    assert main(["demo-model", "--arch", arch, "--out", str(model), "--seed", "7"]) == 0
    assert model.stat().st_size < 30e6
    out = tmp_path / "img.png"
    argv = ["generate", "--checkpoint", str(model), "--prompt", "a red cube, studio light", "--negative", "blurry",
            "--seed", "42", "--steps", "2", "--cfg", "6.5", "--width", "64", "--height", "64", "--out", str(out)]
    assert main(argv) == 0
    img = Image.open(out)
    assert img.size == (64, 64) and img.format == "PNG"
    short = hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    assert img.text["parameters"] == (
        "a red cube, studio light\nNegative prompt: blurry\n"
        f"Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, Size: 64x64, "
        f"Model hash: {short}, Model: tiny_{arch}, RNG: CPU"
    )
    first = out.read_bytes()
    assert main(argv) == 0 and out.read_bytes() == first  # same seed, same file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_generate_refuses_a_non_checkpoint(tmp_path, capsys):
    bad = tmp_path / "notes.safetensors"
    bad.write_text("hello")
    code = main(["generate", "--checkpoint", str(bad), "--prompt", "x", "--out", str(tmp_path / "o.png")])
    assert code == 2
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_generate_refuses_missing_lora(tmp_path, capsys):
    code = main(["generate", "--checkpoint", str(tmp_path / "m.safetensors"), "--prompt", "x",
                 "--lora", str(tmp_path / "nope.safetensors:0.5"), "--out", str(tmp_path / "o.png")])
    assert code == 2 and "nope.safetensors" in capsys.readouterr().err


def test_parse_lora():
    assert parse_lora("a/b-01.safetensors:0.8") == ("a/b-01.safetensors", 0.8)
    assert parse_lora("b.safetensors") == ("b.safetensors", 1.0)
    assert parse_lora(r"C:\loras\b.safetensors") == (r"C:\loras\b.safetensors", 1.0)
    assert parse_lora(r"C:\loras\b.safetensors:-0.5") == (r"C:\loras\b.safetensors", -0.5)


def test_generate_with_a_lora_file_at_a_strength(tmp_path, capsys):
    from lora_trainer.models.bundle import load_bundle

    from .test_host_standalone import write_epoch_loras

    model = tmp_path / "tiny.safetensors"
    assert main(["demo-model", "--arch", "sd15", "--out", str(model)]) == 0
    (lora,) = write_epoch_loras(load_bundle(model), tmp_path, "style", 1)

    def render(*lora_args):
        out = tmp_path / f"img{len(list(tmp_path.glob('img*.png')))}.png"
        argv = ["generate", "--checkpoint", str(model), "--prompt", "lsdemo", "--seed", "3", "--steps", "2",
                "--width", "64", "--height", "64", "--out", str(out), *lora_args]
        assert main(argv) == 0
        return Image.open(out)

    plain = render()
    at_zero = render("--lora", f"{lora}:0")
    at_one = render("--lora", f"{lora}:1")
    assert np.array_equal(np.asarray(plain), np.asarray(at_zero))  # weight 0 is the base model exactly
    assert np.abs(np.asarray(plain, dtype=int) - np.asarray(at_one, dtype=int)).mean() > 1.0
    assert "<lora:style-01:1" in at_one.text["parameters"]
