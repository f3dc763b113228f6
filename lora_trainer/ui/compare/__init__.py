"""The Compare sub-tab: a grid of a run's saved epochs x LoRA weights, and its X/Y/Z plot twin.

The grid is a GPU job shown in the tab's one job panel; when the panel sees a grid job finish,
`CompareTab.job_finished` shows the PNG and its cells (the gallery enlarges a cell on click).
`start_compare_for_project` is the one-click grid the Train tab's button calls;
`auto_compare_enabled` says whether the Train tab should start it when a training ends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ...compare.plan import make_plan
from ...errors import StudioError
from ...host.base import default_generation
from ...jobs import Job, JobStatus
from ...network.epochs import find_epoch_files
from ..compat import QUIET, on, update
from ..context import SEND_TO_TXT2IMG_KEY, StudioContext
from ..dataset.common import error_message, guarded, message, project_of
from .runs import (
    GRID_JOB_KIND,
    CompareForm,
    GridJobResult,
    auto_compare_enabled,
    cell_infotext,
    default_lora_dir,
    describe_run,
    export_defaults,
    grid_cells,
    host_for,
    keep_tokens_of,
    latest_grid,
    lora_dir_of,
    model_defaults,
    plan_from_form,
    run_stem,
    set_auto_compare,
    start_compare_for_project,
    start_grid_job,
)

__all__ = [
    "CompareTab",
    "auto_compare_enabled",
    "build",
    "start_compare_for_project",
]

SAMPLER_CHOICES = ["DPM++ 2M", "Euler a", "Euler"]  # what both hosts know; others can be typed
SCHEDULER_CHOICES = ["Karras", "Exponential", "Uniform", "Automatic"]
ARCH_SIZES = {(512, 512), (1024, 1024)}  # a size still at an architecture's default follows the model


def _size_for(width, height, defaults) -> tuple:
    """New (width, height) values: the model's default unless the user chose another size."""
    try:
        current = (int(width), int(height))
    except (TypeError, ValueError):
        current = None
    if current is None or current in ARCH_SIZES:
        return defaults.width, defaults.height
    return update(), update()


