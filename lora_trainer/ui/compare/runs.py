"""What the Compare sub-tab does, without gradio: find a project's run, get a host, start a grid job.

The Train tab uses two things from here: `start_compare_for_project` (its "Compare epochs"
button) and `auto_compare_enabled` (whether to start that grid when a training ends).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ...compare.plan import (
    GridPlan,
    GridSettings,
    compare_after_training,
    make_plan,
)
from ...errors import StudioError
from ...host.base import GenerationRequest, Host, checkpoint_defaults, default_generation
from ...network.epochs import find_epoch_files
from ...progress import ProgressEvent
from ...project import Project, open_project
from ..context import StudioContext

if TYPE_CHECKING:
    from PIL import Image

GRID_JOB_KIND = "grid"
COMPARE_SECTION = "compare"  # project.toml
AUTO_KEY = "auto_after_training"


# ---- 1. where the run is, and what renders it ---------------------------------------------------


def default_lora_dir(ctx: StudioContext, project: Project) -> Path:
    """Where training writes the project's LoRA files: the host's choice (inside the WebUI its Lora
    folder), else the project's output folder."""
    return ctx.host.lora_output_dir(project) if ctx.host is not None else project.output_dir


def lora_dir_of(ctx: StudioContext, project: Project, typed: str | None) -> Path:
    """The typed LoRA folder (confined like every typed path), else the project's default."""
    text = (typed or "").strip()
    return ctx.paths.confine(text) if text else default_lora_dir(ctx, project)


def run_stem(project: Project, lora_dir: Path, typed: str | None = None) -> str | None:
    """The run to compare: the typed name, else the project's own stem when its files are in the
    folder (a WebUI Lora folder may hold other runs too), else None (the folder's only run)."""
    text = (typed or "").strip()
    if text:
        return text
    mine = project.file_stem
    if lora_dir.is_dir() and any(p.stem == mine or p.stem.startswith(mine + "-") for p in lora_dir.glob("*.safetensors")):
        return mine
    return None


def checkpoint_of(ctx: StudioContext, project: Project, typed: str | None) -> Path:
    """The standalone checkpoint: the typed one, else the project's own (Project.checkpoint: its
    [train] checkpoint, else its demo model), confined as every path is."""
    from ...models.checkpoint import checkpoint_file

    text = (typed or "").strip()
    if text:
        return checkpoint_file(ctx.paths.confine(text))
    found = project.checkpoint()
    if found is None:
        raise StudioError(
            "No checkpoint to render the grid with.",
            "Type the path of an SD1.5 or SDXL .safetensors file in Checkpoint, or set the project's training checkpoint.",
        )
    return ctx.paths.confine(found)


def host_for(ctx: StudioContext, project: Project, lora_dir: Path, checkpoint: str | None = None) -> Host:
    """The WebUI's host when inside the WebUI, else a standalone host over the checkpoint."""
    if ctx.host is not None:
        return ctx.host
    from ...train.config import clip_skip_of

    path = checkpoint_of(ctx, project, checkpoint)
    return ctx.standalone_host(path, lora_dir, clip_skip_of(project, path))


def describe_run(lora_dir: Path, stem: str | None) -> str:
    """The saved files of the run, as one line for the tab ("alice-01, alice-02, alice (final)")."""
    files = find_epoch_files(lora_dir, stem)
    return f"{len(files)} file(s) in {lora_dir}: " + ", ".join(f.label for f in files)


# ---- 2. the grid job ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GridJobResult:
    """What a finished grid job leaves (the images themselves are in the PNG)."""

    png: Path
    json: Path
    size: tuple[int, int]  # (width, height) of the grid
    shape: tuple[int, int]  # (rows, columns)


