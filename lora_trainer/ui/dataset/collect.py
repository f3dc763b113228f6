"""Steps 1-2 of the Dataset Maker: what the dataset holds, importing images, scraping a booru."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ...dataset.booru import SITES, make_client
from ...dataset.images import BadImage, inspect_image
from ...dataset.importer import (
    ImportOptions,
    ImportSummary,
    ShrinkOptions,
    import_into_dataset,
    scan_dataset,
)
from ...dataset.scrape import ScrapeOptions, ScrapeResult, download, preview
from ...errors import StudioError
from ...jobs import Job
from ...progress import ProgressEvent
from ..compat import on, received_uploads, update
from ..context import StudioContext
from .common import error_message, guarded, message, project_of

# ----------------------------------------------------------------------------------------------
# 1. Overview


def overview_markdown(ctx: StudioContext, name: str | None) -> str:
    """The dataset's counts (images, captions, missing captions, per folder) as markdown."""
    try:
        project = project_of(ctx, name)
    except StudioError as e:
        return str(e)
    s = scan_dataset(project.dataset_dir)
    head = (f"**{len(s.images)} images**, {len(s.captions)} with captions, {len(s.missing_captions)} without, "
            f"in `{project.dataset_dir}`.")
    if not s.images:
        return head + " Import a folder or scrape a booru to start."
    rest = [f"- {line.strip()}" for line in s.lines()[1:]]
    return "\n".join([head, "", *rest])


def check_dataset(dataset_dir: Path, progress, cancel) -> str:
    """Open every image fully and list the unreadable ones and those without a caption."""
    s = scan_dataset(dataset_dir)
    missing = set(s.missing_captions)
    bad = 0
    for i, img in enumerate(s.images, 1):
        cancel.raise_if_cancelled()
        try:
            inspect_image(img)
        except BadImage as e:
            bad += 1
            progress(ProgressEvent(log=f"{img.relative_to(dataset_dir).as_posix()} cannot be used: {e.message}"))
        if img in missing:
            progress(ProgressEvent(log=f"{img.relative_to(dataset_dir).as_posix()} has no caption file"))
        progress(ProgressEvent(i / len(s.images), f"checked {i}/{len(s.images)}"))
    return f"{bad} unreadable, {len(missing)} without a caption; {len(s.images)} images checked"


@dataclass
class Overview:
    ctx: StudioContext
    project: gr.Dropdown
    markdown: gr.Markdown
    refresh_button: gr.Button
    check: gr.Button

    kinds = ("check",)

    @classmethod
    def build(cls, ctx: StudioContext, project: gr.Dropdown) -> Overview:
        gr.Markdown("What the project's dataset folder holds. **Check** opens every image and lists the ones "
                    "that cannot be read or have no caption (see the job log).")
        with gr.Row():
            md = gr.Markdown(overview_markdown(ctx, project.value), elem_id="lora_studio_dataset_overview")
            refresh = gr.Button("🔄 Refresh", elem_id="lora_studio_dataset_overview_refresh", scale=0, min_width=110)
            check = gr.Button("Check dataset", elem_id="lora_studio_dataset_check", scale=0, min_width=140)
        self = cls(ctx, project, md, refresh, check)
        on(refresh.click, lambda name: overview_markdown(ctx, name), [project], [md])
        return self

    def connect(self, job_id: gr.Textbox) -> None:
        on(self.check.click, self.start_check, [self.project], [job_id])

    def start_check(self, name: str | None) -> str:
        try:
            project = project_of(self.ctx, name)
        except StudioError:
            return ""
        job = self.ctx.submit("check", f"Checking {project.name}",
                                   lambda progress, cancel: check_dataset(project.dataset_dir, progress, cancel))
        return job.id

    def refresh(self, name: str | None) -> dict:
        return {self.markdown: overview_markdown(self.ctx, name)}

    def finished_outputs(self) -> list:
        return []

    def finished(self, job: Job, name: str | None) -> dict:
        return {}


# ----------------------------------------------------------------------------------------------
# 2a. Import


def import_sources(ctx: StudioContext, path_text: str, files) -> list[Path]:
    """The typed path (confined to the allowed folders) and the files the browser uploaded."""
    sources = []
    if path_text and path_text.strip():
        sources.append(ctx.paths.confine(path_text))
    sources += received_uploads(files)
    if not sources:
        raise StudioError("Nothing to import.", "Type a folder or .zip path on the server, or upload images.")
    return sources


def import_report(summary: ImportSummary) -> str:
    return "\n".join(summary.lines())