@dataclass
class CompareTab:
    ctx: StudioContext
    project: gr.Dropdown
    form: list  # the CompareForm fields' components, in its field order
    found: gr.HTML  # the run's saved files, or why there are none
    prompt: gr.Textbox
    width: gr.Number
    height: gr.Number
    checkpoint: gr.Textbox
    auto: gr.Checkbox
    refresh: gr.Button
    render: gr.Button
    export: gr.Button
    message: gr.HTML
    image: gr.Image
    gallery: gr.Gallery
    export_text: gr.Textbox
    seen: gr.Textbox  # the last finished grid job shown (hidden)
    shown: gr.Textbox  # the path of the grid PNG shown (hidden): a clicked cell is looked up in its plan
    cell_params: gr.Textbox  # the clicked cell's WebUI parameters (what "Send to txt2img" pastes)

    def connect(self, panel) -> None:
        on(self.render.click, self.start_render, [self.project, *self.form], [panel.job_id, self.message, self.export_text])
        outputs = [self.seen, self.image, self.gallery, self.message, self.shown, self.cell_params]
        # Runs on every poll that changes the progress bar: silent, and cheap until a grid finishes.
        on(panel.progress.change, self.job_finished, [panel.job_id, self.project, self.seen], outputs, show_progress=QUIET)

    # -- callbacks

    @guarded(3, message_at=1)
    def start_render(self, name, *values):
        project = project_of(self.ctx, name)
        form = CompareForm(*values)
        lora_dir = lora_dir_of(self.ctx, project, form.lora_dir)
        find_epoch_files(lora_dir, run_stem(project, lora_dir, form.run))  # "no epochs yet" before "no checkpoint"
        host = host_for(self.ctx, project, lora_dir, form.checkpoint)
        plan = plan_from_form(self.ctx, project, form, host.default_generation())
        job_id = start_grid_job(self.ctx, project, host, plan)
        rows, cols = plan.shape
        text = f"Rendering a {rows}x{cols} grid of {plan.stem} ({', '.join(e.label for e in plan.epochs)})."
        return job_id, message(text + "".join(f"\n{n}" for n in plan.notes)), plan.xyz_script_text()

    @guarded(2, message_at=1)
    def do_export(self, name, *values):
        project = project_of(self.ctx, name)
        form = CompareForm(*values)
        plan = plan_from_form(self.ctx, project, form, export_defaults(self.ctx, project, form))
        return plan.xyz_script_text(), message("Paste these into txt2img's Script: X/Y/Z plot (Prompt S/R axes).")

    def on_cell(self, png: str, evt: gr.SelectData) -> str:
        """A clicked cell: its parameters, to copy or to send to txt2img."""
        index = evt.index if isinstance(evt.index, int) else None
        if not png or index is None:
            return ""
        try:
            return cell_infotext(Path(png), index)
        except StudioError as e:
            return f"{e.message} {e.fix}".strip()

    def views(self, name: str | None, form: CompareForm, width, height) -> dict:
        """The run's files, the default prompt when none is typed, sizes for the model, the latest grid."""
        out: dict = {}
        try:
            project = project_of(self.ctx, name)
            lora_dir = lora_dir_of(self.ctx, project, form.lora_dir)
            stem = run_stem(project, lora_dir, form.run)
            out[self.found] = message(describe_run(lora_dir, stem))
        except StudioError as e:
            return {**out, self.found: error_message(e), self.image: None, self.gallery: [], self.shown: "",
                    self.cell_params: ""}
        try:
            defaults = model_defaults(self.ctx, project, form.checkpoint)
            out[self.width], out[self.height] = _size_for(width, height, defaults)
        except StudioError as e:  # no checkpoint yet: the files are listed, rendering will say why
            defaults = default_generation("sd15")
            out[self.found] += error_message(e)
        if not (form.prompt or "").strip():
            try:
                settings = form.settings()
                plan = make_plan(lora_dir, settings, defaults, stem=stem, dataset_dir=project.dataset_dir,
                                 keep_tokens=keep_tokens_of(project))
                out[self.prompt] = plan.base.prompt
            except StudioError as e:
                out[self.found] += error_message(e)
        png = latest_grid(project)
        out[self.image] = str(png) if png else None
        out[self.gallery] = grid_cells(png) if png else []
        out[self.shown], out[self.cell_params] = str(png) if png else "", ""
        return out

    def on_refresh(self, name, *values_and_size) -> dict:
        *values, width, height = values_and_size
        return self.views(name, CompareForm(*values), width, height)

    def on_project(self, name, *values_and_size) -> dict:
        """Another project: its own folder, prompt and latest grid; the previous one's are cleared."""
        *values, width, height = values_and_size
        form = dataclasses.replace(CompareForm(*values), prompt="", lora_dir="", run="")
        out = {self.prompt: "", self.form[0]: "", self.form[1]: "", self.message: "", self.export_text: "",
               self.auto: self.auto_value(name)}
        return {**out, **self.views(name, form, width, height)}

    def auto_value(self, name: str | None) -> bool:
        try:
            return auto_compare_enabled(project_of(self.ctx, name))
        except StudioError:  # no project: views() says why
            return False

    def on_auto(self, name, enabled):
        try:
            project = project_of(self.ctx, name)
            set_auto_compare(project, bool(enabled))
        except StudioError as e:
            return error_message(e)
        if enabled:
            return message(f"A grid of {project.name}'s saved epochs will be rendered when its training ends.", "ok")
        return message("No grid is rendered after training.")

    def job_finished(self, job_id: str, name: str | None, seen: str) -> dict:
        """Show a finished grid job's PNG once (also one the Train tab started), if it is of this project."""
        job: Job | None = self.ctx.jobs.get(job_id) if job_id else None
        if job is None or job.kind != GRID_JOB_KIND or not job.status.finished or job.id == seen:
            return {self.seen: seen}
        out = {self.seen: job.id}
        if job.status == JobStatus.ERROR:
            return {**out, self.message: message(job.error, "error")}
        if job.status == JobStatus.CANCELLED:
            return {**out, self.message: message("The grid was cancelled; no file was written.")}
        r = job.result
        try:
            project = project_of(self.ctx, name)
        except StudioError:
            return out
        if not isinstance(r, GridJobResult) or project.dir.resolve() not in r.png.resolve().parents:
            return out
        (w, h), (rows, cols) = r.size, r.shape
        text = f"Wrote {r.png} ({w}x{h} px, {rows}x{cols} images). Click a cell below to enlarge it and see its parameters."
        return {**out, self.image: str(r.png), self.gallery: grid_cells(r.png), self.message: message(text, "ok"),
                self.shown: str(r.png), self.cell_params: ""}


def _first_views(ctx: StudioContext, name: str | None) -> tuple[str, bool, str | None]:
    """(files found, auto option, latest grid) of the project shown when the tab is built."""
    try:
        project = project_of(ctx, name)
        png = latest_grid(project)
        auto = auto_compare_enabled(project)
        lora_dir = default_lora_dir(ctx, project)
        return message(describe_run(lora_dir, run_stem(project, lora_dir))), auto, str(png) if png else None
    except StudioError as e:  # a new project has no epochs yet: not an error
        return message(str(e)), False, None


