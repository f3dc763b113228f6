"""The Train sub-tab: the guide's trainer form, a live step preview, and the run's progress.

Left: the settings in the guide's sections (Setup, Processing, Steps, Learning, Structure,
Samples), expert options folded away; the form is generated from form.SETTINGS. Right: Check /
Save / Reload, the step preview with problems as sentences, Start / Resume / Stop, and the run:
a one-line summary, the loss and learning-rate chart, the saved epoch files and the samples.

The run view refreshes when javascript/train.js clicks a hidden poll button (every 2 s while the
Train tab is shown) and when the project changes; it re-renders only when the run changed, so an
idle tab costs a listing of the output folder. A reloaded page finds the project's running job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gradio as gr

from ...errors import StudioError
from ...network.epochs import saved_epochs
from ...train import presets
from ..compat import QUIET, on, update
from ..context import StudioContext
from . import session, view
from .form import (
    SECTIONS,
    SETTINGS,
    Setting,
    arch_preset,
    config_from_values,
    form_values,
    to_ui,
)

__all__ = ["TrainTab", "build"]

_ROW = 3  # settings per row inside a section


def _component(setting: Setting, value, visible: bool = True):
    common = {"label": setting.label, "info": setting.info, "elem_id": setting.elem_id, "visible": visible}
    kind = setting.kind
    if kind == "checkbox":
        return gr.Checkbox(value=value, **common)
    if kind in ("dropdown", "tristate"):
        return gr.Dropdown(choices=list(setting.choices), value=value, **common)
    if kind == "slider":
        return gr.Slider(setting.minimum, setting.maximum, value=value, step=setting.step, **common)
    if kind == "number":
        whole = isinstance(value, int) and not isinstance(value, bool)
        return gr.Number(value=value, precision=0 if whole else None, **common)
    if kind == "lines":
        return gr.Textbox(value=value, lines=3, max_lines=12, **common)
    return gr.Textbox(value=value, lines=1, **common)  # text, args


def _rows(settings: list[Setting], values: dict, hidden: set[str]) -> dict:
    made = {}
    for i in range(0, len(settings), _ROW):
        with gr.Row():
            for s in settings[i:i + _ROW]:
                made[s.name] = _component(s, values[s.name], visible=s.name not in hidden)
    return made


def build_form(config, hidden: set[str]) -> tuple[list, gr.Markdown]:
    """The components of every setting, in SETTINGS order, inside the guide's sections."""
    values = {s.name: to_ui(s, config) for s in SETTINGS}
    made: dict = {}
    note = None
    for i, section in enumerate(s for s in SECTIONS if any(x.section == s and not x.expert for x in SETTINGS)):
        with gr.Accordion(f"{i + 1}. {section}", open=section != "Samples"):
            if section == "Setup":
                note = gr.Markdown("", elem_id="lora_studio_train_model_note")
            made.update(_rows([s for s in SETTINGS if s.section == section and not s.expert], values, hidden))
    with gr.Accordion("Expert settings", open=False, elem_id="lora_studio_train_expert"):
        gr.Markdown("Settings the guide fixes or leaves out. Their defaults are the guide's.")
        for section in SECTIONS:
            expert = [s for s in SETTINGS if s.section == section and s.expert]
            if expert:
                gr.Markdown(f"**{section}**")
                made.update(_rows(expert, values, hidden))
    return [made[s.name] for s in SETTINGS], note


def model_note(ctx: StudioContext) -> str:
    """Setup's line on the model: inside the WebUI, the one it has loaded."""
    if ctx.host is None:
        return ""
    arch = session.host_arch(ctx)
    title = getattr(ctx.host, "model_title", None)  # optional: hosts that can name their checkpoint
    which = f"**{title()}**" if callable(title) else "the model the WebUI has loaded"
    family = {"sd15": "SD1.5", "sdxl": "SDXL"}.get(arch or "", "unknown family")
    return f"Training uses {which} ({family}). Pick another in the WebUI's checkpoint list, then press Reload."


