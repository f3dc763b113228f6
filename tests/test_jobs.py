"""Background jobs: progress, ETA, cancel, errors, the GPU queue, re-attach."""

import threading
import time

from lora_trainer.errors import StudioError
from lora_trainer.jobs import JobManager, JobStatus
from lora_trainer.progress import ProgressEvent


def test_progress_eta_history_and_summary(tmp_path):
    jm = JobManager(log_dir=tmp_path)

    def work(progress, cancel):
        for i in range(1, 5):
            progress(ProgressEvent(fraction=i / 4, text=f"step {i}/4", extra={"step": i, "loss": 1.0 / i}))
        progress(ProgressEvent(log="skipped bad.png: truncated"))
        return "4 steps"

    job = jm.submit("train", "Training alice", work, gpu=True)
    assert job.wait(5)
    assert job.status == JobStatus.DONE and job.fraction == 1.0 and job.eta_s == 0.0
    assert [h["step"] for h in job.history] == [1, 2, 3, 4]
    assert job.text == "step 4/4"
    assert job.summary.startswith("Training alice: done in") and job.summary.endswith("; 4 steps")
    log = job.log_path.read_text()
    assert "skipped bad.png: truncated" in log and "started" in log


def test_eta_from_fraction(tmp_path):
    jm = JobManager()
    seen = threading.Event()
    release = threading.Event()

    def work(progress, cancel):
        time.sleep(0.2)
        progress(ProgressEvent(fraction=0.25))
        seen.set()
        release.wait(5)

    job = jm.submit("x", "x", work)
    assert seen.wait(5)
    # elapsed ~0.2 s for a quarter: about 0.6 s left
    assert 0.4 < job.eta_s < 1.5
    release.set()
    assert job.wait(5)


def test_cancel_running_job_stops_at_safe_point():
    jm = JobManager()
    started = threading.Event()

    def work(progress, cancel):
        started.set()
        for _ in range(500):
            cancel.raise_if_cancelled()
            time.sleep(0.01)
        return "finished"

    job = jm.submit("train", "Training", work, gpu=True)
    assert started.wait(5)
    jm.cancel(job.id)
    assert job.wait(5)
    assert job.status == JobStatus.CANCELLED and job.result is None
    assert "cancelled after" in job.summary


def test_gpu_jobs_run_one_at_a_time_and_queue_in_order():
    jm = JobManager()
    running, order = [], []
    lock = threading.Lock()

    def make(name):
        def work(progress, cancel):
            with lock:
                running.append(name)
                assert len(running) == 1, f"two GPU jobs at once: {running}"
            order.append(name)
            time.sleep(0.05)
            with lock:
                running.remove(name)
        return work

    jobs = [jm.submit("tag", f"job{i}", make(f"job{i}"), gpu=True) for i in range(4)]
    assert jm.queue_position(jobs[3].id) in (2, 3)
    assert all(j.wait(5) for j in jobs)
    assert order == ["job0", "job1", "job2", "job3"]
    assert all(j.status == JobStatus.DONE for j in jobs)


def test_cpu_jobs_do_not_wait_for_the_gpu_queue():
    jm = JobManager()
    release = threading.Event()
    gpu = jm.submit("train", "long", lambda p, c: release.wait(5), gpu=True)
    cpu = jm.submit("scrape", "scrape", lambda p, c: "ok")
    assert cpu.wait(5) and cpu.status == JobStatus.DONE
    assert gpu.status == JobStatus.RUNNING
    release.set()
    assert gpu.wait(5)


def test_cancel_queued_job_never_runs():
    jm = JobManager()
    release = threading.Event()
    ran = []
    first = jm.submit("train", "first", lambda p, c: release.wait(5), gpu=True)
    second = jm.submit("train", "second", lambda p, c: ran.append(1), gpu=True)
    jm.cancel(second.id)
    assert second.status == JobStatus.CANCELLED and "before it started" in second.summary
    release.set()
    assert first.wait(5)
    time.sleep(0.05)
    assert ran == []


def test_studio_error_becomes_plain_message(tmp_path):
    jm = JobManager(log_dir=tmp_path)

    def work(progress, cancel):
        raise StudioError("The dataset folder has no images.", "Import some first.")

    job = jm.submit("train", "Training", work)
    assert job.wait(5)
    assert job.status == JobStatus.ERROR
    assert job.error == "The dataset folder has no images. Import some first."
    assert "Traceback" not in job.error


def test_bug_becomes_apology_with_traceback_on_the_server_only(tmp_path, capsys):
    jm = JobManager(log_dir=tmp_path)

    def work(progress, cancel):
        return 1 / 0

    job = jm.submit("train", "Training", work)
    assert job.wait(5)
    assert job.status == JobStatus.ERROR
    assert job.error == (f"Something went wrong (ZeroDivisionError: division by zero). The details are in the "
                         f"server's console and in the job log {job.log_path.name} (job {job.id}).")
    assert str(tmp_path) not in job.error
    shown = "\n".join(job.log_tail)  # what the page and the API show
    assert f"ZeroDivisionError (job {job.id})" in shown and "Traceback" not in shown and __file__ not in shown
    assert "Traceback (most recent call last)" in job.log_path.read_text()
    err = capsys.readouterr().err
    assert f"job {job.id} (Training) failed" in err and "Traceback (most recent call last)" in err and "1 / 0" in err


def test_reattach_finds_the_running_job():
    jm = JobManager()
    release = threading.Event()
    done = jm.submit("train", "old", lambda p, c: None, gpu=True)
    assert done.wait(5)
    running = jm.submit("train", "current", lambda p, c: release.wait(5), gpu=True)
    queued = jm.submit("train", "next", lambda p, c: None, gpu=True)
    time.sleep(0.05)
    assert jm.active("train") is running
    assert jm.active("tag") is None
    release.set()
    assert running.wait(5) and queued.wait(5)
    assert jm.active("train") is None
    assert [j.title for j in jm.jobs("train")] == ["next", "current", "old"]
