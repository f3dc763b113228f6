"""Background jobs: every long operation (scrape, dedupe, tag, caption, train, grid) runs here.

A job is a function `fn(progress, cancel) -> result` run in a thread. Its events update the job's
state (fraction, ETA, text, log tail, history of `extra` values for charts), which the UI polls:
state lives in the server process, so reloading the page re-attaches to a running job. At most one
GPU-heavy job runs at a time; others wait in a FIFO queue. A `StudioError` becomes the job's plain
message; any other exception becomes a short apology in the UI, and its traceback goes to the server's
console and the job's log file only, never to the log tail that pages and the API show.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .errors import Cancelled, StudioError
from .progress import CancelToken, ProgressEvent

LOG_TAIL_LINES = 200  # what the UI shows; the log file keeps everything
HISTORY_LIMIT = 100_000  # `extra` records kept for charts (a long run logs one per step)

JobFn = Callable[[Callable[[ProgressEvent], None], CancelToken], Any]


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.ERROR, JobStatus.CANCELLED)


@dataclass
class Job:
    id: str
    kind: str  # "train", "tag", "scrape", ... (the UI shows jobs of its own kind)
    title: str  # "Training alice", shown in the job panel
    gpu: bool  # GPU-heavy jobs run one at a time
    status: JobStatus = JobStatus.QUEUED
    fraction: float | None = None
    text: str = ""
    eta_s: float | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str = ""  # a plain sentence for the UI when status is ERROR
    summary: str = ""  # one line left behind by a finished job
    result: Any = None
    log_path: Path | None = None
    log_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))
    history: list[dict[str, Any]] = field(default_factory=list)
    cancel_token: CancelToken = field(default_factory=CancelToken)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def elapsed_s(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished; True if it did within `timeout`."""
        return self._done.wait(timeout)