_LOG_NAME = re.compile(r"-\d{8}-\d{6}\.csv")


def last_log_history(project) -> list[dict]:
    """The newest loss log of the project under `<root>/_logs/` (a run from before a restart)."""
    from ...train.logs import read_log

    prefix = project.name.replace("/", "_")
    logs = sorted(p for p in project.logs_dir.glob(f"{prefix}-*.csv") if _LOG_NAME.fullmatch(p.name[len(prefix):]))
    if not logs:
        return []
    try:
        return view.history_from_rows(read_log(logs[-1]))
    except OSError:
        return []


@dataclass
class TrainTab:
    ctx: StudioContext
    project: gr.Dropdown
    form: list  # one component per form.SETTINGS row
    model_note: gr.Markdown
    check_button: gr.Button
    save_button: gr.Button
    load_button: gr.Button
    preview: gr.HTML
    problems: gr.HTML
    start_button: gr.Button
    resume_button: gr.Button
    stop_button: gr.Button
    message: gr.HTML
    summary: gr.HTML
    chart: gr.Image
    refresh_button: gr.Button
    epochs: gr.HTML
    samples: gr.Gallery
    job: gr.Textbox  # the training job this page shows (hidden)
    seen: gr.Textbox  # what the run view last showed, to skip unchanged refreshes (hidden)
    poll: gr.Button  # clicked by javascript/train.js (hidden)
    compare_button: gr.Button  # the one-click epochs x weights grid (Compare tab's defaults)

    @property
    def view_outputs(self) -> list:
        return [self.job, self.seen, self.summary, self.chart, self.epochs, self.samples]

    @property
    def load_outputs(self) -> list:
        return [*self.form, self.model_note, self.preview, self.problems, self.message]

    def component(self, name: str):
        return self.form[[s.name for s in SETTINGS].index(name)]

    # ---- wiring

    def wire(self) -> None:
        form, checked = [self.project, *self.form], [self.preview, self.problems]
        on(self.check_button.click, self.do_check, form, checked)
        on(self.save_button.click, self.do_save, form, [self.message, *checked])
        on(self.load_button.click, self.do_load, [self.project], self.load_outputs)
        on(self.project.change, self.do_load, [self.project], self.load_outputs)
        on(self.project.change, self.do_refresh, [self.project, self.job, self.seen], self.view_outputs, show_progress=QUIET)
        for name, fn in (("arch", self.do_arch), ("optimizer", self.do_optimizer), ("network_type", self.do_network)):
            on(self.component(name).input, fn, form, self.form).then(self.do_check, form, checked, show_progress=QUIET)
        for button in (self.refresh_button, self.poll):
            on(button.click, self.do_refresh, [self.project, self.job, self.seen], self.view_outputs, show_progress=QUIET)
        on(self.stop_button.click, self.do_stop, [self.job, self.project], [self.message])

    def connect(self, panel) -> None:
        """Start and Resume put the job into the shared job panel too (its Cancel stops the run)."""
        outputs = [panel.job_id, self.job, self.message, self.preview, self.problems]
        on(self.start_button.click, self.do_start, [self.project, *self.form], outputs)
        on(self.resume_button.click, self.do_resume, [self.project, *self.form], outputs)
        on(self.compare_button.click, self.do_compare, [self.project], [panel.job_id, self.message])

    def do_compare(self, name):
        """Render the grid of the epochs saved so far (also while training runs: it queues behind)."""
        from ..compare.runs import start_compare_for_project

        try:
            job_id = start_compare_for_project(self.ctx, name)
        except StudioError as e:
            return update(), view.lines_html([str(e)], "ls-error")
        return job_id, view.lines_html(["Rendering the grid of the saved epochs; it appears in the Compare tab."], "ls-ok")

    # ---- callbacks

    def _config(self, project, values):
        arch = values[[s.name for s in SETTINGS].index("arch")]
        return config_from_values(session.base_config(self.ctx, project, arch), values)

    def do_check(self, name, *values):
        try:
            project = session.project_of(self.ctx, name)
            config = self._config(project, values)
        except StudioError as e:
            return "", view.problems_html([str(e)], [])
        result = session.check(self.ctx, project, config)
        return view.lines_html(result.preview), view.problems_html(result.errors, result.warnings)

    def do_save(self, name, *values):
        try:
            project = session.project_of(self.ctx, name)
            config = self._config(project, values)
            replaced = session.save_config(project, config)
        except StudioError as e:
            return view.lines_html([str(e)], "ls-error"), update(), update()
        preview, problems = self.do_check(name, *values)
        said = [f"Saved the settings to {project.toml_path}."]
        if replaced:
            said.append("Its old [train] section could not be read; a copy of the old file is in the project's trash.")
        return view.lines_html(said, "ls-ok"), preview, problems

    def do_load(self, name):
        keep = [update() for _ in self.form]
        try:
            project = session.project_of(self.ctx, name)
            config, had = session.saved_config(self.ctx, project)
        except StudioError as e:
            return [*keep, model_note(self.ctx), "", "", view.lines_html([str(e)], "ls-error")]
        if had:
            said = f"Settings from {project.toml_path}."
        else:
            config = session.fresh_config(project, config)
            said = "No saved settings yet: the guide's defaults, with repeats suggested for the dataset. Save keeps them."
        result = session.check(self.ctx, project, config)
        return [*form_values(config), model_note(self.ctx), view.lines_html(result.preview),
                view.problems_html(result.errors, result.warnings), view.lines_html([said], "ls-info")]

    def _changed(self, name, values, change) -> list:
        """Apply `change(project, config) -> config` to the form; fields that did not change stay."""
        try:
            project = session.project_of(self.ctx, name)
            old = self._config(project, values)
        except StudioError:
            return [update() for _ in self.form]
        new = form_values(change(project, old))
        return [n if n != o else update() for n, o in zip(new, form_values(old))]

    def do_arch(self, name, *values):
        """The family's preset, repeats suggested for the dataset."""
        arch = values[[s.name for s in SETTINGS].index("arch")]
        return self._changed(name, values, lambda p, c: session.with_suggested_repeats(p, arch_preset(arch, c)))

    def do_optimizer(self, name, *values):
        """The guide's values for the optimizer (its args; for Prodigy/DAdaptation the LR too)."""
        return self._changed(name, values, lambda p, c: presets.with_optimizer(c, c.optimizer))

    def do_network(self, name, *values):
        """The guide's dim/alpha (and conv) for LoRA or LoCon in this family."""
        return self._changed(name, values, lambda p, c: presets.with_network_type(c, c.network_type))

    def _start(self, name, values, resume: bool):
        try:
            project = session.project_of(self.ctx, name)
            config = self._config(project, values)
            job = session.start(self.ctx, project, config, resume=resume)
        except StudioError as e:
            return update(), update(), view.lines_html(str(e).splitlines(), "ls-error"), update(), update()
        result = session.check(self.ctx, project, config)
        said = f"{job.title}: started. Its progress shows below and in the job panel at the bottom of the tab."
        return (job.id, job.id, view.lines_html([said], "ls-info"), view.lines_html(result.preview),
                view.problems_html(result.errors, result.warnings))

    def do_start(self, name, *values):
        return self._start(name, values, resume=False)

    def do_resume(self, name, *values):
        return self._start(name, values, resume=True)

    def do_stop(self, job_id, name):
        return view.lines_html([session.stop(self.ctx, job_id, name)], "ls-info")

    def do_refresh(self, name, job_id, seen):
        """The run view of project `name`. The chart, files and samples are sent again only when the
        run or the files changed (`seen` is what was last sent); the summary line always."""
        try:
            project = session.project_of(self.ctx, name)
        except StudioError:
            return "", "", "", None, "", []
        job = session.job_of(self.ctx, job_id, name)
        files = session.runs(self.ctx).get(job.id) if job is not None else None
        if files is None:
            try:
                config, _ = session.saved_config(self.ctx, project)
                files = session.run_files(self.ctx, project, session.resolve_paths(self.ctx, project, config))
            except StudioError:
                files = session.TrainRun(project.name, project.output_dir, project.file_stem, project.output_dir / "samples")
        epochs = saved_epochs(files.output_dir, files.stem)
        samples = view.sample_files(files.samples_dir, files.stem)
        stamp = []
        for p in epochs.values():
            try:
                stamp.append(f"{p.name}:{p.stat().st_mtime_ns}")
            except OSError:
                stamp.append(p.name)
        signature = "|".join([name, job.id if job else "", job.status.value if job else "",
                              str(len(job.history)) if job else "", ";".join(stamp), str(len(samples))])
        job_value = job.id if job is not None else ""
        summary = view.summary_html(view.summary_line(job), job.status if job else None)  # small: always sent
        if signature == seen:
            return job_value, seen, summary, update(), update(), update()
        history = list(job.history) if job is not None else last_log_history(project)
        return (job_value, signature, summary, view.loss_chart(history), view.epochs_html(epochs, files.output_dir),
                view.gallery_value(samples))


