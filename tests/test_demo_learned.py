"""The learned demo, through the real entry points: each shipped micro model draws what a prompt
asks (prompts it never saw captioned), and the demo's default training teaches it a concept that
the Compare grid shows at weight 1, not at weight 0, and hardly without its tag.

The judge (lora_trainer/demo/judge.py, >= 95% on fresh generator pictures) reads every picture.
Rates are printed (pytest -s) and asserted at the learned-demo issue's thresholds (SDXL's: see
SDXL_THRESHOLDS). Each family's tests skip, saying so, until its micro model ships
(lora_trainer/demo/shipped.py).
"""

import json
from dataclasses import dataclass

import pytest

from lora_trainer.cli import main
from lora_trainer.cli.demo import DEMO_PROJECTS
from lora_trainer.demo import shipped
from lora_trainer.demo.dataset import ACTIVATION_TAG
from lora_trainer.demo.evaluate import concept_probes, grid_rates, held_out_probes, leak_probes
from lora_trainer.demo.judge import judge

pytestmark = pytest.mark.slow
ARCHES = [pytest.param(a, marks=pytest.mark.skipif(not shipped.available(a), reason=f"no learned micro {a} model ships yet (issue 12)"))
          for a in ("sd15", "sdxl")]

CLIP_SKIP = {"sd15": 2, "sdxl": 1}  # what each family's demo trains with


@dataclass(frozen=True)
class Thresholds:
    held_out: float  # base model: shape and colour right on held-out prompts
    concept: float  # the concept at weight 1
    concept_off: float  # at most, at weight 0 (and without the LoRA)
    leak: float  # at most: the concept in world prompts without the tag, LoRA at weight 1


SD15_THRESHOLDS = Thresholds(held_out=0.8, concept=0.7, concept_off=0.1, leak=0.25)  # the issue's
SDXL_THRESHOLDS = SD15_THRESHOLDS
THRESHOLDS = {"sd15": SD15_THRESHOLDS, "sdxl": SDXL_THRESHOLDS}


@pytest.mark.parametrize("arch", ARCHES)
def test_the_shipped_model_is_a_real_checkpoint_of_the_world(arch):
    from lora_trainer.models.bundle import load_bundle
    from lora_trainer.models.checkpoint import describe, native_size

    path = shipped.micro_model(arch)
    assert shipped.sha256_of(path) == shipped.SHA256[arch]  # what `python -m lora_trainer.demo.pretrain` printed
    assert path.stat().st_size < 11_000_000
    info = describe(path)
    assert (info["arch"], info["prediction"], info["dtype"]) == (arch, "eps", "float16")
    assert native_size(arch, info["metadata"]) == (64, 64)
    bundle = load_bundle(path)
    assert bundle.unet.config.model_channels == 64 and bundle.vae.config.ch == 64


@pytest.mark.parametrize("arch", ARCHES)
def test_the_base_model_draws_prompts_it_never_saw_captioned(arch, tmp_path):
    """32 held-out (colour, shape, background) prompts x seeds through `generate`."""
    from PIL import Image

    path = shipped.micro_model(arch)
    right = 0
    probes = held_out_probes()
    for i, p in enumerate(probes):
        out = tmp_path / f"{i}.png"
        assert main(["generate", "--checkpoint", str(path), "--prompt", p.prompt, "--seed", str(p.seed),
                     "--clip-skip", str(CLIP_SKIP[arch]), "--out", str(out)]) == 0
        image = Image.open(out)
        assert image.size == (64, 64)  # the model's own size, from its header
        right += judge(image).matches(**p.want)
    print(f"\n{arch} base model, held-out prompts: {right}/{len(probes)} right")
    assert right / len(probes) >= THRESHOLDS[arch].held_out


@pytest.fixture(scope="module", params=ARCHES)
def trained_demo(request, tmp_path_factory):
    """`demo --no-ui [--arch sdxl]`, then `train` with the demo's defaults."""
    from lora_trainer.project import open_project

    arch = request.param
    root = tmp_path_factory.mktemp(f"studio-{arch}")
    name = DEMO_PROJECTS[arch]
    assert main(["demo", "--no-ui", "--arch", arch, "--root", str(root)]) == 0
    assert main(["train", "--project", name, "--root", str(root)]) == 0
    return arch, open_project(root, name)


def test_the_demo_lora_shows_its_concept_at_weight_one_and_not_at_zero(trained_demo):
    from lora_trainer.host.standalone import StandaloneHost

    arch, project = trained_demo
    want = THRESHOLDS[arch]
    host = StandaloneHost(project.checkpoint(), [project.output_dir], clip_skip=CLIP_SKIP[arch])
    table = grid_rates(host, project.output_dir, project.name, concept_probes(ACTIVATION_TAG), weights=(0, 0.5, 1), epochs="4")
    final = f"{project.name}-04"  # the last of the demo's 4 epochs
    for key in sorted(table):
        print(f"{arch} concept probes {key}: concept in {table[key].concept:.0%} of {table[key].n}")
    assert table[(final, "1")].n == 16
    assert table[(final, "1")].concept >= want.concept
    assert table[(final, "0")].concept == table[("none", "none")].concept <= want.concept_off
    assert table[(final, "1")].concept > table[(final, "0.5")].concept

    # without the activation tag, the LoRA at weight 1 changes little: the world's prompts still
    # come out right, and the concept leaks into few of them (reported)
    leak = grid_rates(host, project.output_dir, project.name, leak_probes(), weights=(1,), epochs="4")
    on, off = leak[(final, "1")], leak[("none", "none")]
    print(f"{arch} leak probes: concept in {on.concept:.0%} with the LoRA; shape and colour right "
          f"{on.right:.0%} with, {off.right:.0%} without")
    assert on.concept <= want.leak
    assert on.right >= off.right - 0.25


def test_the_compare_grid_defaults_follow_the_micro_model(trained_demo, tmp_path):
    """`grid` with the project's defaults: 64-px cells, the activation tag and the common tags."""
    _, project = trained_demo
    out = tmp_path / "grid.png"
    assert main(["grid", "--project", project.name, "--root", str(project.root), "--out", str(out)]) == 0
    plan = json.loads(out.with_suffix(".json").read_text())
    assert (plan["generation"]["width"], plan["generation"]["height"]) == (64, 64)
    assert plan["generation"]["prompt"].startswith(f"{ACTIVATION_TAG}, large, blue background, <lora:")
