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

from .dataset import DATASET_BACKGROUNDS
from .judge import Verdict, judge
from .pretrain import HELD_OUT
from .world import CONCEPT_BACKGROUNDS, SIZES, Scene

PROBE_BACKGROUNDS = tuple(b for b in CONCEPT_BACKGROUNDS if b not in DATASET_BACKGROUNDS)  # green, yellow


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


def tally(judged: Sequence[tuple[Verdict, Probe]]) -> Rates:
    n = len(judged)
    return Rates(n, sum(passed(v, p) for v, p in judged) / n, sum(v.concept for v, _ in judged) / n, tuple(v for v, _ in judged))


def rates(render: Callable[[str, int], Image.Image], probes: Sequence[Probe]) -> Rates:
    return tally([(judge(render(p.prompt, p.seed)), p) for p in probes])


# ---- the demo LoRA through the Compare grid ---------------------------------------------------


def render_fn(host, **params) -> Callable[[str, int], Image.Image]:
    """`render(prompt, seed)` through a host's txt2img (its defaults for the model, then `params`)."""
    base = host.default_generation().replace(**params)

    def render(prompt: str, seed: int) -> Image.Image:
        return host.generate(base.replace(prompt=prompt, seed=seed))[0]

    return render


def grid_rates(host, lora_dir, stem: str, probes: Sequence[Probe], weights: Sequence[float] = (0.0, 0.5, 1.0),
               epochs: str = "all", out_dir=None, **params) -> dict[tuple[str, str], Rates]:
    """The probes asked through Compare grids of the run `stem` (one grid per prompt: rows =
    epochs x seeds, columns = no LoRA + `weights`). Returns {(epoch label, weight label): Rates},
    the no-LoRA column under ("none", "none"). Grids are written to `out_dir` (default: a temp dir)."""
    import tempfile
    from pathlib import Path

    from ..compare.plan import GridSettings, make_plan
    from ..compare.render import render_grid

    by_prompt: dict[str, list[Probe]] = {}
    for p in probes:
        by_prompt.setdefault(p.prompt, []).append(p)
    found: dict[tuple[str, str], list[tuple[Verdict, Probe]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out_dir or tmp)
        for i, (prompt, group) in enumerate(by_prompt.items()):
            probe_of = {p.seed: p for p in group}
            settings = GridSettings(epochs=epochs, weights=tuple(weights), prompt=prompt, seeds=tuple(probe_of),
                                    no_lora_column=True, **params)
            plan = make_plan(lora_dir, settings, host.default_generation(), stem=stem)
            result = render_grid(host, plan, folder / f"probe-grid-{i}.png")
            none_seen = set()  # the no-LoRA picture repeats on every epoch's row: count it once
            for cell, image in result.cells:
                if cell.weight is None:
                    if cell.seed in none_seen:
                        continue
                    none_seen.add(cell.seed)
                    key = ("none", "none")
                else:
                    key = (cell.epoch.label, f"{cell.weight:g}")
                found.setdefault(key, []).append((judge(image), probe_of[cell.seed]))
    return {k: tally(v) for k, v in found.items()}