def _initial_config(ctx: StudioContext, name: str | None):
    """The form's first values: the project's saved settings, else the guide's defaults (the
    dataset is scanned only when the tab is first shown: train.js presses Reload once)."""
    from ...train.config import TrainConfig

    try:
        return session.saved_config(ctx, session.project_of(ctx, name))[0]
    except StudioError:
        return TrainConfig.defaults_for(session.host_arch(ctx) or "sd15")


def build(ctx: StudioContext, project: gr.Dropdown) -> TrainTab:
    config = _initial_config(ctx, project.value)
    hidden = {"checkpoint"} if ctx.host is not None else set()  # inside the WebUI: the loaded model
    with gr.Row(elem_id="lora_studio_train"):
        with gr.Column(scale=3, min_width=420):
            form, note = build_form(config, hidden)
        with gr.Column(scale=2, min_width=320):
            with gr.Row():
                check_button = gr.Button("Check", elem_id="lora_studio_train_check", scale=1)
                save_button = gr.Button("Save settings", elem_id="lora_studio_train_save", scale=1)
                load_button = gr.Button("Reload", elem_id="lora_studio_train_load", scale=1)
            preview = gr.HTML("", elem_id="lora_studio_train_preview")
            problems = gr.HTML("", elem_id="lora_studio_train_problems")
            with gr.Row():
                start_button = gr.Button("Start training", variant="primary", elem_id="lora_studio_train_start", scale=2)
                resume_button = gr.Button("Resume", elem_id="lora_studio_train_resume", scale=1)
                stop_button = gr.Button("Stop", variant="stop", elem_id="lora_studio_train_stop", scale=1)
                compare_button = gr.Button("Compare epochs", elem_id="lora_studio_train_compare", scale=1)
            message = gr.HTML("", elem_id="lora_studio_train_message")
            with gr.Group(elem_id="lora_studio_train_run"):
                summary = gr.HTML("", elem_id="lora_studio_train_summary")
                chart = gr.Image(label="Loss and learning rate", type="pil", interactive=False,
                                 elem_id="lora_studio_train_chart")
                epochs = gr.HTML("", elem_id="lora_studio_train_epochs")
                refresh_button = gr.Button("🔄 Refresh", elem_id="lora_studio_train_refresh", size="sm")
            samples = gr.Gallery(label="Samples per epoch", columns=4, elem_id="lora_studio_train_samples")
            job = gr.Textbox(value="", visible=False, elem_id="lora_studio_train_job")
            seen = gr.Textbox(value="", visible=False, elem_id="lora_studio_train_seen")
            poll = gr.Button("poll", elem_id="lora_studio_train_poll", elem_classes=["ls-hidden"])
    tab = TrainTab(ctx, project, form, note, check_button, save_button, load_button, preview, problems,
                   start_button, resume_button, stop_button, message, summary, chart, refresh_button, epochs,
                   samples, job, seen, poll, compare_button)
    tab.wire()
    return tab