def start_grid_job(ctx: StudioContext, project: Project, host: Host, plan: GridPlan) -> str:
    """Render `plan` with `host` as a GPU job; returns the job id. The PNG goes to new_grid_path."""
    from ...compare.render import new_grid_path, render_grid

    rows, cols = plan.shape

    def work(progress, cancel) -> GridJobResult:
        out = new_grid_path(project)  # named when the job starts: queued jobs get distinct names
        out.parent.mkdir(parents=True, exist_ok=True)
        result = render_grid(host, plan, out, progress=progress, cancel=cancel)
        w, h = result.image.size
        progress(ProgressEvent(1.0, f"wrote {out.relative_to(project.dir).as_posix()} ({w}x{h})"))
        return GridJobResult(result.png, result.json, (w, h), (rows, cols))

    title = f"Grid of {plan.stem}: {rows}x{cols} images"
    return ctx.submit(GRID_JOB_KIND, title, work, gpu=True).id


def start_compare_for_project(
    ctx: StudioContext, project_name: str, checkpoint: str | None = None, settings: GridSettings | None = None,
) -> str:
    """The one-click grid: the project's saved epochs x the default weights, prompted with its
    dataset's activation and common tags, rendered as a GPU job. Returns the job id.

    checkpoint: for the standalone host (None: the project's [train] checkpoint, else its demo
    model); ignored inside the WebUI. settings: None = the defaults (all epochs, weights 0.5-1).
    Raises StudioError (no epochs, no checkpoint, ...) before any job starts.
    """
    project = open_project(ctx.root, project_name)
    lora_dir = default_lora_dir(ctx, project)
    stem = run_stem(project, lora_dir)
    find_epoch_files(lora_dir, stem)  # "no epochs yet" before "no checkpoint"
    host = host_for(ctx, project, lora_dir, checkpoint)
    plan = compare_after_training(project.dir, lora_dir, stem, host.default_generation(), settings=settings)
    return start_grid_job(ctx, project, host, plan)


# ---- 3. the tab's own plan ----------------------------------------------------------------------


def _number(value, name: str, kind=int):
    """A gr.Number's value (None when cleared = the model's default)."""
    if value is None or value == "":
        return None
    try:
        n = kind(value)
    except (TypeError, ValueError):
        raise StudioError(f"{name} {value!r} is not a number.", f"Type a number for {name}.") from None
    if n <= 0:
        raise StudioError(f"{name} must be more than 0 (it is {value}).", f"Type a positive number for {name}.")
    return n


def parse_seeds(text: str) -> tuple[int, ...]:
    items = [t.strip() for t in (text or "").replace(" ", ",").split(",") if t.strip()]
    try:
        seeds = tuple(int(t) for t in items)
    except ValueError:
        raise StudioError(f"Seeds {text!r} are not whole numbers.", "Write seeds like 1 or 1, 2, 3.") from None
    if not seeds:
        raise StudioError("No seed was given.", "Write seeds like 1 or 1, 2, 3.")
    return seeds


@dataclass(frozen=True)
class CompareForm:
    """The tab's fields, as typed (strings from text boxes, numbers from number boxes)."""

    lora_dir: str = ""
    run: str = ""
    epochs: str = "all"
    weights: str = "0.5, 0.6, 0.7, 0.8, 0.9, 1"
    prompt: str = ""  # "" = the default prompt
    negative: str = ""
    seeds: str = "1"
    sampler: str = ""
    scheduler: str = ""
    steps: float | None = None
    cfg: float | None = None
    width: float | None = None
    height: float | None = None
    no_lora_column: bool = False
    swap_axes: bool = False
    checkpoint: str = ""

    def settings(self) -> GridSettings:
        from ...compare.plan import parse_weights

        return GridSettings(
            epochs=(self.epochs or "all").strip() or "all",
            weights=tuple(parse_weights(self.weights or "")),
            prompt=self.prompt if (self.prompt or "").strip() else None,
            negative_prompt=self.negative or "",
            seeds=parse_seeds(self.seeds),
            steps=_number(self.steps, "Steps"),
            cfg_scale=_number(self.cfg, "CFG scale", float),
            width=_number(self.width, "Width"),
            height=_number(self.height, "Height"),
            sampler_name=(self.sampler or "").strip() or None,
            scheduler=(self.scheduler or "").strip() or None,
            no_lora_column=bool(self.no_lora_column),
            swap_axes=bool(self.swap_axes),
        )


def keep_tokens_of(project: Project) -> int:
    keep = project.load_file().section("train").get("keep_tokens", 1)
    return keep if isinstance(keep, int) and keep >= 0 else 1


