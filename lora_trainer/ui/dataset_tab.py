"""The Dataset sub-tab: the first half of the guide (collect, clean, tag, edit)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from ..errors import StudioError
from ..progress import ProgressEvent
from ..project import open_project
from .compat import on
from .context import StudioContext

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def dataset_overview(ctx: StudioContext, name: str | None) -> str:
    """A one-paragraph summary of the project's dataset folder (markdown)."""
    if not name:
        return "Pick or create a project above."
    project = open_project(ctx.root, name)
    files = sorted(p for p in project.dataset_dir.rglob("*") if p.is_file()) if project.dataset_dir.is_dir() else []
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    captioned = sum(1 for p in images if p.with_suffix(".txt").exists())
    return (
        f"**{len(images)} images**, {captioned} with captions, in `{project.dataset_dir}`."
        + ("" if images else " Import a folder or scrape a booru to start.")
    )


@dataclass
class DatasetTab:
    ctx: StudioContext
    project: gr.Dropdown
    overview: gr.Markdown
    check: gr.Button

    def connect(self, panel) -> None:
        """Wire the buttons that start jobs to the shared job panel."""
        on(self.check.click, self.start_check, [self.project], [panel.job_id])

    def start_check(self, name: str | None) -> str:
        """Start a job that counts images and captions (a stand-in until import/tagging land)."""
        if not name:
            return ""
        project = open_project(self.ctx.root, name)

        def work(progress, cancel):
            images = [p for p in sorted(project.dataset_dir.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
            for i, img in enumerate(images, 1):
                cancel.raise_if_cancelled()
                if not img.with_suffix(".txt").exists():
                    progress(ProgressEvent(log=f"{img.name} has no caption file"))
                progress(ProgressEvent(fraction=i / len(images), text=f"checked {i}/{len(images)}"))
                time.sleep(0.01)
            return f"{len(images)} images checked"

        return self.ctx.jobs.submit("dataset", f"Checking {project.name}", work).id


def build(ctx: StudioContext, project: gr.Dropdown) -> DatasetTab:
    overview = gr.Markdown(_safe_overview(ctx, project.value), elem_id="lora_studio_dataset_overview")
    check = gr.Button("Check dataset", elem_id="lora_studio_dataset_check")
    on(project.change, lambda name: _safe_overview(ctx, name), [project], [overview])
    return DatasetTab(ctx, project, overview, check)


def _safe_overview(ctx: StudioContext, name: str | None) -> str:
    try:
        return dataset_overview(ctx, name)
    except StudioError as e:
        return str(e)
