"""The learned demo end to end: how long each step takes, and what the judge sees per epoch x weight.

    python bench/bench_demo.py              # the shipped micro SD1.5 model, the demo's defaults
    python bench/bench_demo.py --threads 2  # as CI's 2-core machine runs it

Through the real entry points, in a fresh studio root: `demo --no-ui` (the project), `train` (the
demo's default training, timed), `grid` (the Compare tab's default grid, timed), then the probes
of lora_trainer/demo/evaluate.py through Compare grids of every epoch x weights 0 / 0.5 / 1
(plus the no-LoRA column), read by the judge:

    held-out   the base model, 32 prompts of (colour, shape, background) triples it never saw captioned
    concept    the activation tag on backgrounds and at the size the dataset lacks (16 per cell)
    leak       world prompts without the tag (16 per cell): the concept should stay away

Pretraining (30 min a model, never in CI) is timed by its own command:
`python -m lora_trainer.demo.pretrain --arch sd15` prints its curve and total.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def save_pictures(folder: Path, project, grid: Path) -> None:
    """docs/demo-dataset.png (the 16 pictures, 2x, with their captions' background) and
    docs/demo-grid.png (the Compare tab's default grid), as 256-colour PNGs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pictures = sorted(project.dataset_dir.glob("*.png"))
    side, cols = 128, 8
    sheet = Image.new("RGB", (cols * (side + 4) + 4, ((len(pictures) + cols - 1) // cols) * (side + 4) + 4), "white")
    for i, path in enumerate(pictures):
        with Image.open(path) as im:
            sheet.paste(im.convert("RGB").resize((side, side), Image.NEAREST), (4 + (i % cols) * (side + 4), 4 + (i // cols) * (side + 4)))
    for image, name in ((sheet, "demo-dataset.png"), (Image.open(grid).convert("RGB"), "demo-grid.png")):
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(folder / name, optimize=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pictures", help="also save the dataset (a contact sheet) and the default grid here, as the README shows them")
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from lora_trainer.cli import main as cli
    from lora_trainer.demo import shipped
    from lora_trainer.demo.dataset import ACTIVATION_TAG
    from lora_trainer.demo.evaluate import concept_probes, grid_rates, held_out_probes, leak_probes, rates, render_fn
    from lora_trainer.host.standalone import StandaloneHost
    from lora_trainer.project import open_project

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        cli(["demo", "--no-ui", "--root", str(root)])
        made = time.perf_counter() - t
        t = time.perf_counter()
        cli(["train", "--project", "demo", "--root", str(root)])
        trained = time.perf_counter() - t
        t = time.perf_counter()
        cli(["grid", "--project", "demo", "--root", str(root), "--out", str(root / "grid.png")])
        grid = time.perf_counter() - t
        project = open_project(root, "demo")
        if a.pictures:
            save_pictures(Path(a.pictures), project, root / "grid.png")

        base = StandaloneHost(shipped.micro_model("sd15"), clip_skip=2)
        held = rates(render_fn(base), held_out_probes())
        host = StandaloneHost(project.checkpoint(), [project.output_dir], clip_skip=2)
        t = time.perf_counter()
        concept = grid_rates(host, project.output_dir, "demo", concept_probes(ACTIVATION_TAG))
        leak = grid_rates(host, project.output_dir, "demo", leak_probes(), weights=(1,))
        probing = time.perf_counter() - t

    print(f"torch {torch.__version__}, {a.threads} threads, CPU")
    print(f"demo project      {made:6.1f} s")
    print(f"demo training     {trained:6.1f} s   (the project's defaults)")
    print(f"default grid      {grid:6.1f} s   (the Compare tab's defaults)")
    print(f"probe grids       {probing:6.1f} s")
    print(f"base model, held-out prompts: shape and colour right {held.right:.0%} of {held.n}")
    print("\nconcept present (concept probes / leak probes at weight 1):")
    print(f"  {'epoch':<16} {'w 0':>6} {'w 0.5':>6} {'w 1':>6} {'leak':>6}")
    none = concept[("none", "none")].concept
    print(f"  {'no LoRA':<16} {none:6.0%} {'':>6} {'':>6} {leak[('none', 'none')].concept:6.0%}")
    for epoch in sorted({e for e, _ in concept if e != "none"}):
        cells = [concept.get((epoch, w)) for w in ("0", "0.5", "1")]
        lk = leak.get((epoch, "1"))
        print(f"  {epoch:<16} " + " ".join(f"{c.concept:6.0%}" if c else f"{'':>6}" for c in cells) + f" {lk.concept:6.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
