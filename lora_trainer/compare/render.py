"""Rendering a plan through a Host into an annotated PNG (and its plan as JSON beside it).

Every cell is one `host.generate` call, so the standalone sampler and the WebUI's pipeline draw
the same grid from the same plan. Cells with identical requests (the no-LoRA image of one seed
appears once per row) are generated once. Cancel is checked between cells and inside them (the
host's sampler checks it each step); nothing is written until every cell is done, and then the
PNG and the JSON are each written atomically, so a cancelled or failed grid leaves no file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StudioError
from ..fileio import atomic_path, write_text
from ..host.base import INFOTEXT_KEY, GenerationRequest, Host, infotext_of
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from . import xyz
from .grid import GridLayout, draw_grid
from .plan import Cell, GridPlan

if TYPE_CHECKING:
    from PIL import Image

    from ..project import Project

PLAN_CHUNK = "lora_studio_grid"  # PNG text chunk holding the plan JSON

GRIDS_DIR = "grids"  # under the project's output folder: the tab's and the API's grids alike


def grids_dir(project: Project) -> Path:
    return project.output_dir / GRIDS_DIR


def new_grid_path(project: Project) -> Path:
    """`<project>/output/grids/grid-<timestamp>.png`, with -2, -3 ... when that second is taken."""
    folder = grids_dir(project)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = folder / f"grid-{stamp}.png", 2
    while path.exists():
        path, n = folder / f"grid-{stamp}-{n}.png", n + 1
    return path


@dataclass
class GridResult:
    png: Path
    json: Path
    image: Image.Image
    layout: GridLayout
    cells: list[tuple[Cell, Image.Image]]
    infotext: str  # the PNG's "parameters": the first cell's, plus the X/Y/Z plot fields


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_reachable(host: Host, plan: GridPlan) -> None:
    """Every file of the plan exists and lies in one of the host's LoRA folders (so `<lora:stem:w>`
    finds that very file)."""
    missing = [e.path.name for e in plan.epochs if not e.path.is_file()]
    if missing:
        raise StudioError(f"LoRA file(s) {', '.join(missing)} are no longer in {plan.lora_dir}.", "Make the plan again.")
    dirs = host.lora_dirs()
    if not any(_within(plan.lora_dir, d) for d in dirs):
        where = ", ".join(str(d) for d in dirs) or "none"
        raise StudioError(
            f"{plan.lora_dir} is not inside a LoRA folder of the {host.name} host ({where}), so its "
            f"prompts can not name these files.",
            "Move the files into the LoRA folder, or pick a run that is there.",
        )


def grid_infotext(plan: GridPlan, first: str) -> str:
    """The grid's "parameters": the infotext of its first LoRA cell plus the X/Y/Z fields, so
    pasting it into txt2img sets up the same X/Y/Z plot."""
    return xyz.append_fields(first, xyz.xyz_fields(plan.xyz_axes()))


def render_grid(
    host: Host,
    plan: GridPlan,
    out: str | os.PathLike,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    font_path: str | Path | None = None,
) -> GridResult:
    """Generate every cell of `plan` with `host`, draw the labelled grid and save it.

    Writes `out` (PNG; "parameters" and the plan in its text chunks) and `out` with suffix .json
    (the plan). Progress: one event per finished cell (extra: cell, cells) and the host's step
    events scaled into the cell's share. Raises Cancelled when `cancel` is set.
    """
    from PIL import PngImagePlugin

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise StudioError(f"The grid file {out.name} does not end in .png.", "Name it like grid.png.")
    host.refresh_loras()  # epochs saved since the host last looked
    check_reachable(host, plan)
    cells = plan.cells()
    rows, cols = plan.shape
    row_labels, col_labels = plan.row_labels(), plan.col_labels()
    n = len(cells)
    done: dict[GenerationRequest, Image.Image] = {}
    results: list[tuple[Cell, Image.Image]] = []
    for i, cell in enumerate(cells):
        if cancel is not None:
            cancel.raise_if_cancelled()
        what = f"{row_labels[cell.row]} / {col_labels[cell.col]}".replace("\n", " ")
        if cell.request not in done:

            def inner(event: ProgressEvent, i=i) -> None:
                f = event.fraction
                progress(ProgressEvent((i + f) / n if f is not None else None, event.text, log=event.log))

            done[cell.request] = host.generate(cell.request, inner, cancel)[0]
        results.append((cell, done[cell.request]))
        progress(ProgressEvent((i + 1) / n, f"grid cell {i + 1}/{n}: {what}", extra={"cell": i + 1, "cells": n}))
    if cancel is not None:
        cancel.raise_if_cancelled()

    grid_cells = [[None] * cols for _ in range(rows)]
    for cell, image in results:
        grid_cells[cell.row][cell.col] = image
    image, layout = draw_grid(grid_cells, row_labels, col_labels, font_path=font_path)

    first = next((img for c, img in results if c.request.prompt == plan.base.prompt and c.seed == plan.seeds[0]), results[0][1])
    infotext = grid_infotext(plan, infotext_of(first))
    plan_json = plan.dumps()
    info = PngImagePlugin.PngInfo()
    info.add_text(INFOTEXT_KEY, infotext)
    info.add_text(PLAN_CHUNK, json.dumps(plan.to_json(), ensure_ascii=False))
    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    json_path = out.with_suffix(".json")
    write_text(json_path, plan_json)
    image.info[INFOTEXT_KEY] = infotext
    return GridResult(out, json_path, image, layout, results, infotext)
