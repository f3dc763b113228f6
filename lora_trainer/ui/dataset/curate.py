"""Step 3 of the Dataset Maker (duplicates) and the trash that makes every removal undoable."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ... import trash
from ...dataset.dedupe import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_CLIP_PRETRAINED,
    DEFAULT_THRESHOLD,
    DedupePlan,
    apply_plan,
    find_duplicates,
    load_clip_embedder,
)
from ...errors import StudioError
from ...jobs import Job
from ..compat import on, update
from ..context import StudioContext
from .common import (
    Refresher,
    error_message,
    guarded,
    looks_like_path,
    message,
    project_of,
    thumbnail,
)

MAX_GRID = 300  # thumbnails in the duplicate grid; larger plans show their first groups only

# ----------------------------------------------------------------------------------------------
# Duplicates


def grid_items(plan: DedupePlan, project) -> tuple[list[tuple[str, str]], list[tuple[int, str]]]:
    """(gallery value, index -> (group, member path)): groups in order, the kept image first."""
    items, where = [], []
    for g, group in enumerate(plan.groups):
        if len(items) + len(group.members) > MAX_GRID:
            break
        kind = "identical" if group.exact else "similar"
        for m in group.members:
            mark = "✓ keep" if m.keep else "✗ remove"
            label = f"{mark} · group {g + 1} ({kind}) · {m.width}×{m.height} · {m.path}"
            items.append((thumbnail(project, plan.dataset_dir / m.path), label))
            where.append((g, m.path))
    return items, where


def plan_summary(plan: DedupePlan, shown: int) -> str:
    text = plan.summary()
    total = sum(len(g.members) for g in plan.groups)
    if shown < total:
        text += f" The grid shows the first {shown} images; the rest keep the largest of each group."
    if plan.failed:
        text += f" {len(plan.failed)} images could not be read: {', '.join(plan.failed[:5])}."
    if plan.groups:
        text += " Click an image to switch it between keep and remove."
    return text


@dataclass
class DuplicatesSection:
    ctx: StudioContext
    project: gr.Dropdown
    threshold: gr.Slider
    exact_only: gr.Checkbox
    model: gr.Textbox
    find: gr.Button
    gallery: gr.Gallery
    plan_job: gr.Textbox  # the find job whose plan the grid shows (hidden)
    click: gr.Textbox  # "<index>:<nonce>" of the clicked thumbnail, set by javascript/dataset.js (hidden)
    toggle_button: gr.Button  # clicked by javascript/dataset.js after setting `click` (hidden)
    apply: gr.Button
    restore: gr.Button
    batch: gr.Textbox  # the trash batch of the last "move removed to trash" (hidden)
    message: gr.HTML
    refresher: Refresher  # the other sections' views, refreshed once files moved

    kinds = ("dedupe",)

    @classmethod
    def build(cls, ctx: StudioContext, project: gr.Dropdown, refresher: Refresher) -> DuplicatesSection:
        gr.Markdown(
            "Find duplicate images: identical files, and near copies by CLIP image similarity. In each group "
            "the largest resolution is kept; click an image to change that. The removed images (and their "
            "captions) go to the trash, and **Restore** brings them back. Run this before tagging."
        )
        with gr.Row():
            threshold = gr.Slider(0.90, 1.0, value=DEFAULT_THRESHOLD, step=0.001, label="Similarity threshold",
                                  info="Above this two images count as duplicates: 0.97-0.99 recommended (default 0.985).",
                                  elem_id="lora_studio_dataset_dedupe_threshold", scale=3)
            exact_only = gr.Checkbox(label="Identical files only", value=False, elem_id="lora_studio_dataset_dedupe_exact",
                                     info="No CLIP model needed.", scale=1)
        with gr.Accordion("CLIP model", open=False):
            model = gr.Textbox(label="open_clip model name or folder", value=DEFAULT_CLIP_MODEL,
                               info=f"{DEFAULT_CLIP_MODEL} ({DEFAULT_CLIP_PRETRAINED}) is downloaded once; a folder with "
                                    "open_clip_config.json works offline.",
                               elem_id="lora_studio_dataset_dedupe_model")
        find = gr.Button("Find duplicates", variant="primary", elem_id="lora_studio_dataset_dedupe_find")
        gallery = gr.Gallery(label="Duplicate groups", columns=6, allow_preview=False, elem_id="lora_studio_dataset_dedupe_gallery")
        with gr.Row():
            apply = gr.Button("Move removed to trash", variant="stop", elem_id="lora_studio_dataset_dedupe_apply")
            restore = gr.Button("Restore", elem_id="lora_studio_dataset_dedupe_restore")
        plan_job = gr.Textbox(value="", visible=False, elem_id="lora_studio_dataset_dedupe_job")
        batch = gr.Textbox(value="", visible=False, elem_id="lora_studio_dataset_dedupe_batch")
        # Not the gallery's own select event: both gradio versions keep the selection when the grid
        # comes back, so a second click on the same image would not fire it. dataset.js reports
        # every click through these two instead (hidden by class, so they stay in the page).
        click = gr.Textbox(value="", elem_id="lora_studio_dataset_dedupe_click", elem_classes=["ls-hidden"], show_label=False)
        toggle_button = gr.Button("toggle", elem_id="lora_studio_dataset_dedupe_toggle", elem_classes=["ls-hidden"])
        msg = gr.HTML(elem_id="lora_studio_dataset_dedupe_message")
        self = cls(ctx, project, threshold, exact_only, model, find, gallery, plan_job, click, toggle_button, apply, restore,
                   batch, msg, refresher)
        on(toggle_button.click, self.toggle, [plan_job, project, click], [gallery, msg])
        return self

    def connect(self, job_id: gr.Textbox) -> None:
        on(self.find.click, self.start_find, [self.project, self.threshold, self.exact_only, self.model], [job_id, self.message])
        on(self.apply.click, self.do_apply, [self.project, self.plan_job],
           [self.gallery, self.plan_job, self.batch, self.message, *self.refresher.outputs])
        on(self.restore.click, self.do_restore, [self.project, self.batch], [self.batch, self.message, *self.refresher.outputs])

    def _model(self, text: str) -> str:
        text = (text or "").strip() or DEFAULT_CLIP_MODEL
        return str(self.ctx.paths.confine(text)) if looks_like_path(text) else text

    @guarded(2)
    def start_find(self, name, threshold, exact_only, model):
        project = project_of(self.ctx, name)
        model = self._model(model)
        threshold = float(threshold)
        models_dir = self.ctx.root / "_models"

        def work(progress, cancel):
            embedder = None
            if not exact_only:
                pretrained = None if Path(model).is_dir() else DEFAULT_CLIP_PRETRAINED
                embedder = load_clip_embedder(model, pretrained, models_dir, progress=progress)
            return find_duplicates(project.dataset_dir, project.cache_dir, threshold, embedder, near=not exact_only,
                                   progress=progress, cancel=cancel)

        job = self.ctx.submit("dedupe", f"Finding duplicates in {project.name}", work, gpu=True)
        return job.id, message("Looking for duplicates…")

    def _plan(self, plan_job: str) -> DedupePlan:
        job = self.ctx.jobs.get(plan_job) if plan_job else None
        if job is None or not isinstance(job.result, DedupePlan):
            raise StudioError("There is no list of duplicates to work on.", "Press Find duplicates first.")
        return job.result

    def finished_outputs(self) -> list:
        return [self.gallery, self.plan_job, self.message]

    def finished(self, job: Job, name: str | None) -> dict:
        if not isinstance(job.result, DedupePlan):
            return {self.message: message(job.error or job.summary, "error" if job.error else "info")}
        try:
            items, _ = grid_items(job.result, project_of(self.ctx, name))
        except StudioError as e:
            return {self.message: error_message(e)}
        return {self.gallery: items, self.plan_job: job.id, self.message: message(plan_summary(job.result, len(items)))}

    def toggle(self, plan_job: str, name: str | None, click: str):
        """Clicking a thumbnail switches it between keep and remove (`click` is "<index>:<nonce>")."""
        try:
            plan = self._plan(plan_job)
            project = project_of(self.ctx, name)
            _, where = grid_items(plan, project)
            index = int((click or "").split(":", 1)[0]) if (click or "").split(":", 1)[0].isdigit() else -1
            if index < 0:
                raise IndexError(click)
            g, path = where[index]
            member = next(m for m in plan.groups[g].members if m.path == path)
            plan.set_keep(g, path, not member.keep)
            items, _ = grid_items(plan, project)
        except (StudioError, IndexError) as e:
            return update(), error_message(e if isinstance(e, StudioError) else StudioError("That image is no longer in the list."))
        return items, message(plan_summary(plan, len(items)))

    def do_apply(self, name, plan_job):
        n_refresh = len(self.refresher.outputs)
        try:
            project = project_of(self.ctx, name)
            plan = self._plan(plan_job)
            batch = apply_plan(project.dir, plan)
        except StudioError as e:
            return (update(), update(), update(), error_message(e), *[update()] * n_refresh)
        if batch is None:
            text, batch_id = "Nothing was marked to remove.", ""
        else:
            n = len(plan.removals())
            text = f"Moved {n} images ({len(batch.files)} files with captions) to the trash. Restore brings them back."
            batch_id = batch.batch_id
        return ([], "", batch_id, message(text, "ok"), *self.refresher.values(name))

    def do_restore(self, name, batch_id):
        n_refresh = len(self.refresher.outputs)
        try:
            project = project_of(self.ctx, name)
            if not batch_id:
                raise StudioError("No duplicates were moved to the trash in this session.",
                                  "Use the Trash section to restore an older batch.")
            trash.restore(project.dir, batch_id)
        except StudioError as e:
            return (update(), error_message(e), *[update()] * n_refresh)
        return ("", message("The removed duplicates are back in the dataset.", "ok"), *self.refresher.values(name))

    def refresh(self, name: str | None) -> dict:
        return {self.gallery: [], self.plan_job: "", self.message: ""}


# ----------------------------------------------------------------------------------------------
# Trash


def batch_label(b: trash.TrashBatch) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(b.created))
    kind = "copies" if b.kept_original else "files"
    cut = " · ⚠ cut short" if not b.complete else ""
    return f"{b.batch_id} · {when} · {b.reason} · {len(b.files)} {kind}{cut}"


def trash_rows(ctx: StudioContext, name: str | None) -> list[str]:
    try:
        project = project_of(ctx, name)
    except StudioError:
        return []
    return [batch_label(b) for b in trash.list_batches(project.dir)]


@dataclass
class TrashSection:
    ctx: StudioContext
    project: gr.Dropdown
    batches: gr.Dropdown
    refresh_button: gr.Button
    restore: gr.Button
    message: gr.HTML
    refresher: Refresher

    kinds = ("import", "scrape", "dedupe", "tag", "caption")

    @classmethod
    def build(cls, ctx: StudioContext, project: gr.Dropdown, refresher: Refresher) -> TrashSection:
        gr.Markdown(
            "Nothing LoRA Studio removes is deleted: removed duplicates, other files, originals of shrunk images "
            "and the captions before each tag edit are kept in the project's trash (`.trash`). Restoring a batch "
            "puts its files back; whatever stands in their place now is moved to the trash first."
        )
        rows = trash_rows(ctx, project.value)
        with gr.Row():
            batches = gr.Dropdown(choices=rows, value=rows[0] if rows else None, label="Trash batches (newest first)",
                                  elem_id="lora_studio_dataset_trash_batches", scale=5)
            refresh = gr.Button("🔄", elem_id="lora_studio_dataset_trash_refresh", scale=0, min_width=40)
        restore = gr.Button("Restore selected", elem_id="lora_studio_dataset_trash_restore")
        msg = gr.HTML(elem_id="lora_studio_dataset_trash_message")
        self = cls(ctx, project, batches, refresh, restore, msg, refresher)
        on(refresh.click, lambda name: self.refresh(name)[batches], [project], [batches])
        return self

    def connect(self) -> None:
        on(self.restore.click, self.do_restore, [self.project, self.batches], [self.message, *self.refresher.outputs])

    def refresh(self, name: str | None) -> dict:
        rows = trash_rows(self.ctx, name)
        return {self.batches: update(choices=rows, value=rows[0] if rows else None)}

    def do_restore(self, name, label):
        n_refresh = len(self.refresher.outputs)
        try:
            project = project_of(self.ctx, name)
            if not label:
                raise StudioError("No trash batch is selected.", "Pick one from the list.")
            batch_id = label.split(" · ", 1)[0]
            batch = next((b for b in trash.list_batches(project.dir) if b.batch_id == batch_id), None)
            if batch is None:
                raise StudioError(f"The trash batch {batch_id} is gone (restored already?).", "Refresh the list.")
            displaced = trash.restore(project.dir, batch_id)
        except StudioError as e:
            return (error_message(e), *[update()] * n_refresh)
        text = f"Restored {len(batch.files)} files ({batch.reason})."
        if displaced is not None:
            text += f" The files they replaced are in the trash as {displaced.batch_id}."
        return (message(text, "ok"), *self.refresher.values(name))
