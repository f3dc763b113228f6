"""What the demo's models can be asked, and how often the judge says they got it right.

A probe is a prompt, a seed and what the picture should show. The probes never repeat a caption
the model was trained on:

    held_out_probes   the base model: (colour, shape, background) triples no pretraining caption has
    concept_probes    the demo LoRA: the activation tag with backgrounds and sizes the demo dataset lacks
    leak_probes       the demo LoRA without its tag: world prompts, where the concept should not appear

`rates(render, probes)` takes any `render(prompt, seed) -> PIL image`, so the same probes are asked
through `generate`, the Compare grid or a host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from .judge import Verdict, judge
from .pretrain import HELD_OUT
from .world import SIZES, Scene

# The demo dataset's backgrounds and size (demo/dataset.py); the probes ask for the others.
DATASET_BACKGROUNDS = ("blue", "black")
DATASET_SIZE = "large"
PROBE_BACKGROUNDS = ("green", "yellow")


@dataclass(frozen=True)
class Probe:
    prompt: str
    seed: int
    want: dict[str, str] = field(default_factory=dict)  # attributes the picture must show
    concept: bool | None = None  # the concept must (True) / must not (False) be there; None: not asked


def held_out_probes(seeds: int = 4) -> list[Probe]:
    """8 held-out triples x `seeds` seeds (32 by default), sizes alternating."""
    out = []
    for i, (colour, shape, background) in enumerate(sorted(HELD_OUT)):
        for s in range(seeds):
            size = list(SIZES)[(i + s) % 2]
            scene = Scene(shape, colour, background, size)
            out.append(Probe(scene.caption(), 1000 + s, {"colour": colour, "shape": shape}))
    return out


def concept_probes(tag: str, seeds: int = 4) -> list[Probe]:
    """The activation tag on backgrounds and in a size the dataset lacks: 4 prompts x `seeds`."""
    prompts = [f"{tag}, {bg} background, {size}" for bg in PROBE_BACKGROUNDS for size in SIZES]
    return [Probe(p, 2000 + s, concept=True) for p in prompts for s in range(seeds)]


def leak_probes(seeds: int = 4) -> list[Probe]:
    """World prompts without the tag: the concept should stay away, the shape and colour stay right."""
    triples = [("green", "square", "yellow"), ("blue", "circle", "white"), ("black", "triangle", "green"), ("yellow", "diamond", "blue")]
    return [Probe(Scene(shape, colour, bg, "large").caption(), 3000 + s, {"colour": colour, "shape": shape}, concept=False)
            for colour, shape, bg in triples for s in range(seeds)]


def passed(v: Verdict, probe: Probe) -> bool:
    return v.matches(**probe.want) if probe.want else v.concept == bool(probe.concept)


@dataclass(frozen=True)
class Rates:
    n: int
    right: float  # share of probes whose `want` holds (or, for concept probes, the concept is there)
    concept: float  # share of pictures with the concept
    verdicts: tuple[Verdict, ...]


def rates(render: Callable[[str, int], Image.Image], probes: Sequence[Probe]) -> Rates:
    verdicts = tuple(judge(render(p.prompt, p.seed)) for p in probes)
    n = len(probes)
    return Rates(n, sum(passed(v, p) for v, p in zip(verdicts, probes)) / n, sum(v.concept for v in verdicts) / n, verdicts)
