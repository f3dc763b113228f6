"""The Dataset sub-tab: the Dataset Maker's steps in its order, one accordion each.

1. Overview  2. Import  3. Scrape  4. Duplicates  5. Tag / caption  6. Edit tags  7. Trash

Long operations (import, scrape, duplicates, tagging, captioning) are jobs shown in the tab's one
job panel. When the panel sees a job of ours finish, `DatasetTab.job_finished` shows its result
in its section and refreshes every view of the dataset's files (overview, tag table, image list,
trash), as does a change of project.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ...jobs import Job
from ..compat import QUIET, on
from ..context import StudioContext
from .captions import CaptionSection
from .collect import ImportSection, Overview, ScrapeSection, overview_markdown
from .common import Refresher
from .curate import DuplicatesSection, TrashSection
from .editor import EditorSection

__all__ = ["DatasetTab", "build", "overview_markdown"]


@dataclass
class DatasetTab:
    ctx: StudioContext
    project: gr.Dropdown
    overview: Overview
    importer: ImportSection
    scrape: ScrapeSection
    duplicates: DuplicatesSection
    captions: CaptionSection
    editor: EditorSection
    trash: TrashSection
    refresher: Refresher
    seen: gr.Textbox  # the last finished job whose result was shown (hidden)

    @property
    def job_sections(self) -> list:
        return [self.overview, self.importer, self.scrape, self.duplicates, self.captions]

    def connect(self, panel) -> None:
        """Buttons that start jobs put the job id into the panel; finished jobs come back here."""
        for section in self.job_sections:
            section.connect(panel.job_id)
        self.trash.connect()
        outputs = [self.seen, *self.refresher.outputs]
        for section in self.job_sections:
            outputs += [c for c in section.finished_outputs() if all(c is not o for o in outputs)]
        # Runs on every poll that changes the progress bar: silent, and cheap until a job finishes.
        on(panel.progress.change, self.job_finished, [panel.job_id, self.project, self.seen], outputs, show_progress=QUIET)

    def job_finished(self, job_id: str, name: str | None, seen: str) -> dict:
        """Show a finished job's result once: in its section, and in every view of the files."""
        job: Job | None = self.ctx.jobs.get(job_id) if job_id else None
        if job is None or not job.status.finished or job.id == seen:
            return {self.seen: seen}
        kinds = {k for s in self.job_sections for k in s.kinds}
        if job.kind not in kinds:
            return {self.seen: seen}
        out = {self.seen: job.id, **self.refresher.as_dict(name)}
        for section in self.job_sections:
            if job.kind in section.kinds:
                out.update(section.finished(job, name))
        return out


def build(ctx: StudioContext, project: gr.Dropdown) -> DatasetTab:
    refresher = Refresher()
    with gr.Accordion("1. Overview", open=True):
        overview = Overview.build(ctx, project)
    with gr.Accordion("2. Import images", open=False):
        importer = ImportSection.build(ctx, project)
    with gr.Accordion("3. Scrape a booru", open=False):
        scrape = ScrapeSection.build(ctx, project)
    with gr.Accordion("4. Find duplicates", open=False):
        duplicates = DuplicatesSection.build(ctx, project, refresher)
    with gr.Accordion("5. Tag / caption images", open=False):
        captions = CaptionSection.build(ctx, project)
    with gr.Accordion("6. Edit tags", open=False):
        editor = EditorSection.build(ctx, project, refresher)
    with gr.Accordion("7. Trash", open=False):
        trash_section = TrashSection.build(ctx, project, refresher)
    seen = gr.Textbox(value="", visible=False, elem_id="lora_studio_dataset_seen")

    refresher.add(overview.refresh, [overview.markdown])
    refresher.add(editor.refresh, [editor.table, editor.history, editor.image])
    refresher.add(trash_section.refresh, [trash_section.batches])
    tab = DatasetTab(ctx, project, overview, importer, scrape, duplicates, captions, editor, trash_section, refresher, seen)

    # A new project: every view shows it, and results of the previous project are cleared.
    change_outputs = [*refresher.outputs, *duplicates.refresh(None), *captions.refresh(None)]

    def on_project(name):
        return {**refresher.as_dict(name), **duplicates.refresh(name), **captions.refresh(name)}

    on(project.change, on_project, [project], change_outputs)
    return tab