def build(ctx: StudioContext, project: gr.Dropdown) -> CompareTab:
    d = default_generation("sd15")
    form_defaults = CompareForm()
    found0, auto0, png0 = _first_views(ctx, project.value)
    gr.Markdown(
        "Render every saved epoch of a run at several LoRA weights side by side, with one fixed seed, to pick "
        "the best epoch and weight. The prompts are the WebUI's Prompt S/R on `<lora:NAME-NN:W>`, so the "
        "X/Y/Z plot settings below make the same grid in txt2img."
    )
    with gr.Row():
        where = "the project's folder in the WebUI's Lora folder" if ctx.host is not None else "the project's output folder"
        lora_dir = gr.Textbox(label="LoRA folder", placeholder=where, scale=3,
                              elem_id="lora_studio_compare_lora_dir")
        run = gr.Textbox(label="Run", placeholder="the project's name", scale=1, elem_id="lora_studio_compare_run",
                         info="NAME of NAME-01.safetensors")
        checkpoint = gr.Textbox(label="Checkpoint", scale=3, visible=ctx.host is None, elem_id="lora_studio_compare_checkpoint",
                                placeholder="the project's training checkpoint",
                                info="SD1.5 or SDXL .safetensors the grid is rendered with")
    with gr.Row():
        epochs = gr.Textbox(value=form_defaults.epochs, label="Epochs", scale=3, elem_id="lora_studio_compare_epochs",
                            info="all, every:K (multiples of K), or a list like 1,3,5 or 2,final")
        weights = gr.Textbox(value=form_defaults.weights, label="LoRA weights", scale=3, elem_id="lora_studio_compare_weights")
        refresh = gr.Button("🔄 Find epochs", scale=0, min_width=140, elem_id="lora_studio_compare_refresh")
    found = gr.HTML(found0, elem_id="lora_studio_compare_found")
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="lora_studio_compare_prompt",
                        placeholder="empty: the activation tag and the dataset's most common tags; the run's <lora:...> tag is added")
    negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="lora_studio_compare_negative")
    with gr.Row():
        seeds = gr.Textbox(value=form_defaults.seeds, label="Seeds", elem_id="lora_studio_compare_seeds",
                           info="one row per epoch and seed")
        sampler = gr.Dropdown(choices=SAMPLER_CHOICES, value=d.sampler_name, label="Sampler", allow_custom_value=True,
                              elem_id="lora_studio_compare_sampler")
        scheduler = gr.Dropdown(choices=SCHEDULER_CHOICES, value=d.scheduler, label="Schedule type", allow_custom_value=True,
                                elem_id="lora_studio_compare_scheduler")
        steps = gr.Number(value=d.steps, label="Steps", precision=0, elem_id="lora_studio_compare_steps")
        cfg = gr.Number(value=d.cfg_scale, label="CFG scale", elem_id="lora_studio_compare_cfg")
        width = gr.Number(value=d.width, label="Width", precision=0, elem_id="lora_studio_compare_width")
        height = gr.Number(value=d.height, label="Height", precision=0, elem_id="lora_studio_compare_height")
    with gr.Row():
        no_lora = gr.Checkbox(value=False, label="\"no LoRA\" column", elem_id="lora_studio_compare_no_lora")
        swap = gr.Checkbox(value=False, label="Swap axes (rows = weights)", elem_id="lora_studio_compare_swap")
        auto = gr.Checkbox(value=auto0, label="Render this grid when a training ends", elem_id="lora_studio_compare_auto")
    with gr.Row():
        render = gr.Button("Render grid", variant="primary", elem_id="lora_studio_compare_render")
        export = gr.Button("Export X/Y/Z settings", elem_id="lora_studio_compare_export")
    msg = gr.HTML(elem_id="lora_studio_compare_message")
    image = gr.Image(value=png0, label="Grid", interactive=False, elem_id="lora_studio_compare_image")
    gallery = gr.Gallery(label="Cells (click to enlarge)", columns=6, object_fit="contain", height="auto",
                         elem_id="lora_studio_compare_cells")
    with gr.Row():
        cell_params = gr.Textbox(label="The clicked cell's parameters", lines=3, interactive=False, scale=4,
                                 placeholder="click a cell: its prompt with that epoch and weight, seed, steps, sampler, size",
                                 elem_id="lora_studio_compare_cell_params")
        send = ctx.extra.get(SEND_TO_TXT2IMG_KEY)
        if send is not None:  # inside the WebUI: its own button, which pastes these into txt2img
            with gr.Column(scale=1, min_width=160):
                send(cell_params)
    shown = gr.Textbox(value=png0 or "", visible=False, elem_id="lora_studio_compare_shown")
    with gr.Accordion("X/Y/Z plot settings", open=False):
        export_text = gr.Textbox(show_label=False, lines=8, interactive=False, elem_id="lora_studio_compare_xyz")
    seen = gr.Textbox(value="", visible=False, elem_id="lora_studio_compare_seen")

    # The order of CompareForm's fields.
    form = [lora_dir, run, epochs, weights, prompt, negative, seeds, sampler, scheduler, steps, cfg, width, height,
            no_lora, swap, checkpoint]
    tab = CompareTab(ctx, project, form, found, prompt, width, height, checkpoint, auto, refresh, render, export, msg,
                     image, gallery, export_text, seen, shown, cell_params)

    view_outputs = [found, prompt, width, height, image, gallery, shown, cell_params]
    on(refresh.click, tab.on_refresh, [project, *form, width, height], view_outputs)
    on(project.change, tab.on_project, [project, *form, width, height], [*view_outputs, lora_dir, run, msg, export_text, auto])
    on(export.click, tab.do_export, [project, *form], [export_text, msg])
    on(gallery.select, tab.on_cell, [shown], [cell_params])
    # `input`: the user's clicks only, not the value a project change puts there.
    on(auto.input, tab.on_auto, [project, auto], [msg])
    return tab
