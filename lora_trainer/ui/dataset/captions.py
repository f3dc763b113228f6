"""Step 4 of the Dataset Maker: booru tags with the WD tagger, or sentences for photos with CoCa."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ...dataset.captioner import (
    CAPTION_MODES,
    DEFAULT_COCA_MODEL,
    DEFAULT_COCA_PRETRAINED,
    CaptionResult,
    CocaSettings,
    caption_dataset,
    load_coca_captioner,
)
from ...dataset.tagger import (
    DEFAULT_TAGGER,
    KNOWN_TAGGERS,
    TagResult,
    TagSettings,
    tag_dataset,
)
from ...errors import StudioError
from ...jobs import Job
from ..compat import on
from ..context import StudioContext
from .common import guarded, looks_like_path, message, project_of

# The Dataset Maker's blacklist_tags default: tags that describe the source, not the subject.
GUIDE_BLACKLIST = (
    "virtual youtuber, parody, style parody, official alternate costume, official alternate hairstyle, "
    "official alternate hair length, alternate costume, alternate hairstyle, alternate hair length, alternate hair color"
)
TOP_TAGS = 50  # the guide prints the top 50 tags after tagging


def top_tags_text(counter, n: int = TOP_TAGS) -> str:
    if not counter:
        return "No tags in the dataset yet."
    return f"Top {min(n, len(counter))} tags: " + ", ".join(f"{t} ({c})" for t, c in counter.most_common(n))


def tagger_source(ctx: StudioContext, text: str) -> str:
    """A tagger folder (confined), or a known tagger name (found in the settings' tagger folder if there)."""
    text = (text or "").strip()
    if not text:
        raise StudioError("No tagger model was given.", f"Type a folder with model.onnx, or {DEFAULT_TAGGER}.")
    if text in KNOWN_TAGGERS:
        d = ctx.settings.tagger_dir
        if d is not None and (Path(d) / text).is_dir():
            return str(ctx.paths.confine(Path(d) / text))
        return text
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not (ctx.root / text).exists():
        return text  # a Hugging Face repo id with the same two files
    return str(ctx.paths.confine(text))


def default_tagger(ctx: StudioContext) -> str:
    d = ctx.settings.tagger_dir
    if d is not None and (Path(d) / "model.onnx").is_file():
        return str(d)
    return DEFAULT_TAGGER


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in (text or "").split(",") if t.strip())