@dataclass
class ImportSection:
    ctx: StudioContext
    project: gr.Dropdown
    path: gr.Textbox
    files: gr.File
    shrink: gr.Checkbox
    max_side: gr.Number
    to_jpeg: gr.Checkbox
    trash_others: gr.Checkbox
    start: gr.Button
    message: gr.HTML

    kinds = ("import",)

    @classmethod
    def build(cls, ctx: StudioContext, project: gr.Dropdown) -> ImportSection:
        gr.Markdown(
            "Bring images into the dataset folder: a folder or a .zip on the server, or files from your "
            "computer. Caption files (`.txt`) travel with their images; broken or disguised files are refused "
            "with a reason, and nothing in the dataset is overwritten."
        )
        with gr.Row():
            path = gr.Textbox(label="Folder or .zip on the server", placeholder=str(ctx.root / "my-images"),
                              elem_id="lora_studio_dataset_import_path", scale=3)
            files = gr.File(label="…or upload images / a zip", file_count="multiple",
                            elem_id="lora_studio_dataset_import_files", scale=2)
        with gr.Row():
            shrink = gr.Checkbox(label="Shrink large images", value=False, elem_id="lora_studio_dataset_import_shrink",
                                 info="Reduce dataset file size: originals are kept in the trash.")
            max_side = gr.Number(label="Max side (px)", value=2048, precision=0, elem_id="lora_studio_dataset_import_max_side",
                                 info="Twice the training resolution is plenty (1024 for SD1.5, 2048 for SDXL).")
            to_jpeg = gr.Checkbox(label="Store as JPEG", value=False, elem_id="lora_studio_dataset_import_jpeg",
                                  info="PNG → JPEG quality 95, as the guide's 'Reduce dataset filesize'.")
            trash_others = gr.Checkbox(label="Move other files to the trash", value=False,
                                       elem_id="lora_studio_dataset_import_trash_others",
                                       info="Files in the dataset folder that are neither images nor captions.")
        start = gr.Button("Import", variant="primary", elem_id="lora_studio_dataset_import")
        msg = gr.HTML(elem_id="lora_studio_dataset_import_message")
        return cls(ctx, project, path, files, shrink, max_side, to_jpeg, trash_others, start, msg)

    def connect(self, job_id: gr.Textbox) -> None:
        on(self.start.click, self.start_import,
           [self.project, self.path, self.files, self.shrink, self.max_side, self.to_jpeg, self.trash_others],
           [job_id, self.message])

    @guarded(2)
    def start_import(self, name, path_text, files, shrink, max_side, to_jpeg, trash_others):
        project = project_of(self.ctx, name)
        sources = import_sources(self.ctx, path_text, files)
        shrink_opts = None
        if shrink:
            if not max_side or int(max_side) < 64:
                raise StudioError(f"The maximum side {max_side} is too small.", "Use at least 64 px, e.g. 2048.")
            shrink_opts = ShrinkOptions(int(max_side), bool(to_jpeg))
        elif to_jpeg:
            shrink_opts = ShrinkOptions(1 << 30, True)  # convert only: no image is that large
        options = ImportOptions(trash_others=bool(trash_others), shrink=shrink_opts)

        def work(progress, cancel):
            return import_into_dataset(sources, project.dataset_dir, project.dir, options, progress, cancel)

        what = sources[0].name if len(sources) == 1 else f"{len(sources)} sources"
        job = self.ctx.submit("import", f"Importing {what} into {project.name}", work)
        return job.id, message(f"Importing {what}…")

    def finished_outputs(self) -> list:
        return [self.message]

    def finished(self, job: Job, name: str | None) -> dict:
        if job.result is None:
            return {self.message: message(job.error or job.summary, "error" if job.error else "info")}
        return {self.message: message(import_report(job.result), "ok")}


# ----------------------------------------------------------------------------------------------
# 2b. Scrape


def _preview_key(site: str, tags: str, cap: int, api_url: str) -> str:
    # What must not change between the preview and the download (the confirmed query).
    return json.dumps([site, " ".join((tags or "").split()), int(cap), (api_url or "").strip()])


def preview_html(p) -> str:
    count = "an unknown number of" if p.count is None else f"{p.count}"
    planned = p.planned if p.planned is not None else "up to the cap of"
    thumbs = "".join(
        f'<img src="{html.escape(u, quote=True)}" loading="lazy" referrerpolicy="no-referrer" alt="">' for u in p.thumbnails
    )
    return (
        f'<div class="ls-scrape-preview"><p><b>{html.escape(count)} results</b> on {html.escape(p.site)} for '
        f'<code>{html.escape(p.tags)}</code>; {html.escape(str(planned))} will be downloaded. '
        f'<a href="{html.escape(p.search_url, quote=True)}" target="_blank" rel="noopener noreferrer">See them on the site</a>.</p>'
        f'<div class="ls-thumb-strip">{thumbs}</div></div>'
    )


