"""The one job panel shared by the Dataset, Train and Compare sub-tabs.

A progress bar with ETA, the log tail and a Cancel button. The browser asks for the job's state
once a second (javascript/lora_studio.js clicks the hidden poll button while the tab is shown);
when the page was reloaded the panel has no job id yet and re-attaches to the running job.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from ..jobs import Job, JobStatus
from ..progress import format_duration
from .compat import QUIET, on, update
from .context import StudioContext


def progress_html(job: Job | None, queue_position: int | None = None) -> str:
    """The progress bar as HTML: fraction, ETA, the job's text, or its error/summary when finished."""
    if job is None:
        return '<div class="ls-progress ls-idle"><span class="ls-progress-text">No job running.</span></div>'
    frac = job.fraction or 0.0
    if job.status == JobStatus.QUEUED:
        where = f" (number {queue_position} in line)" if queue_position else ""
        text = f"{job.title}: waiting for the GPU{where}"
    elif job.status == JobStatus.RUNNING:
        eta = f" · ETA {format_duration(job.eta_s)}" if job.fraction else ""
        text = f"{job.title}: {frac * 100:.0f}%{eta} · {job.text}".rstrip(" ·")
    elif job.status == JobStatus.ERROR:
        text = job.error
    else:
        text = job.summary
    width = 100.0 if job.status == JobStatus.DONE else frac * 100
    return (
        f'<div class="ls-progress ls-status-{job.status.value}">'
        f'<div class="ls-progress-bar" style="width:{width:.1f}%"></div>'
        f'<span class="ls-progress-text">{html.escape(text)}</span></div>'
    )


@dataclass
class JobPanel:
    job_id: gr.Textbox  # the job this page watches ("" = re-attach to whatever runs)
    progress: gr.HTML
    log: gr.Textbox
    cancel: gr.Button
    poll: gr.Button  # clicked by javascript/lora_studio.js; hidden by style.css

    @property
    def outputs(self) -> list:
        return [self.job_id, self.progress, self.log, self.cancel]


def panel_state(ctx: StudioContext, job_id: str) -> tuple:
    """Values for JobPanel.outputs: re-attach when `job_id` is empty or unknown, and move on to the
    running job once the watched one has finished.

    The job id is sent back only when it changes: a poll that left the browser before a Start
    button's answer would otherwise put the old id back over the new one, and the panel would keep
    showing the finished job while the new one runs.
    """
    watched = ctx.jobs.get(job_id) if job_id else None
    job = watched
    if job is None or job.status.finished:
        job = ctx.jobs.active() or watched or next(iter(ctx.jobs.jobs()), None)
    if job is None:
        return "", progress_html(None), "", update(visible=False)
    log = "\n".join(job.log_tail)
    new_id = job.id if job is not watched else update()
    return new_id, progress_html(job, ctx.jobs.queue_position(job.id)), log, update(visible=not job.status.finished)


def build_job_panel(ctx: StudioContext) -> JobPanel:
    with gr.Group(elem_id="lora_studio_job_panel"):
        with gr.Row():
            progress = gr.HTML(progress_html(None), elem_id="lora_studio_progress")
            cancel = gr.Button("Cancel", variant="stop", visible=False, elem_id="lora_studio_cancel", scale=0)
        with gr.Accordion("Log", open=False):
            log = gr.Textbox(show_label=False, lines=8, max_lines=8, interactive=False, elem_id="lora_studio_log")
        job_id = gr.Textbox(value="", elem_id="lora_studio_job_id", elem_classes=["ls-hidden"], show_label=False)
        poll = gr.Button("poll", elem_id="lora_studio_poll", elem_classes=["ls-hidden"])
    panel = JobPanel(job_id, progress, log, cancel, poll)

    def do_cancel(jid: str):
        if jid:
            ctx.jobs.cancel(jid)
        return panel_state(ctx, jid)

    on(poll.click, lambda jid: panel_state(ctx, jid), [job_id], panel.outputs, show_progress=QUIET)
    on(cancel.click, do_cancel, [job_id], panel.outputs)
    return panel

