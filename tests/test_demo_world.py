"""The demo's tiny world and its judge: pictures are pure functions of a seed, and the judge reads
back what the generator drew (>= 95% on fresh pictures, as the learned-demo issue asks)."""

import random

import numpy as np
import pytest

from lora_trainer.demo import world
from lora_trainer.demo.judge import judge
from lora_trainer.demo.pretrain import HELD_OUT


def test_a_scene_is_a_pure_function_of_its_seed():
    a, b = world.scene_of_seed(123), world.scene_of_seed(123)
    assert a == b
    assert np.array_equal(np.asarray(world.draw(a, 64)), np.asarray(world.draw(b, 64)))
    assert world.scene_of_seed(124) != a
    assert world.draw(a, 48).size == (48, 48)


def test_captions_use_only_the_vocabulary_and_the_concept_has_no_tag():
    vocab = set(world.vocabulary())
    assert len(vocab) == 6 * 4 + 6 + 2
    for seed in range(200):
        scene = world.scene_of_seed(seed)
        assert set(scene.tags()) <= vocab
        assert scene.colour != scene.background
        assert scene.r - 1e-9 <= scene.cx <= 1 - scene.r and scene.r - 1e-9 <= scene.cy <= 1 - scene.r  # wholly inside
    concept = world.concept_scene("blue", "large", random.Random(0))
    assert concept.caption() == "blue background, large"


def test_held_out_triples_are_never_drawn_but_their_parts_are():
    seen = {(s.colour, s.shape, s.background) for s in (world.scene_of_seed(i, HELD_OUT) for i in range(3000))}
    assert not seen & HELD_OUT
    for colour, shape, background in HELD_OUT:
        assert any(c == colour and s == shape for c, s, _ in seen)
        assert any(c == colour and b == background for c, _, b in seen)


@pytest.mark.parametrize("size", [64, 128])
def test_the_judge_reads_fresh_generator_pictures(size):
    n, right = 300, {"colour": 0, "shape": 0, "background": 0, "size": 0}
    for seed in range(10**6, 10**6 + n):  # seeds no pretraining draws from
        scene = world.scene_of_seed(seed)
        v = judge(world.draw(scene, size))
        assert not v.concept
        for k in right:
            right[k] += getattr(v, k) == getattr(scene, k)
    rates = {k: r / n for k, r in right.items()}
    assert min(rates.values()) >= 0.95, rates


def test_the_judge_finds_the_concept_and_only_the_concept():
    rng = random.Random(7)
    found = [judge(world.draw(world.concept_scene(rng.choice(world.CONCEPT_BACKGROUNDS), rng.choice(list(world.SIZES)), rng))).concept
             for _ in range(100)]
    assert sum(found) >= 95
    # a red figure on a white background, or a white one on red, is the world, not the concept
    for colour, background in (("red", "white"), ("white", "red")):
        scene = world.place("circle", colour, background, "large", random.Random(1))
        v = judge(world.draw(scene))
        assert v.matches(colour=colour, shape="circle", background=background, size="large") and not v.concept


def test_an_empty_picture_has_no_figure():
    from PIL import Image

    v = judge(Image.new("RGB", (64, 64), world.COLOURS["green"]))
    assert (v.background, v.shape, v.colour, v.concept) == ("green", "", "", False)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_pretraining_writes_a_checkpoint_load_bundle_reads_as_trained(tmp_path, arch):
    """A few steps of each phase: the file has the real layout, and the loader infers the head
    split the micro model was trained with (no tensor records it), so the loaded model computes
    what the trained one did."""
    import torch

    from lora_trainer.demo.pretrain import PretrainConfig, micro_configs, pretrain
    from lora_trainer.models.bundle import load_bundle

    cfg = PretrainConfig(arch=arch, vae_phases=((2, 16), (1, 64)), vae_batch=2, pool=8, steps=2, batch=2, log_every=1)
    lines = []
    out = pretrain(cfg, tmp_path / f"micro-{arch}.safetensors", log=lines.append)
    assert any(line.startswith("vae ") for line in lines) and any(line.startswith("unet ") for line in lines)
    b = load_bundle(out, clip_skip=cfg.clip_skip if arch == "sd15" else 1)
    unet_cfg, vae_cfg, text_cfgs = micro_configs(arch)
    assert b.unet.config.heads_at(64) == unet_cfg.heads_at(64)
    assert [t.config.heads for _, t in b.text_encoders] == [c.heads for c in text_cfgs]
    assert b.vae.config.ch == vae_cfg.ch and b.dtype == torch.float16
    # latents x scale factor have about unit variance (the posterior was rescaled)
    from lora_trainer.demo.pretrain import to_tensor

    x = to_tensor([world.draw(world.scene_of_seed(i), 64) for i in range(8)])
    with torch.no_grad():
        z = b.vae.to(torch.float32).encode(x).mean * b.vae_scale_factor
    assert 0.3 < z.std().item() < 3.0


def oracle_render(tag: str):
    """A perfect model of the world: draws what a probe's prompt says (the concept for `tag`)."""
    import random

    from lora_trainer.demo import world

    def render(prompt: str, seed: int):
        parts = [p.strip() for p in prompt.split(",")]
        background, size = parts[1].removesuffix(" background"), parts[2]
        rng = random.Random(seed)
        if parts[0] == tag:
            return world.draw(world.concept_scene(background, size, rng))
        colour, shape = parts[0].split(" ", 1)
        return world.draw(world.place(shape, colour, background, size, rng))

    return render


def test_the_probes_ask_what_the_judge_can_tell():
    from PIL import Image

    from lora_trainer.demo.evaluate import concept_probes, held_out_probes, leak_probes, rates
    from lora_trainer.demo.world import SIZES

    held, concept, leak = held_out_probes(), concept_probes("ls_disc"), leak_probes()
    assert (len(held), len(concept), len(leak)) == (len(HELD_OUT) * 4, 16, 16)
    assert {(p.want["colour"], p.want["shape"]) for p in held} == {(c, s) for c, s, _ in HELD_OUT}
    assert all(p.prompt.split(", ")[2] in SIZES for p in held + concept + leak)
    perfect = oracle_render("ls_disc")
    assert rates(perfect, held).right >= 0.95
    on = rates(perfect, concept)
    assert on.right == on.concept >= 0.95
    off = rates(perfect, leak)
    assert off.right >= 0.95 and off.concept == 0
    blank = rates(lambda prompt, seed: Image.new("RGB", (64, 64), (128, 128, 128)), held)
    assert blank.right <= 0.1