class JobManager:
    """Runs jobs in threads; one GPU job at a time. One manager per server process."""

    def __init__(self, log_dir: str | Path | None = None):
        self.log_dir = Path(log_dir) if log_dir else None
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._gpu_queue: collections.deque[tuple[Job, JobFn]] = collections.deque()
        self._gpu_busy = False
        self._ids = itertools.count(1)

    # -- starting and stopping -----------------------------------------------------------------

    def submit(self, kind: str, title: str, fn: JobFn, gpu: bool = False) -> Job:
        """Queue `fn(progress, cancel)`; returns at once with the job (status QUEUED or RUNNING)."""
        job = Job(id=f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._ids)}", kind=kind, title=title, gpu=gpu)
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            job.log_path = self.log_dir / f"job-{job.id}-{kind}.log"
        with self._lock:
            self._jobs[job.id] = job
            if gpu:
                self._gpu_queue.append((job, fn))
                start_now = not self._gpu_busy
                if start_now:
                    self._gpu_busy = True
            else:
                start_now = True
        self._log(job, f"{title}: queued")
        if gpu and start_now:
            self._start_gpu_worker()
        elif not gpu:
            threading.Thread(target=self._run, args=(job, fn), name=f"job-{job.id}", daemon=True).start()
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or ask a running one to stop at its next safe point."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status.finished:
                return job
            queued = next((entry for entry in self._gpu_queue if entry[0] is job), None)
            if queued:
                self._gpu_queue.remove(queued)
        job.cancel_token.cancel()
        if queued:
            self._finish(job, JobStatus.CANCELLED, summary=f"{job.title}: cancelled before it started")
        else:
            self._log(job, "cancel requested; stopping at the next safe point")
        return job

    # -- looking at jobs (the UI polls these) --------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self, kind: str | None = None) -> list[Job]:
        """All jobs of this process, newest first."""
        with self._lock:
            jobs = list(self._jobs.values())
        return sorted((j for j in jobs if kind is None or j.kind == kind), key=lambda j: j.created, reverse=True)

    def active(self, kind: str | None = None) -> Job | None:
        """The running job (else the oldest queued one) of that kind: what a reloaded page re-attaches to."""
        jobs = [j for j in self.jobs(kind) if not j.status.finished]
        running = [j for j in jobs if j.status == JobStatus.RUNNING]
        return (running or jobs[::-1] or [None])[0]

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next GPU job to start, None when not queued."""
        with self._lock:
            for i, (job, _) in enumerate(self._gpu_queue):
                if job.id == job_id:
                    return i + 1
        return None

    # -- the worker side -----------------------------------------------------------------------

    def _start_gpu_worker(self) -> None:
        threading.Thread(target=self._gpu_worker, name="lora-studio-gpu", daemon=True).start()

    def _gpu_worker(self) -> None:
        while True:
            with self._lock:
                if not self._gpu_queue:
                    self._gpu_busy = False
                    return
                job, fn = self._gpu_queue.popleft()
            self._run(job, fn)

    def _run(self, job: Job, fn: JobFn) -> None:
        job.status = JobStatus.RUNNING
        job.started = time.time()
        self._log(job, f"{job.title}: started")
        try:
            job.result = fn(lambda event: self._on_event(job, event), job.cancel_token)
        except Cancelled:
            self._finish(job, JobStatus.CANCELLED, summary=f"{job.title}: cancelled after {_fmt(job.elapsed_s)}")
        except StudioError as e:
            job.error = str(e)
            self._finish(job, JobStatus.ERROR, summary=f"{job.title}: {e}")
        except Exception as e:  # a bug: the UI gets one sentence, the server keeps the traceback
            report = traceback.format_exc()
            print(f"LoRA Studio: job {job.id} ({job.title}) failed:\n{report}", file=sys.stderr, flush=True)
            self._log(job, f"{type(e).__name__} (job {job.id}): the traceback is in the server's console", detail=report)
            first = (str(e).splitlines() or [""])[0][:200]
            where = f" and in the job log {job.log_path.name}" if job.log_path else ""
            job.error = (f"Something went wrong ({type(e).__name__}: {first}). The details are in the server's "
                         f"console{where} (job {job.id}).")
            self._finish(job, JobStatus.ERROR, summary=f"{job.title}: failed ({type(e).__name__})")
        else:
            if job.cancel_token.cancelled:
                self._finish(job, JobStatus.CANCELLED, summary=f"{job.title}: cancelled after {_fmt(job.elapsed_s)}")
            else:
                summary = job.result if isinstance(job.result, str) else job.text
                self._finish(job, JobStatus.DONE, summary=f"{job.title}: done in {_fmt(job.elapsed_s)}" + (f"; {summary}" if summary else ""))

    def _on_event(self, job: Job, event: ProgressEvent) -> None:
        if event.fraction is not None:
            job.fraction = min(max(float(event.fraction), 0.0), 1.0)
        if event.text:
            job.text = event.text
        if event.eta_s is not None:
            job.eta_s = event.eta_s
        elif job.fraction and job.started:
            job.eta_s = job.elapsed_s * (1 - job.fraction) / job.fraction
        if event.extra and len(job.history) < HISTORY_LIMIT:
            job.history.append(dict(event.extra))
        if event.log:
            self._log(job, event.log)

    def _finish(self, job: Job, status: JobStatus, summary: str) -> None:
        job.status = status
        job.finished = time.time()
        job.summary = summary
        if status == JobStatus.DONE:
            job.fraction, job.eta_s = 1.0, 0.0
        self._log(job, summary)
        job._done.set()

    def _log(self, job: Job, line: str, detail: str = "") -> None:
        """`line` to the log tail (what pages show) and the log file; `detail` to the file only."""
        stamp = time.strftime("%H:%M:%S")
        for part in line.rstrip("\n").split("\n"):
            job.log_tail.append(f"{stamp} {part}")
        if job.log_path:
            with open(job.log_path, "a", encoding="utf-8") as f:  # a log is appended to, not replaced
                f.write(f"{stamp} {line.rstrip()}\n" + (detail.rstrip() + "\n" if detail else ""))


def _fmt(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}" if s >= 60 else f"{s} s"