@dataclass
class ScrapeSection:
    ctx: StudioContext
    project: gr.Dropdown
    site: gr.Dropdown
    tags: gr.Textbox
    cap: gr.Number
    max_side: gr.Number
    captions: gr.Checkbox
    api_url: gr.Textbox
    preview_button: gr.Button
    preview: gr.HTML
    confirmed: gr.Textbox  # the previewed query (hidden); Download must match it
    download_button: gr.Button
    message: gr.HTML

    kinds = ("scrape",)

    @classmethod
    def build(cls, ctx: StudioContext, project: gr.Dropdown) -> ScrapeSection:
        gr.Markdown(
            "Search a booru and download the results. Tags are separated by spaces, words inside a tag are "
            "joined with `_`, `-tag` excludes a tag; metatags such as `score:>10` or `rating:general` work too. "
            "Up to 1000 images; **Preview** first, then confirm the download. Gelbooru needs your API key and "
            "user id (LoRA Studio settings)."
        )
        with gr.Row():
            site = gr.Dropdown(choices=list(SITES), value="gelbooru", label="Site", elem_id="lora_studio_dataset_scrape_site", scale=1)
            tags = gr.Textbox(label="Tags", placeholder="1girl -sex -greyscale -monochrome", elem_id="lora_studio_dataset_scrape_tags", scale=4)
        with gr.Row():
            cap = gr.Number(label="At most (images)", value=1000, precision=0, elem_id="lora_studio_dataset_scrape_cap")
            max_side = gr.Number(label="Use the site's sample above (px)", value=4096, precision=0,
                                 elem_id="lora_studio_dataset_scrape_max_side",
                                 info="Originals with a longer side are replaced by the smaller sample.")
            captions = gr.Checkbox(label="Save the post's tags as captions", value=False,
                                   elem_id="lora_studio_dataset_scrape_captions",
                                   info="Off in the guide: you tag the images in step 4 instead.")
        with gr.Accordion("API address", open=False):
            api_url = gr.Textbox(label="API address (empty: the site's own)", value="", elem_id="lora_studio_dataset_scrape_api_url")
        with gr.Row():
            preview_button = gr.Button("Preview", elem_id="lora_studio_dataset_scrape_preview")
            download_button = gr.Button("Download", variant="primary", visible=False, elem_id="lora_studio_dataset_scrape_download")
        preview_out = gr.HTML(elem_id="lora_studio_dataset_scrape_preview_html")
        confirmed = gr.Textbox(value="", visible=False, elem_id="lora_studio_dataset_scrape_confirmed")
        msg = gr.HTML(elem_id="lora_studio_dataset_scrape_message")
        self = cls(ctx, project, site, tags, cap, max_side, captions, api_url, preview_button, preview_out, confirmed,
                   download_button, msg)
        on(preview_button.click, self.do_preview, [site, tags, cap, api_url], [preview_out, confirmed, download_button, msg])
        on(tags.submit, self.do_preview, [site, tags, cap, api_url], [preview_out, confirmed, download_button, msg])
        return self

    def connect(self, job_id: gr.Textbox) -> None:
        on(self.download_button.click, self.start_download,
           [self.project, self.site, self.tags, self.cap, self.max_side, self.captions, self.api_url, self.confirmed],
           [job_id, self.message])

    def _client(self, site: str, api_url: str):
        if (api_url or "").strip() and self.ctx.remote:
            raise StudioError("A custom API address is off while the server is reachable from other computers.",
                              "Leave the API address empty.")
        s = self.ctx.settings
        key, user = (s.gelbooru_api_key, s.gelbooru_user_id) if site == "gelbooru" else ("", "")
        return make_client(site, (api_url or "").strip(), key, user)

    def do_preview(self, site, tags, cap, api_url):
        try:
            cap = int(cap or 0)
            if cap < 1:
                raise StudioError(f"'At most' is {cap}.", "Use at least 1 (the guide's cap is 1000).")
            p = preview(self._client(site, api_url), tags or "", cap)
        except StudioError as e:
            return "", "", update(visible=False), error_message(e)
        if p.count == 0:
            return message(f"No results on {p.site} for {p.tags}."), "", update(visible=False), ""
        n = p.planned if p.planned is not None else cap
        label = f"Download {n} images"
        return preview_html(p), _preview_key(site, tags, cap, api_url), update(visible=True, value=label), ""

    @guarded(2)
    def start_download(self, name, site, tags, cap, max_side, captions, api_url, confirmed):
        project = project_of(self.ctx, name)
        if not confirmed or confirmed != _preview_key(site, tags, int(cap or 0), api_url):
            raise StudioError("The search changed since the preview.", "Press Preview again, check the results, then Download.")
        client = self._client(site, api_url)
        options = ScrapeOptions(cap=int(cap), max_side=int(max_side or ScrapeOptions.max_side),
                                tags_as_captions=bool(captions))
        query = " ".join(tags.split())

        def work(progress, cancel):
            result = download(client, query, project.dataset_dir, options, progress, cancel)
            progress(ProgressEvent(1.0, result.summary()))  # the job panel's closing line
            return result

        job = self.ctx.submit("scrape", f"Scraping {site} for {query!r}", work)
        return job.id, message(f"Downloading up to {cap} images from {site}…")

    def finished_outputs(self) -> list:
        return [self.message]

    def finished(self, job: Job, name: str | None) -> dict:
        r: ScrapeResult | None = job.result
        if r is None:
            return {self.message: message(job.error or job.summary, "error" if job.error else "info")}
        lines = [r.summary().capitalize() + "."]
        lines += [f"failed: {url}: {why}" for url, why in r.failed[:10]]
        return {self.message: message("\n".join(lines), "ok")}
