"""End to end: a grid of two LoRA epochs x weights on the tiny demo model, through StandaloneHost."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from lora_trainer.cli import main as cli_main
from lora_trainer.compare.plan import (
    GridPlan,
    GridSettings,
    compare_after_training,
    make_plan,
)
from lora_trainer.compare.render import PLAN_CHUNK, render_grid
from lora_trainer.demo.dataset import make_demo_dataset
from lora_trainer.errors import Cancelled, StudioError
from lora_trainer.host.standalone import StandaloneHost
from lora_trainer.progress import CancelToken
from lora_trainer.project import create_project

from .test_host_standalone import write_demo_model, write_epoch_loras

SMALL = GridSettings(weights=(0, 1), steps=2, width=64, height=64, no_lora_column=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A studio root with project "demo": a demo dataset, two saved epochs, and the demo model."""
    root = tmp_path_factory.mktemp("studio")
    project = create_project(root, "demo")
    make_demo_dataset(project.dataset_dir, count=12, size=32)
    ckpt = write_demo_model(project.dir / "demo-model.safetensors")
    host = StandaloneHost(ckpt, [project.output_dir])
    write_epoch_loras(host.bundle(), project.output_dir, "demo", 2)
    return root, project, host


def cell_pixels(result, row: int, col: int) -> np.ndarray:
    return next(np.asarray(img) for c, img in result.cells if (c.row, c.col) == (row, col))


def test_two_epochs_by_weights_grid(run, tmp_path):
    _, project, host = run
    plan = compare_after_training(project.dir, project.output_dir, "demo", host.default_generation(), settings=SMALL)
    assert plan.base.prompt == "lsdemo, large, blue background, <lora:demo-01:0>"
    assert plan.shape == (2, 3)

    calls, events = [], []
    generate = host.generate

    def counting(request, progress, cancel):
        calls.append(request)
        return generate(request, progress, cancel)

    host.generate = counting
    try:
        result = render_grid(host, plan, tmp_path / "grid.png", progress=events.append)
    finally:
        del host.generate
    assert len(calls) == 5  # the no-LoRA image of the seed is made once for both rows

    # epochs differ, weight 0 is exactly no LoRA, and the LoRA shows at weight 1
    assert not np.array_equal(cell_pixels(result, 0, 2), cell_pixels(result, 1, 2))
    for row in range(2):
        assert np.array_equal(cell_pixels(result, row, 0), cell_pixels(result, row, 1))
        assert not np.array_equal(cell_pixels(result, row, 1), cell_pixels(result, row, 2))

    # geometry, and the cells really are in the saved PNG
    png = Image.open(result.png)
    layout = result.layout
    assert png.size == (3 * 64 + layout.pad_left, 2 * 64 + layout.pad_top)
    grid = np.asarray(png.convert("RGB"))
    for row in range(2):
        for col in range(3):
            x, y = layout.cell_origin(row, col)
            assert np.array_equal(grid[y:y + 64, x:x + 64], cell_pixels(result, row, col))

    # generation parameters, pasteable into the WebUI, and the plan
    params = png.text["parameters"]
    assert params.startswith("lsdemo, large, blue background, <lora:demo-01:0>\nSteps: 2, Sampler: DPM++ 2M")
    assert params.endswith('Script: X/Y/Z plot, X Type: Prompt S/R, X Values: ":0>, :1>", Y Type: Prompt S/R, Y Values: "demo-01, demo-02"')
    assert json.loads(png.text[PLAN_CHUNK])["rows"] == ["demo-01", "demo-02"]
    saved = json.loads(result.json.read_text())
    assert result.json == tmp_path / "grid.json"
    assert saved["cols"] == ["no LoRA", "0", "1"]
    assert [c.request for c in GridPlan.from_json(saved).cells()] == [c.request for c in plan.cells()]

    # one event per cell, in order, ending at 1
    per_cell = [e for e in events if "cell" in e.extra]
    assert [e.extra["cell"] for e in per_cell] == [1, 2, 3, 4, 5, 6]
    assert per_cell[-1].fraction == 1.0
    fractions = [e.fraction for e in events if e.fraction is not None]
    assert fractions == sorted(fractions)


def test_cancel_between_cells_leaves_no_file(run, tmp_path):
    _, project, host = run
    plan = make_plan(project.output_dir, SMALL, host.default_generation(), dataset_dir=project.dataset_dir)
    token = CancelToken()

    def progress(event):
        if event.extra.get("cell") == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        render_grid(host, plan, tmp_path / "grid.png", progress=progress, cancel=token)
    assert list(tmp_path.iterdir()) == []


def test_files_outside_the_hosts_lora_folders_are_refused(run, tmp_path):
    _, project, host = run
    other = tmp_path / "elsewhere"
    shutil.copytree(project.output_dir, other)
    plan = make_plan(other, SMALL, host.default_generation())
    with pytest.raises(StudioError, match="not inside a LoRA folder of the standalone host"):
        render_grid(host, plan, tmp_path / "grid.png")
    with pytest.raises(StudioError, match="does not end in .png"):
        render_grid(host, plan, tmp_path / "grid.jpg")


def test_cli_grid_with_the_projects_demo_model(run, tmp_path, capsys):
    root, _, _ = run
    out = tmp_path / "cli.png"
    code = cli_main([
        "grid", "--project", "demo", "--root", str(root), "--epochs", "2", "--weights", "0.5,1",
        "--seed", "3", "4", "--steps", "2", "--size", "64x64", "--swap-axes", "--out", str(out),
        "--xyz-out", str(tmp_path / "xyz.txt"),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "X type: Prompt S/R\nX values: demo-02\nY type: Prompt S/R\nY values: :0.5>, :1>\nZ type: Seed\nZ values: 3, 4\n" in printed
    assert (tmp_path / "xyz.txt").read_text() in printed
    plan = json.loads((tmp_path / "cli.json").read_text())
    assert plan["rows"] == ["0.5", "1"] and plan["cols"] == ["demo-02\nseed 3", "demo-02\nseed 4"]
    params = Image.open(out).text["parameters"]
    assert params.startswith("lsdemo, large, blue background, <lora:demo-02:0.5>\n")
    assert "Clip skip: 2" in params  # as the project trains (SD1.5's default), not the host's default 1


def test_cli_grid_needs_a_checkpoint(tmp_path, capsys):
    create_project(tmp_path, "bare")
    code = cli_main(["grid", "--project", "bare", "--root", str(tmp_path), "--out", str(tmp_path / "g.png")])
    assert code == 2
    assert "pass --checkpoint file" in capsys.readouterr().err.lower()