def plan_from_form(ctx: StudioContext, project: Project, form: CompareForm, defaults: GenerationRequest) -> GridPlan:
    lora_dir = lora_dir_of(ctx, project, form.lora_dir)
    return make_plan(
        lora_dir, form.settings(), defaults, stem=run_stem(project, lora_dir, form.run),
        dataset_dir=project.dataset_dir, keep_tokens=keep_tokens_of(project),
    )


def model_defaults(ctx: StudioContext, project: Project, checkpoint: str | None = None) -> GenerationRequest:
    """The generation defaults of the model a grid would use, without loading it or touching the
    cached host (standalone: the checkpoint's header tells its architecture)."""
    if ctx.host is not None:
        return ctx.host.default_generation()
    return checkpoint_defaults(checkpoint_of(ctx, project, checkpoint))


def export_defaults(ctx: StudioContext, project: Project, form: CompareForm) -> GenerationRequest:
    """Defaults for the fields left empty when only exporting: the model's when one is at hand,
    else SD1.5's (the X/Y/Z text is for a WebUI, which has its own model)."""
    try:
        return model_defaults(ctx, project, form.checkpoint)
    except StudioError:
        return default_generation("sd15")


# ---- 4. showing a grid --------------------------------------------------------------------------


def latest_grid(project: Project) -> Path | None:
    from ...compare.render import grids_dir

    folder = grids_dir(project)
    pngs = sorted(folder.glob("grid-*.png"), key=lambda p: (p.stat().st_mtime_ns, p.name)) if folder.is_dir() else []
    return pngs[-1] if pngs else None


def grid_cells(png: Path) -> list[tuple[Image.Image, str]]:
    """The cells of a saved grid with "row / column" captions, cut out of the PNG.

    The layout is recomputed from the plan saved beside it (labels and cell size); a grid whose
    layout does not match (drawn with another font) gives no cells rather than wrong ones.
    """
    from PIL import Image

    from ...compare.grid import plan_layout

    plan_path = png.with_suffix(".json")
    if not plan_path.is_file():
        return []
    data = json.loads(plan_path.read_text(encoding="utf-8"))
    rows, cols = data.get("rows") or [], data.get("cols") or []
    gen = data.get("generation") or {}
    with Image.open(png) as im:
        grid = im.convert("RGB")
    layout, _ = plan_layout(int(gen.get("width", 0)), int(gen.get("height", 0)), rows, cols)
    if layout.size != grid.size:
        return []
    cells = []
    for r, row_label in enumerate(rows):
        for c, col_label in enumerate(cols):
            x, y = layout.cell_origin(r, c)
            caption = f"{row_label} / {col_label}".replace("\n", " ")
            cells.append((grid.crop((x, y, x + layout.cell_w, y + layout.cell_h)), caption))
    return cells


def cell_infotext(png: Path, index: int) -> str:
    """The WebUI parameters of the `index`-th cell of a saved grid (row by row, as `grid_cells`):
    its prompt with that epoch's `<lora:...:weight>`, negative prompt, seed, steps, sampler, CFG and
    size, so the cell can be made again in txt2img."""
    plan_path = png.with_suffix(".json")
    try:
        plan = GridPlan.from_json(json.loads(plan_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StudioError(f"The grid's plan {plan_path} can not be read ({e}).", "Render the grid again.") from None
    cells = plan.cells()
    if not 0 <= index < len(cells):
        raise StudioError(f"The grid {png.name} has no cell {index + 1}.", "Click a cell of the grid shown.")
    return cells[index].request.infotext()


# ---- 5. project.toml [compare] ------------------------------------------------------------------


def auto_compare_enabled(project: Project) -> bool:
    """Whether a grid of the saved epochs is rendered when a training of `project` ends."""
    return project.load_file().section(COMPARE_SECTION).get(AUTO_KEY) is True


def set_auto_compare(project: Project, enabled: bool) -> None:
    pf = project.load_file()
    section = pf.section(COMPARE_SECTION)
    section[AUTO_KEY] = bool(enabled)
    pf.set_section(COMPARE_SECTION, section)
    project.save_file(pf)
