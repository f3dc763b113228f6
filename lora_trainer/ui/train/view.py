"""What the Train sub-tab shows of a run: the loss chart, the saved epochs, the samples, a summary.

Pure functions of a job's history or of files on disk, so the refresh callback stays small and
tests can check them without a browser. The chart is a PNG drawn with matplotlib (a dependency
of gradio 3.41 and 4.40 alike): gr.LinePlot draws through altair in gradio 3 and through its own
frontend in gradio 4, with different value formats, and neither has a second axis for the LR.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...jobs import Job, JobStatus
from ...progress import format_duration

CHART_SIZE = (7.2, 3.0)  # inches at 100 dpi: 720 x 300 px, the width of the tab's main column
CHART_MAX_POINTS = 2000  # a long run is thinned to this many points: a chart is 720 px wide anyway


def history_from_rows(rows: Sequence[dict[str, str]]) -> list[dict[str, float]]:
    """Loss-log CSV rows (strings) as the numbers a job's history holds; empty cells are skipped."""
    out = []
    for row in rows:
        rec = {}
        for k, v in row.items():
            try:
                rec[k] = float(v)
            except (TypeError, ValueError):
                continue
        if "step" in rec and "loss" in rec:
            out.append(rec)
    return out


def _thin(history: Sequence[dict[str, Any]], limit: int = CHART_MAX_POINTS) -> list[dict[str, Any]]:
    if len(history) <= limit:
        return list(history)
    every = -(-len(history) // limit)
    thinned = list(history[::every])
    if thinned[-1] is not history[-1]:
        thinned.append(history[-1])  # the newest point is the one the user watches
    return thinned


def loss_chart(history: Sequence[dict[str, Any]]):
    """A PIL image: loss per step (faint), the epoch's running mean (solid), and the learning
    rates on a second axis; None without data."""
    if not history:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import (
        Figure,  # not pyplot: no global figure state in a server thread
    )
    from PIL import Image

    points = _thin(history)
    steps = [p["step"] for p in points]
    fig = Figure(figsize=CHART_SIZE, dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, [p["loss"] for p in points], color="#2563eb", alpha=0.25, linewidth=0.8, label="loss")
    if all("avg_loss" in p for p in points):
        ax.plot(steps, [p["avg_loss"] for p in points], color="#2563eb", linewidth=1.6, label="epoch average")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    if any(p.get("lr_unet") for p in points):
        lr = ax.twinx()
        lr.plot(steps, [p.get("lr_unet", 0.0) for p in points], color="#ea580c", linestyle="--", linewidth=1.2, label="UNet LR")
        if any(p.get("lr_te") for p in points):
            lr.plot(steps, [p.get("lr_te", 0.0) for p in points], color="#16a34a", linestyle=":", linewidth=1.2, label="text-encoder LR")
        lr.set_ylim(bottom=0)  # warmup and decay read as fractions of the peak
        lr.set_ylabel("learning rate")
        lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        more_lines, more_labels = lr.get_legend_handles_labels()
        lines, labels = lines + more_lines, labels + more_labels
    ax.legend(lines, labels, loc="upper right", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    canvas.draw()
    width, height = canvas.get_width_height()
    return Image.frombuffer("RGBA", (width, height), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1).convert("RGB")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def epochs_html(files: dict[int, Path], output_dir: Path) -> str:
    """The saved epoch files as a small table (name, size, time), newest last."""
    if not files:
        return f'<div class="ls-info">No epoch files yet in {html.escape(str(output_dir))}.</div>'
    rows = []
    for _, path in sorted(files.items()):
        try:
            st = path.stat()
        except OSError:  # moved to the trash between listing and reading
            continue
        saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
        rows.append(f"<tr><td>{html.escape(path.name)}</td><td>{_size(st.st_size)}</td><td>{saved}</td></tr>")
    return (f'<div class="ls-info">In {html.escape(str(output_dir))}:</div>'
            '<table class="ls-train-epochs"><thead><tr><th>File</th><th>Size</th><th>Saved</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def sample_files(samples_dir: Path, stem: str) -> list[Path]:
    """`<stem>-NN-PP.png` sample images in `samples_dir`, in epoch order."""
    if not samples_dir.is_dir():
        return []
    return sorted(p for p in samples_dir.glob(f"{stem}-*.png") if p.is_file())


def gallery_value(files: Sequence[Path]) -> list[tuple[str, str]]:
    return [(str(p), p.stem) for p in files]


def summary_line(job: Job | None) -> str:
    """One sentence on the run: what it is doing, or how it ended."""
    if job is None:
        return ""
    if job.status == JobStatus.QUEUED:
        return f"{job.title}: waiting for the GPU."
    if job.status == JobStatus.RUNNING:
        return f"{job.title}: {job.text or 'starting'}."
    if job.status == JobStatus.ERROR:
        return job.error
    result = job.result
    if job.status == JobStatus.DONE and result is not None and hasattr(result, "epochs_done"):
        loss = f", final loss {result.final_loss:.4f}" if result.final_loss is not None else ""
        last = f"; the newest file is {result.last_file.name} (try it first)" if result.last_file else ""
        resumed = f" (resumed after epoch {result.resumed_from_epoch})" if result.resumed_from_epoch else ""
        took = f" in {format_duration(job.elapsed_s)}"
        return (f"Finished {result.epochs_done} of {result.total_epochs} epochs, {result.steps_done} steps{resumed}"
                f"{took}{loss}{last}.")
    return job.summary


def summary_html(text: str, status: JobStatus | None) -> str:
    if not text:
        return ""
    # A finished run's line is the news of the tab: green, not the grey of a hint.
    kind = {JobStatus.ERROR: "error", JobStatus.DONE: "ok"}.get(status, "info")
    return f'<div class="ls-{kind}">{html.escape(text)}</div>'


def lines_html(lines: Sequence[str], css: str = "ls-train-preview") -> str:
    """Sentences, one per line, escaped."""
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines if line.strip())
    return f'<div class="{css}">{body}</div>' if body else ""


def problems_html(errors: Sequence[str], warnings: Sequence[str]) -> str:
    """Validation problems as plain sentences: errors first (they stop a run), then warnings."""
    items = [f'<li class="ls-error">{html.escape(e)}</li>' for e in errors]
    items += [f'<li class="ls-warning">{html.escape(w)}</li>' for w in warnings]
    if not items:
        return '<div class="ls-ok">No problems found.</div>'
    return f'<ul class="ls-train-problems">{"".join(items)}</ul>'