@dataclass
class CaptionSection:
    ctx: StudioContext
    project: gr.Dropdown
    inputs_tag: list
    inputs_caption: list
    tag_button: gr.Button
    caption_button: gr.Button
    top_tags: gr.Markdown
    message: gr.HTML

    kinds = ("tag", "caption")

    @classmethod
    def build(cls, ctx: StudioContext, project: gr.Dropdown) -> CaptionSection:
        gr.Markdown(
            "Write a caption file for every image. **Anime tags**: a WD tagger reads each image and writes "
            "booru tags (underscores become spaces). **Photo captions**: CoCa writes a sentence per image. "
            "Previous captions are kept in the trash."
        )
        with gr.Tabs():
            with gr.Tab("Anime tags (WD tagger)"):
                with gr.Row():
                    model = gr.Textbox(label="Tagger", value=default_tagger(ctx), scale=3,
                                       info="A folder with model.onnx + selected_tags.csv, or a name such as "
                                            f"{DEFAULT_TAGGER} (downloaded once).",
                                       elem_id="lora_studio_dataset_tag_model")
                    model2 = gr.Textbox(label="Second tagger (optional)", value="", scale=2,
                                        info="Its new tags are added: the guide's 'Both' (eva02 + vit-large).",
                                        elem_id="lora_studio_dataset_tag_model2")
                with gr.Row():
                    threshold = gr.Slider(0.0, 1.0, value=0.35, step=0.01, label="Tag threshold",
                                          info="Lower gives more tags: 0.25 for concepts, 0.50 for styles.",
                                          elem_id="lora_studio_dataset_tag_threshold")
                    char_threshold = gr.Slider(0.0, 1.0, value=0.85, step=0.01, label="Character threshold",
                                               elem_id="lora_studio_dataset_tag_char_threshold")
                with gr.Row():
                    characters = gr.Checkbox(label="Include character names", value=True,
                                             info="Leave them out when you train that character: the activation tag takes their place.",
                                             elem_id="lora_studio_dataset_tag_characters")
                    mcut = gr.Checkbox(label="MCut (automatic thresholds)", value=False, elem_id="lora_studio_dataset_tag_mcut")
                blacklist = gr.Textbox(label="Blacklisted tags", value=GUIDE_BLACKLIST, lines=2,
                                       info="Never written.", elem_id="lora_studio_dataset_tag_blacklist")
                with gr.Row():
                    mode = gr.Radio(list(CAPTION_MODES), value="overwrite", label="Existing captions",
                                    info="overwrite, append new tags, or skip images that have one",
                                    elem_id="lora_studio_dataset_tag_mode")
                    batch = gr.Number(label="Batch size", value=8, precision=0, elem_id="lora_studio_dataset_tag_batch")
                tag_button = gr.Button("Tag images", variant="primary", elem_id="lora_studio_dataset_tag")
            with gr.Tab("Photo captions (CoCa)"):
                with gr.Row():
                    cmodel = gr.Textbox(label="Captioner", value=DEFAULT_COCA_MODEL, scale=3,
                                        info="An open_clip CoCa name (downloaded once) or a folder with open_clip_config.json.",
                                        elem_id="lora_studio_dataset_caption_model")
                    min_len = gr.Number(label="Min length", value=10, precision=0, elem_id="lora_studio_dataset_caption_min")
                    max_len = gr.Number(label="Max length", value=75, precision=0, elem_id="lora_studio_dataset_caption_max")
                cmode = gr.Radio(list(CAPTION_MODES), value="overwrite", label="Existing captions",
                                 elem_id="lora_studio_dataset_caption_mode")
                caption_button = gr.Button("Caption images", variant="primary", elem_id="lora_studio_dataset_caption")
        top_tags = gr.Markdown(elem_id="lora_studio_dataset_top_tags")
        msg = gr.HTML(elem_id="lora_studio_dataset_tag_message")
        return cls(ctx, project, [model, model2, threshold, char_threshold, characters, mcut, blacklist, mode, batch],
                   [cmodel, min_len, max_len, cmode], tag_button, caption_button, top_tags, msg)

    def connect(self, job_id: gr.Textbox) -> None:
        on(self.tag_button.click, self.start_tagging, [self.project, *self.inputs_tag], [job_id, self.message])
        on(self.caption_button.click, self.start_captioning, [self.project, *self.inputs_caption], [job_id, self.message])

    @guarded(2)
    def start_tagging(self, name, model, model2, threshold, char_threshold, characters, mcut, blacklist, mode, batch):
        project = project_of(self.ctx, name)
        models = [tagger_source(self.ctx, model)] + ([tagger_source(self.ctx, model2)] if (model2 or "").strip() else [])
        settings = TagSettings(threshold=float(threshold), character_threshold=float(char_threshold),
                               characters=bool(characters), mcut=bool(mcut), blacklist=comma_list(blacklist),
                               batch_size=int(batch or 8))
        settings.validate()
        models_dir = self.ctx.root / "_models"

        def work(progress, cancel):
            return tag_dataset(project.dataset_dir, project.dir, models, settings, mode, models_dir,
                               progress=progress, cancel=cancel)

        job = self.ctx.submit("tag", f"Tagging {project.name}", work, gpu=True)
        return job.id, message("Tagging…")

    @guarded(2)
    def start_captioning(self, name, model, min_len, max_len, mode):
        project = project_of(self.ctx, name)
        settings = CocaSettings(min_len=int(min_len or 0), max_len=int(max_len or 0))
        settings.validate()
        model = (model or "").strip() or DEFAULT_COCA_MODEL
        if looks_like_path(model):
            model = str(self.ctx.paths.confine(model))
        pretrained = None if looks_like_path(model) else DEFAULT_COCA_PRETRAINED
        models_dir = self.ctx.root / "_models"
        injected = self.ctx.extra.get("caption_fn")  # a host's own captioner (e.g. the WebUI's BLIP)

        def work(progress, cancel):
            fn = injected or load_coca_captioner(model, pretrained, settings, models_dir, progress=progress)
            return caption_dataset(project.dataset_dir, project.dir, fn, mode, progress=progress, cancel=cancel)

        job = self.ctx.submit("caption", f"Captioning {project.name}", work, gpu=True)
        return job.id, message("Captioning…")

    def finished_outputs(self) -> list:
        return [self.message, self.top_tags]

    def finished(self, job: Job, name: str | None) -> dict:
        r = job.result
        if isinstance(r, TagResult):
            w = r.write
            text = f"Tagged {len(r.tags)} images: {w.written} caption files written, {w.unchanged} unchanged, {w.skipped} skipped."
            if r.failed:
                text += f"\nCould not read {len(r.failed)} images: {', '.join(r.failed[:10])}"
            return {self.message: message(text, "ok"), self.top_tags: top_tags_text(r.top_tags)}
        if isinstance(r, CaptionResult):
            w = r.write
            text = f"Captioned {len(r.captions)} images: {w.written} caption files written, {w.skipped} skipped."
            examples = "\n".join(f"- `{k}`: {v}" for k, v in list(r.captions.items())[:10])
            return {self.message: message(text, "ok"), self.top_tags: examples}
        return {self.message: message(job.error or job.summary, "error" if job.error else "info")}

    def refresh(self, name: str | None) -> dict:
        return {self.top_tags: "", self.message: ""}

