"""Step 5 of the Dataset Maker: curate the tags of every caption file, or of one image; each edit undoable."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from ...dataset import tag_editor as te
from ...errors import StudioError
from ..compat import on, update
from ..context import StudioContext
from .common import Refresher, error_message, message, project_of, rel_name, thumbnail

TABLE_TOP = 200  # rows of the frequency table; the search box finds the rest
HEADERS = ["tag", "count", "share"]
HISTORY_SHOWN = 10


def frequency_rows(ctx: StudioContext, name: str | None, search: str = ""):
    """The tag table (tag, count, share of images) as a DataFrame; empty when there is nothing to show."""
    import pandas as pd

    try:
        project = project_of(ctx, name)
        if not project.dataset_dir.is_dir():
            raise StudioError("no dataset yet")
        table = te.frequencies(project.dir, top=TABLE_TOP, search=search or "", dataset_dir=project.dataset_dir)
    except StudioError:
        return pd.DataFrame({h: [] for h in HEADERS})
    table["share"] = table["share"].round(3)
    return table


def history_text(ctx: StudioContext, name: str | None) -> str:
    try:
        batches = te.history(project_of(ctx, name).dir)
    except StudioError:
        return ""
    if not batches:
        return "No edits to undo."
    lines = [f"- {time.strftime('%H:%M:%S', time.localtime(b.created))} {b.reason[len(te.REASON_PREFIX):]} "
             f"({len(b.files)} files)" for b in batches[:HISTORY_SHOWN]]
    return "Edits, newest first (Undo reverts the top one):\n" + "\n".join(lines)


def image_names(ctx: StudioContext, name: str | None) -> list[str]:
    try:
        project = project_of(ctx, name)
        return [rel_name(project, p) for p in te.find_images(project.dataset_dir)]
    except StudioError:
        return []


@dataclass
class EditorSection:
    ctx: StudioContext
    project: gr.Dropdown
    search: gr.Textbox
    table: gr.Dataframe
    history: gr.Markdown
    message: gr.HTML
    image: gr.Dropdown
    preview: gr.Image
    caption: gr.Textbox
    refresher: Refresher

    kinds = ("import", "scrape", "tag", "caption")

    @classmethod
    def build(cls, ctx: StudioContext, project: gr.Dropdown, refresher: Refresher) -> EditorSection:
        gr.Markdown(
            "Curate the tags of every caption file. Put your **activation tag** first (then train with "
            "keep_tokens = 1): tags common to all images get absorbed into it, so remove those that describe "
            "your subject and keep those you want to change at will. Every edit can be undone."
        )
        with gr.Row():
            with gr.Column(scale=2):
                search = gr.Textbox(label="Search tags", placeholder="hair, or *_hair", elem_id="lora_studio_dataset_tags_search")
                table = gr.Dataframe(value=frequency_rows(ctx, project.value), headers=HEADERS,
                                     datatype=["str", "number", "number"], interactive=False, wrap=True,
                                     label="Tag frequency (click a tag to copy it into the fields)",
                                     elem_id="lora_studio_dataset_tags_table")
            with gr.Column(scale=3):
                picked = gr.Textbox(label="Picked tags", placeholder="click tags in the table",
                                    elem_id="lora_studio_dataset_tags_picked")
                with gr.Row():
                    activation = gr.Textbox(label="Activation tag(s)", placeholder="mychar", scale=3,
                                            elem_id="lora_studio_dataset_tags_activation")
                    activate = gr.Button("Add / move to front", scale=1, elem_id="lora_studio_dataset_tags_activate")
                with gr.Row():
                    remove_tags = gr.Textbox(label="Remove tags", placeholder="tag1, tag2, *_background", scale=3,
                                             elem_id="lora_studio_dataset_tags_remove_text")
                    remove = gr.Button("Remove", scale=1, elem_id="lora_studio_dataset_tags_remove")
                with gr.Row():
                    merge_sources = gr.Textbox(label="Merge tags", placeholder="A, B, C", scale=2,
                                               elem_id="lora_studio_dataset_tags_merge_sources")
                    merge_target = gr.Textbox(label="into", placeholder="A", scale=1, elem_id="lora_studio_dataset_tags_merge_target")
                    merge = gr.Button("Merge", scale=1, elem_id="lora_studio_dataset_tags_merge")
                with gr.Accordion("Search and replace", open=False):
                    with gr.Row():
                        old = gr.Textbox(label="Replace", placeholder="old tag", elem_id="lora_studio_dataset_tags_old")
                        new = gr.Textbox(label="with", placeholder="new tags (empty: remove)", elem_id="lora_studio_dataset_tags_new")
                    with gr.Row():
                        if_any = gr.Textbox(label="only if the caption has any of", elem_id="lora_studio_dataset_tags_if_any")
                        if_all = gr.Textbox(label="only if it has all of", elem_id="lora_studio_dataset_tags_if_all")
                    substring = gr.Checkbox(label="Replace text inside tags (e.g. _ → space)", value=False,
                                            elem_id="lora_studio_dataset_tags_substring")
                    replace = gr.Button("Replace", elem_id="lora_studio_dataset_tags_replace")
                with gr.Row():
                    sort_by = gr.Radio(["alphabetically", "by frequency"], value="alphabetically", label="Sort each caption",
                                       info="Activation tags stay first.", elem_id="lora_studio_dataset_tags_sort_by")
                    sort = gr.Button("Sort", elem_id="lora_studio_dataset_tags_sort")
                    dedupe = gr.Button("Remove duplicate tags", elem_id="lora_studio_dataset_tags_dedupe")
                with gr.Row():
                    undo = gr.Button("↶ Undo last edit", elem_id="lora_studio_dataset_tags_undo")
                msg = gr.HTML(elem_id="lora_studio_dataset_tags_message")
                history = gr.Markdown(history_text(ctx, project.value), elem_id="lora_studio_dataset_tags_history")

        gr.Markdown("**One image**: pick it, edit its caption, Save (undo works here too).")
        names = image_names(ctx, project.value)
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    image = gr.Dropdown(choices=names, value=None, label="Image", elem_id="lora_studio_dataset_image", scale=4)
                    prev_b = gr.Button("◀", scale=0, min_width=40, elem_id="lora_studio_dataset_image_prev")
                    next_b = gr.Button("▶", scale=0, min_width=40, elem_id="lora_studio_dataset_image_next")
                preview = gr.Image(label="Preview", interactive=False, height=320, elem_id="lora_studio_dataset_image_preview")
            with gr.Column(scale=3):
                caption = gr.Textbox(label="Caption", lines=6, elem_id="lora_studio_dataset_caption_text")
                save = gr.Button("Save caption", variant="primary", elem_id="lora_studio_dataset_caption_save")

        self = cls(ctx, project, search, table, history, msg, image, preview, caption, refresher)
        after = [msg, table, history, caption]  # what every edit refreshes
        args = [project, search, image]
        on(search.change, lambda n, s: frequency_rows(ctx, n, s), [project, search], [table])
        on(table.select, self.pick_tag, [picked, table], [picked])
        on(activate.click, self.edit("activate"), [*args, activation], after)
        on(remove.click, self.edit("remove"), [*args, remove_tags], after)
        on(merge.click, self.edit("merge"), [*args, merge_target, merge_sources], after)
        on(replace.click, self.edit("replace"), [*args, old, new, if_any, if_all, substring], after)
        on(sort.click, self.edit("sort"), [*args, sort_by, activation], after)
        on(dedupe.click, self.edit("dedupe"), args, after)
        on(undo.click, self.do_undo, args, after)
        on(image.change, self.show_image, [project, image], [preview, caption, msg])
        on(prev_b.click, lambda n, i: self.step(n, i, -1), [project, image], [image])
        on(next_b.click, lambda n, i: self.step(n, i, +1), [project, image], [image])
        on(save.click, self.save_caption, [*args, caption], after)
        return self

    # -- bulk edits ------------------------------------------------------------------------------

    def edit(self, op: str):
        """The callback for one tag_editor operation; `values` are the op's own fields."""

        def run(name, search, image, *values):
            try:
                project = project_of(self.ctx, name)
                result = self._apply(op, project.dir, *values)
            except StudioError as e:
                return error_message(e), update(), update(), update()
            return self._after(name, search, image, message(result.message, "ok"))

        return run

    @staticmethod
    def _apply(op: str, project_dir, *values):
        if op == "activate":
            return te.activate(project_dir, [values[0] or ""])
        if op == "remove":
            return te.remove(project_dir, [values[0] or ""])
        if op == "merge":
            target, sources = values
            return te.merge(project_dir, target or "", [sources or ""])
        if op == "replace":
            old, new, if_any, if_all, substring = values
            return te.replace(project_dir, old or "", new or "", [if_any or ""], [if_all or ""], bool(substring))
        if op == "sort":
            by, activation = values
            return te.sort(project_dir, "freq" if by == "by frequency" else "alpha", [activation or ""])
        if op == "dedupe":
            return te.dedupe(project_dir)
        raise ValueError(op)

    def _after(self, name, search, image, text: str):
        return text, frequency_rows(self.ctx, name, search), history_text(self.ctx, name), self._caption_of(name, image)

    def _caption_of(self, name, image):
        if not image:
            return update()
        try:
            return te.read_caption(project_of(self.ctx, name).dir, image)
        except StudioError:
            return update()

    def do_undo(self, name, search, image):
        try:
            batch = te.undo(project_of(self.ctx, name).dir)
        except StudioError as e:
            return error_message(e), update(), update(), update()
        if batch is None:
            return message("There is no tag edit to undo."), update(), update(), update()
        what = batch.reason[len(te.REASON_PREFIX):]
        return self._after(name, search, image, message(f"Undid: {what} ({len(batch.files)} files restored).", "ok"))

    def pick_tag(self, picked: str, table, evt: gr.SelectData):
        """A click on a table row adds its tag to the picked list (to paste into the fields)."""
        try:
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else int(evt.index)
            tag = str(table.iloc[row, 0])
        except (IndexError, TypeError, ValueError, AttributeError):
            return update()
        tags = [t.strip() for t in (picked or "").split(",") if t.strip()]
        return ", ".join(tags if tag in tags else [*tags, tag])

    # -- one image -------------------------------------------------------------------------------

    def show_image(self, name, image):
        if not image:
            return None, "", ""
        try:
            project = project_of(self.ctx, name)
            text = te.read_caption(project.dir, image)
            thumb = thumbnail(project, project.dataset_dir / image, side=512)
        except StudioError as e:
            return None, "", error_message(e)
        return thumb, text, ""

    def step(self, name, image, delta: int):
        names = image_names(self.ctx, name)
        if not names:
            return update()
        i = names.index(image) + delta if image in names else 0
        return update(choices=names, value=names[i % len(names)])

    def save_caption(self, name, search, image, text):
        try:
            if not image:
                raise StudioError("No image is picked.", "Pick an image from the list first.")
            result = te.write_caption(project_of(self.ctx, name).dir, image, text or "")
        except StudioError as e:
            return error_message(e), update(), update(), update()
        return self._after(name, search, image, message(result.message, "ok"))

    # -- refresh ---------------------------------------------------------------------------------

    def refresh(self, name: str | None) -> dict:
        names = image_names(self.ctx, name)
        return {
            self.table: frequency_rows(self.ctx, name),
            self.history: history_text(self.ctx, name),
            self.image: update(choices=names, value=None),
        }
