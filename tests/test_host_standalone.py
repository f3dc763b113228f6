"""The Host protocol's prompt language and StandaloneHost on the tiny demo model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lora_trainer.errors import Cancelled, StudioError
from lora_trainer.host.base import (
    INFOTEXT_KEY,
    GenerationRequest,
    LoraTag,
    default_generation,
    infotext_of,
    parse_lora_tags,
)
from lora_trainer.host.standalone import StandaloneHost, scheduler_key, unescape_prompt
from lora_trainer.progress import CancelToken

REPO = Path(__file__).resolve().parents[1]
TINY = {"steps": 2, "width": 64, "height": 64}


def write_demo_model(path: Path, arch: str = "sd15") -> Path:
    """The tiny demo checkpoint, written by the CLI command users run."""
    subprocess.run(
        [sys.executable, "-m", "lora_trainer", "demo-model", "--arch", arch, "--out", str(path)],
        check=True, cwd=REPO, capture_output=True,
    )
    return path


def write_epoch_loras(bundle, folder: Path, stem: str, n: int, dim: int = 4, std: float = 0.3) -> list[Path]:
    """n LoRA files `<stem>-01.safetensors`, ... with different random (non-zero up) weights."""
    from lora_trainer.network.io import save_network
    from lora_trainer.network.network import NetworkConfig, create_network

    paths = []
    for i in range(1, n + 1):
        gen = torch.Generator().manual_seed(i)
        net = create_network(bundle, NetworkConfig(dim=dim, alpha=dim))
        with torch.no_grad():
            for _, m in net.loras():
                m.lora_down.weight.copy_(torch.randn(m.lora_down.weight.shape, generator=gen) * 0.3)
                m.lora_up.weight.copy_(torch.randn(m.lora_up.weight.shape, generator=gen) * std)
        paths.append(save_network(net, folder / f"{stem}-{i:02d}.safetensors").path)
    return paths


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("host")
    ckpt = write_demo_model(d / "tiny15.safetensors")
    loras = d / "Lora"
    (loras / "sub").mkdir(parents=True)
    host = StandaloneHost(ckpt, [loras])
    write_epoch_loras(host.bundle(), loras, "tiny", 1)
    write_epoch_loras(host.bundle(), loras / "sub", "deep", 1)
    return host, loras


# ---- the prompt language --------------------------------------------------------------------------


def test_lora_tags_are_read_as_the_webui_reads_them():
    text, tags, others = parse_lora_tags("a <lora:x>, b <lora:y:0.8> <lora:z:1:0.5> <lyco:w:unet=0.3:te=0.6> <hypernet:h:1> c")
    assert text == "a , b     c"  # every tag removed, nothing else touched
    assert [(t.name, t.te, t.unet) for t in tags] == [("x", 1, 1), ("y", 0.8, 0.8), ("z", 1, 0.5), ("w", 0.6, 0.3)]
    assert tags[1] == LoraTag("y", 0.8, 0.8, "<lora:y:0.8>")
    assert others == ["<hypernet:h:1>"]
    with pytest.raises(StudioError, match="not numbers"):
        parse_lora_tags("<lora:x:strong>")


def test_escapes_scheduler_labels_and_defaults():
    assert unescape_prompt(r"hat \(blue\), \[x\], a\\b, (plain)") == r"hat (blue), [x], a\b, (plain)"
    assert scheduler_key("Karras", "DPM++ 2M") == "karras"
    assert scheduler_key("Automatic", "DPM++ 2M") == "karras"
    assert scheduler_key("Automatic", "Euler a") == "uniform"
    assert default_generation("sd15") == GenerationRequest(prompt="", width=512, height=512, steps=20, cfg_scale=7.0, sampler_name="DPM++ 2M", scheduler="Karras")
    assert (default_generation("sdxl").width, default_generation("sdxl").height) == (1024, 1024)
    with pytest.raises(StudioError, match="Unknown architecture"):
        default_generation("sd3")


# ---- StandaloneHost --------------------------------------------------------------------------------


def test_missing_checkpoint_is_a_studio_error(tmp_path):
    with pytest.raises(StudioError, match="does not exist"):
        StandaloneHost(tmp_path / "none.safetensors")


def test_arch_without_loading_the_model(tmp_path):
    host = StandaloneHost(write_demo_model(tmp_path / "m.safetensors"))
    assert host.model_arch() == "sd15"
    assert host._bundle is None  # the header and shapes told; nothing was built
    assert host.default_generation().width == 512
    assert host.name == "standalone"


def test_same_seed_same_image_and_infotext(setup):
    host, _ = setup
    req = GenerationRequest("a red circle", seed=5, **TINY)
    a, b = host.generate(req)[0], host.generate(req)[0]
    c = host.generate(req.replace(seed=6))[0]
    assert a.size == (64, 64)
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))
    info = infotext_of(a)
    assert info.startswith("a red circle\nSteps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 64x64, Model hash: ")
    assert "Model: tiny15" in info and a.info[INFOTEXT_KEY] == info


def test_batch_uses_consecutive_seeds(setup):
    host, _ = setup
    batch = host.generate(GenerationRequest("x", seed=10, batch_size=2, **TINY))
    single = host.generate(GenerationRequest("x", seed=11, **TINY))[0]
    assert len(batch) == 2 and np.array_equal(pixels(batch[1]), pixels(single))
    assert "Seed: 11" in infotext_of(batch[1])


def test_a_lora_changes_the_image_only_while_it_is_named(setup):
    host, _ = setup
    bundle = host.bundle()
    before = {k: v.clone() for m in bundle.modules().values() for k, v in m.state_dict().items()}
    plain = host.generate(GenerationRequest("cat", seed=3, **TINY))[0]
    with_lora = host.generate(GenerationRequest("cat <lora:tiny-01:1>", seed=3, **TINY))[0]
    zero = host.generate(GenerationRequest("cat <lora:tiny-01:0>", seed=3, **TINY))[0]
    after = host.generate(GenerationRequest("cat", seed=3, **TINY))[0]
    assert not np.array_equal(pixels(plain), pixels(with_lora))
    assert np.array_equal(pixels(plain), pixels(zero))  # the text the model sees is "cat " in both
    assert np.array_equal(pixels(plain), pixels(after))  # nothing stayed applied
    for m in bundle.modules().values():
        for k, v in m.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert not m._forward_hooks and all(not s._forward_hooks for s in m.modules())
    info = infotext_of(with_lora)
    assert info.startswith("cat <lora:tiny-01:1>\n")  # the prompt as typed, as the WebUI writes it
    assert 'Lora hashes: "tiny-01: ' in info


def test_text_encoder_and_unet_strengths_are_separate(setup):
    host, _ = setup
    img = {w: pixels(host.generate(GenerationRequest(f"cat <lora:tiny-01:{w}>", seed=3, **TINY))[0]) for w in ("1:1", "0:1", "1:0", "0:0")}
    assert not np.array_equal(img["1:1"], img["0:1"])
    assert not np.array_equal(img["1:1"], img["1:0"])
    assert not np.array_equal(img["0:1"], img["1:0"])
    plain = pixels(host.generate(GenerationRequest("cat ", seed=3, **TINY))[0])
    assert np.array_equal(img["0:0"], plain)


def test_loras_in_subfolders_and_new_files_are_found(setup):
    host, loras = setup
    host.generate(GenerationRequest("<lora:deep-01:0.5>", **TINY))
    write_epoch_loras(host.bundle(), loras, "late", 1)  # saved after the host indexed the folder
    host.generate(GenerationRequest("<lora:late-01:0.5>", **TINY))


def test_unknown_lora_names_close_ones(setup):
    host, _ = setup
    with pytest.raises(StudioError, match=r"No LoRA named 'tiny-1'.*Close names: tiny-01"):
        host.generate(GenerationRequest("<lora:tiny-1:1>", **TINY))


def test_cancel_stops_generation(setup):
    host, _ = setup
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        host.generate(GenerationRequest("x", **TINY), cancel=token)


def test_borrow_bundle_restores_modes_and_grads(setup):
    host, _ = setup
    with host.borrow_bundle() as bundle:
        assert bundle is host.bundle()
        bundle.unet.train()
        bundle.requires_grad_(True)
    assert not bundle.unet.training and not any(m.training for m in bundle.unet.modules())
    assert not any(p.requires_grad for m in bundle.modules().values() for p in m.parameters())
