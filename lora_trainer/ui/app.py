"""The LoRA Studio tab: a project picker, the Dataset / Train / Compare sub-tabs, one job panel.

`build_tab(ctx)` is the one function that builds it, for the WebUI (scripts/lora_studio.py) and
the standalone app (ui/standalone.py) alike. Callbacks return at once: anything long starts a job.
"""

from __future__ import annotations

import gradio as gr

from ..errors import StudioError
from ..project import create_project, list_projects, open_project
from . import compare as compare_tab
from . import dataset as dataset_tab
from . import train as train_tab
from .compat import on, update
from .context import StudioContext
from .job_panel import build_job_panel


def error_html(e: Exception) -> str:
    """A StudioError as a sentence for the UI (never a traceback)."""
    import html

    return f'<div class="ls-error">{html.escape(str(e))}</div>'


def info_html(text: str) -> str:
    import html

    return f'<div class="ls-info">{html.escape(text)}</div>'


LAST_PROJECT_KEY = "last_project"  # in StudioContext.extra: the project last picked or created


def project_choices(ctx: StudioContext) -> list[str]:
    return list_projects(ctx.root)


def build_tab(ctx: StudioContext) -> gr.Blocks:
    # The #lora_studio element that style.css scopes its rules to is this Column: an elem_id on a
    # Blocks rendered inside another page (the WebUI's tab, the standalone page) is not in the page.
    with gr.Blocks(analytics_enabled=False) as tab, gr.Column(elem_id="lora_studio"):
        # 1. Project picker: everything below works on the chosen project.
        with gr.Row(elem_id="lora_studio_project_row"):
            choices = project_choices(ctx)
            project = gr.Dropdown(
                choices=choices,
                value=choices[0] if choices else None,
                label="Project",
                info=f"Projects in {ctx.root}",
                elem_id="lora_studio_project",
                scale=3,
            )
            refresh = gr.Button("🔄", elem_id="lora_studio_refresh", scale=0, min_width=40)
            new_name = gr.Textbox(label="New project", placeholder="name or category/name", elem_id="lora_studio_new_name", scale=2)
            create = gr.Button("Create", elem_id="lora_studio_create", scale=0, min_width=80)
        message = gr.HTML(elem_id="lora_studio_message")

        # 2. The three steps of the guide.
        with gr.Tabs(elem_id="lora_studio_tabs"):
            with gr.Tab("Dataset", id="dataset", elem_id="lora_studio_dataset_tab"):
                dataset = dataset_tab.build(ctx, project)
            with gr.Tab("Train", id="train", elem_id="lora_studio_train_tab"):
                train = train_tab.build(ctx, project)
            with gr.Tab("Compare", id="compare", elem_id="lora_studio_compare_tab"):
                compare = compare_tab.build(ctx, project)

        # 3. One job panel for every long operation.
        panel = build_job_panel(ctx)
        dataset.connect(panel)
        train.connect(panel)
        compare.connect(panel)

        def do_refresh(current: str | None):
            # Also what a page (re)load asks (lora_studio.js): the picker then shows the project
            # last chosen on this server rather than the one there was when the tab was built.
            names = project_choices(ctx)
            last = ctx.extra.get(LAST_PROJECT_KEY)
            value = current if current in names else last if last in names else (names[0] if names else None)
            return update(choices=names, value=value)

        def do_create(name: str):
            try:
                p = create_project(ctx.root, name)
            except StudioError as e:
                return update(), error_html(e), name
            ctx.extra[LAST_PROJECT_KEY] = p.name
            return update(choices=project_choices(ctx), value=p.name), info_html(f"Created {p.name} in {p.dir}."), ""

        def do_select(name: str | None):
            if not name:
                return ""
            try:
                p = open_project(ctx.root, name)
            except StudioError as e:
                return error_html(e)
            ctx.extra[LAST_PROJECT_KEY] = p.name
            return info_html(f"{p.name}: {p.dir}")

        on(refresh.click, do_refresh, [project], [project])
        on(create.click, do_create, [new_name], [project, message, new_name])
        on(new_name.submit, do_create, [new_name], [project, message, new_name])
        on(project.change, do_select, [project], [message])
    return tab
