"""The Compare sub-tab under gradio 3.41.2 and 4.40: its real callbacks on the tiny demo model.

A project "demo" holds a demo dataset, the demo checkpoint (found as the project's demo model)
and two saved epochs; the tab finds them, renders a 2x2 grid of 64 px cells in 2 steps as a job,
shows it with its cells, exports the X/Y/Z settings, and says plainly what is missing.
"""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import types

import pytest
from PIL import Image

from lora_trainer.compare.grid import plan_layout
from lora_trainer.compare.plan import GridSettings
from lora_trainer.demo.dataset import make_demo_dataset
from lora_trainer.errors import StudioError
from lora_trainer.jobs import JobStatus
from lora_trainer.models.demo import write_demo_checkpoint
from lora_trainer.project import create_project, open_project
from lora_trainer.ui.app import build_tab
from lora_trainer.ui.compare import (
    CompareTab,
    auto_compare_enabled,
    start_compare_for_project,
)
from lora_trainer.ui.context import STANDALONE_HOST_KEY, StudioContext
from tests.test_host_standalone import write_epoch_loras
from tests.ui_driver import component, handlers, is_update, trigger

pytestmark = pytest.mark.gradio3

FORM_IDS = [  # CompareForm's field order
    "lora_dir", "run", "epochs", "weights", "prompt", "negative", "seeds", "sampler", "scheduler",
    "steps", "cfg", "width", "height", "no_lora", "swap", "checkpoint",
]
SMALL = {"weights": "0.5, 1", "sampler": "Euler", "scheduler": "Karras", "steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """(ctx, tab, project): project "demo" with a dataset, its demo model and epochs demo-01, demo-02."""
    ctx = StudioContext.for_root(tmp_path_factory.mktemp("studio"))
    project = create_project(ctx.root, "demo")
    make_demo_dataset(project.dataset_dir, count=6, size=32)
    ckpt = write_demo_checkpoint(project.dir / "demo-model.safetensors")
    # The tab reuses this host and its loaded model: SD1.5 renders with the training's CLIP skip (2).
    host = ctx.standalone_host(ckpt, project.output_dir, clip_skip=2)
    write_epoch_loras(host.bundle(), project.output_dir, "demo", 2)
    tab = build_tab(ctx)
    return ctx, tab, project, host


def form(**changes) -> list:
    values = {"lora_dir": "", "run": "", "epochs": "all", "weights": "0.5, 0.6, 0.7, 0.8, 0.9, 1", "prompt": "",
              "negative": "", "seeds": "1", "sampler": "DPM++ 2M", "scheduler": "Karras", "steps": 20, "cfg": 7.0,
              "width": 512, "height": 512, "no_lora": False, "swap": False, "checkpoint": ""}
    values.update(SMALL)
    values.update(changes)
    return [values[k] for k in FORM_IDS]


def by_id(out: dict) -> dict:
    return {c.elem_id: v for c, v in out.items()}


def value(v):
    return v["value"] if is_update(v) else v


def compare_handler(tab, elem_id: str, event: str):
    """The Compare tab's handler of an event other sub-tabs also listen to."""
    return next(fn for fn, _, _ in handlers(tab, elem_id, event) if isinstance(getattr(fn, "__self__", None), CompareTab))


def finish(ctx, tab, job_id: str, name: str = "demo", seen: str = "") -> dict:
    """Wait for the job, then let the tab see it finish as the job panel's poll would."""
    assert isinstance(job_id, str) and job_id, f"no job was started: {job_id!r}"
    assert ctx.jobs.get(job_id).wait(60), "job did not finish"
    return by_id(compare_handler(tab, "lora_studio_progress", "change")(job_id, name, seen))


def views(tab, name: str, *values) -> dict:
    """What the "Find epochs" button shows (a dict of updates, keyed by elem_id)."""
    return by_id(compare_handler(tab, "lora_studio_compare_refresh", "click")(name, *values))


def plain_error(html: str) -> str:
    assert 'class="ls-error"' in html and "Traceback" not in html, html
    return htmllib.unescape(re.sub(r"<[^>]+>", "", html))


def test_the_tab_finds_the_saved_epochs_and_fills_the_default_prompt(studio):
    ctx, tab, project, host = studio
    assert "demo-01, demo-02" in component(tab, "lora_studio_compare_found").value  # shown at build time
    out = views(tab, "demo", *form(), 64, 64)
    assert "2 file(s)" in out["lora_studio_compare_found"] and "demo-01, demo-02" in out["lora_studio_compare_found"]
    assert out["lora_studio_compare_prompt"] == "lsdemo, large, blue background, <lora:demo-01:0.5>"
    assert out["lora_studio_compare_width"] != 512  # a size the user chose is kept
    # A size still at an architecture's default follows the model (the demo model is SD1.5).
    out = views(tab, "demo", *form(width=1024, height=1024), 1024, 1024)
    assert (out["lora_studio_compare_width"], out["lora_studio_compare_height"]) == (512, 512)
    # A typed prompt is left alone; the epoch list can be narrowed.
    out = views(tab, "demo", *form(prompt="x"), 64, 64)
    assert "lora_studio_compare_prompt" not in out
    # Looking (even at another model) neither loads nor replaces the cached host.
    other = write_demo_checkpoint(project.dir / "other.safetensors", seed=1)
    views(tab, "demo", *form(checkpoint=str(other)), 64, 64)
    assert ctx.extra[STANDALONE_HOST_KEY][1] is host


def test_render_grid_runs_a_job_and_shows_the_png_and_its_cells(studio):
    ctx, tab, project, host = studio
    job_id, msg, xyz_text = trigger(tab, "lora_studio_compare_render", "click", "demo", *form(no_lora=True))
    assert "Rendering a 2x3 grid of demo" in msg and "X type: Prompt S/R" in xyz_text
    job = ctx.jobs.get(job_id)
    assert job.kind == "grid" and job.gpu
    out = finish(ctx, tab, job_id)
    assert job.status == JobStatus.DONE, job.error
    png = job.result.png
    assert png.parent == project.output_dir / "grids" and re.fullmatch(r"grid-\d{8}-\d{6}(-\d+)?\.png", png.name)
    assert png.with_suffix(".json").is_file()
    layout, _ = plan_layout(64, 64, ["demo-01", "demo-02"], ["no LoRA", "0.5", "1"])
    assert Image.open(png).size == layout.size == job.result.size
    assert out["lora_studio_compare_image"] == str(png)
    cells = out["lora_studio_compare_cells"]
    assert [c for _, c in cells] == [f"{e} / {w}" for e in ("demo-01", "demo-02") for w in ("no LoRA", "0.5", "1")]
    assert all(img.size == (64, 64) for img, _ in cells)
    grid = Image.open(png).convert("RGB")
    x, y = layout.cell_origin(1, 2)
    assert cells[5][0].tobytes() == grid.crop((x, y, x + 64, y + 64)).tobytes()
    assert "ls-ok" in out["lora_studio_compare_message"] and job.summary.endswith(f"({layout.size[0]}x{layout.size[1]})")
    # Seen once: the next poll changes nothing; another project's view ignores it.
    assert finish(ctx, tab, job_id, seen=job_id) == {"lora_studio_compare_seen": job_id}
    # The host (and its loaded model) is the one made for this checkpoint, folder and CLIP skip.
    assert ctx.extra[STANDALONE_HOST_KEY][1] is host
    # Refresh and a project change show the latest grid.
    refreshed = views(tab, "demo", *form(), 64, 64)
    assert refreshed["lora_studio_compare_image"] == str(png) and len(refreshed["lora_studio_compare_cells"]) == 6
    assert out["lora_studio_compare_shown"] == refreshed["lora_studio_compare_shown"] == str(png)

    # A clicked cell gives the parameters to make it again in txt2img: the last cell is epoch 2 at 1.
    (on_cell,) = [fn for fn, _, _ in handlers(tab, "lora_studio_compare_cells", "select")]
    params = on_cell(str(png), types.SimpleNamespace(index=5))
    prompt, fields = params.split("\n")
    assert prompt.endswith("<lora:demo-02:1>") and prompt.count("<lora:") == 1
    assert fields == "Steps: 2, Sampler: Euler, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 64x64"
    no_lora = on_cell(str(png), types.SimpleNamespace(index=3)).split("\n")[0]
    assert "<lora:" not in no_lora and no_lora.strip(", ") == prompt.split("<lora:")[0].strip(", ")
    assert "no cell 7" in on_cell(str(png), types.SimpleNamespace(index=6))


def test_inside_the_webui_a_send_to_txt2img_button_takes_the_cell_parameters(studio):
    """The WebUI's hook (host/webui_compat.add_send_to_txt2img) is given the parameters box."""
    import gradio as gr

    from lora_trainer.ui.context import SEND_TO_TXT2IMG_KEY

    ctx, _, _, _ = studio
    given = []

    def send(source):
        given.append(source)
        return gr.Button("Send to txt2img", elem_id="txt2img_tab")

    ctx.extra[SEND_TO_TXT2IMG_KEY] = send
    try:
        tab = build_tab(ctx)
    finally:
        del ctx.extra[SEND_TO_TXT2IMG_KEY]
    assert [c.elem_id for c in given] == ["lora_studio_compare_cell_params"]
    assert component(tab, "txt2img_tab") is not None
    with pytest.raises(KeyError):
        component(build_tab(ctx), "txt2img_tab")  # standalone: no such button


def test_export_gives_the_prompt_sr_axes(studio):
    _, tab, _, _ = studio
    text, msg = trigger(tab, "lora_studio_compare_export", "click", "demo", *form(swap=True))
    assert "ls-info" in msg
    lines = text.splitlines()
    assert "Prompt: lsdemo, large, blue background, <lora:demo-01:0.5>" in lines
    assert lines[lines.index("X type: Prompt S/R") + 1] == "X values: demo-01, demo-02"  # swapped: epochs are X
    assert lines[lines.index("Y type: Prompt S/R") + 1] == "Y values: :0.5>, :1>"
    assert "Steps: 2, Sampler: Euler, Schedule type: Karras, CFG scale: 7, Size: 64x64" in text


def test_one_click_compare_renders_every_saved_epoch(studio):
    ctx, tab, _, _ = studio
    settings = GridSettings(weights=(0.5, 1.0), steps=2, width=64, height=64)
    job_id = start_compare_for_project(ctx, "demo", settings=settings)
    job = ctx.jobs.get(job_id)
    assert job.wait(60) and job.status == JobStatus.DONE, job.error
    assert job.result.shape == (2, 2) and job.result.png.is_file()
    plan = json.loads(job.result.json.read_text())
    assert [e["file"] for e in plan["epochs"]] == ["demo-01.safetensors", "demo-02.safetensors"]
    assert plan["generation"]["prompt"] == "lsdemo, large, blue background, <lora:demo-01:0.5>"
    # The panel shows it in the Compare tab too.
    out = finish(ctx, tab, job_id)
    assert out["lora_studio_compare_image"] == str(job.result.png)


def test_auto_render_option_is_kept_in_project_toml(studio):
    ctx, tab, project, _ = studio
    msg = trigger(tab, "lora_studio_compare_auto", "input", "demo", True)[0]
    assert "when its training ends" in msg
    assert open_project(ctx.root, "demo").load_file().section("compare") == {"auto_after_training": True}
    assert auto_compare_enabled(project)
    # A project change shows the project's option (and drops the previous project's prompt).
    out = by_id(compare_handler(tab, "lora_studio_project", "change")("demo", *form(prompt="old"), 64, 64))
    assert out["lora_studio_compare_auto"] is True and out["lora_studio_compare_prompt"] == "lsdemo, large, blue background, <lora:demo-01:0.5>"
    trigger(tab, "lora_studio_compare_auto", "input", "demo", False)
    assert not auto_compare_enabled(project)


def test_errors_are_plain_sentences(studio):
    ctx, tab, project, _ = studio
    render = "lora_studio_compare_render"

    # The negative prompt holds every form of the search strings: no S/R axis can be exact.
    _, msg, _ = trigger(tab, render, "click", "demo", *form(negative="<lora:demo-01:1>"))
    assert "No Prompt S/R search strings change only this run's LoRA tag" in plain_error(msg)
    # A missing epoch, a bad weight.
    assert "Epoch(s) 7 not found" in plain_error(trigger(tab, render, "click", "demo", *form(epochs="1,7"))[1])
    assert "'x' is not a number" in plain_error(trigger(tab, render, "click", "demo", *form(weights="0.5, x"))[1])

    # No epochs saved yet.
    create_project(ctx.root, "empty")
    assert "holds no LoRA epoch files" in plain_error(trigger(tab, render, "click", "empty", *form())[1])
    with pytest.raises(StudioError, match="holds no LoRA epoch files"):
        start_compare_for_project(ctx, "empty")

    # Epochs but no checkpoint (no [train] checkpoint, no demo model).
    other = create_project(ctx.root, "nockpt")
    shutil.copy(project.output_dir / "demo-01.safetensors", other.output_dir / "nockpt-01.safetensors")
    assert "No checkpoint to render the grid with" in plain_error(trigger(tab, render, "click", "nockpt", *form())[1])
    typed = form(checkpoint=str(other.dir / "missing.safetensors"))
    assert "missing.safetensors does not exist" in plain_error(trigger(tab, render, "click", "nockpt", *typed)[1])
    # The refresh still lists the files, and says why a grid can not be rendered yet.
    found = views(tab, "nockpt", *form(), 64, 64)["lora_studio_compare_found"]
    assert "nockpt-01" in found and "No checkpoint" in found


# ----------------------------------------------------------------------------------------------
# Through gradio's own pre/post-processing (what the browser gets), in both versions


def compare_fn_index(blocks, elem_id: str, event: str):
    target = component(blocks, elem_id)._id
    if isinstance(blocks.fns, dict):  # gradio 4
        items = [(k, f, (target, event) in [tuple(t) for t in f.targets]) for k, f in blocks.fns.items()]
    else:  # gradio 3
        items = [(i, f, dep["trigger"] == event and target in dep["targets"])
                 for i, (dep, f) in enumerate(zip(blocks.dependencies, blocks.fns))]
    return next(k for k, f, hit in items if hit and isinstance(getattr(f.fn, "__self__", None), CompareTab))


def test_grid_and_cells_through_gradio_processing(studio):
    import asyncio

    ctx, tab, _, _ = studio
    job_id = start_compare_for_project(ctx, "demo", settings=GridSettings(weights=(1.0,), steps=2, width=64, height=64))
    assert ctx.jobs.get(job_id).wait(60)
    try:
        from gradio.state_holder import SessionState  # gradio 4

        state = SessionState(tab)
    except ImportError:
        state = {}
    index = compare_fn_index(tab, "lora_studio_progress", "change")
    out = asyncio.run(tab.process_api(index, [job_id, "demo", ""], state))["data"]
    _, _, outputs = next(h for h in handlers(tab, "lora_studio_progress", "change") if isinstance(h[0].__self__, CompareTab))
    got = {c.elem_id: v for c, v in zip(outputs, out)}
    image, cells = got["lora_studio_compare_image"], got["lora_studio_compare_cells"]
    image = image.get("value", image) if isinstance(image, dict) and "value" in image else image
    cells = cells.get("value", cells) if isinstance(cells, dict) and "value" in cells else cells
    # gradio 3 sends the grid inline (data URL), gradio 4 a copy in its cache; never our own path.
    served = image if isinstance(image, str) else (image.get("path") or image.get("url"))
    assert served and str(ctx.root) not in served
    assert len(cells) == 2
    captions = [c["caption"] if isinstance(c, dict) else c[1] for c in cells]
    assert captions == ["demo-01 / 1", "demo-02 / 1"]
