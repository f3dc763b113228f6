"""The tab under gradio 3.41.2 (AUTOMATIC1111 1.10) and 4.40 (Forge): builds, callbacks, served over HTTP.

CI runs this file in both environments (see .ci/run); everything here is marked `gradio3`.
"""

import json
import threading
import time
import urllib.request

import gradio as gr
import pytest

from lora_trainer.jobs import JobStatus
from lora_trainer.progress import ProgressEvent
from lora_trainer.project import create_project
from lora_trainer.ui.app import build_tab
from lora_trainer.ui.context import StudioContext
from lora_trainer.ui.job_panel import progress_html
from tests.ui_driver import component, handlers, is_update, trigger

pytestmark = pytest.mark.gradio3


@pytest.fixture
def ctx(tmp_path):
    return StudioContext.for_root(tmp_path / "studio")


def test_tab_builds_with_sub_tabs_and_job_panel(ctx):
    tab = build_tab(ctx)
    assert isinstance(tab, gr.Blocks)
    for elem_id in ["lora_studio_project", "lora_studio_create", "lora_studio_dataset_tab", "lora_studio_train_tab",
                    "lora_studio_compare_tab", "lora_studio_progress", "lora_studio_cancel", "lora_studio_poll"]:
        component(tab, elem_id)


def test_create_project_callback(ctx):
    tab = build_tab(ctx)
    dropdown, message, name = trigger(tab, "lora_studio_create", "click", "alice")
    assert is_update(dropdown) and dropdown["value"] == "alice" and dropdown["choices"] in (["alice"], [("alice", "alice")])
    assert "Created alice" in message and name == ""
    assert (ctx.root / "alice" / "dataset").is_dir()


def test_create_project_with_bad_name_explains(ctx):
    tab = build_tab(ctx)
    dropdown, message, name = trigger(tab, "lora_studio_create", "click", "../evil")
    assert "ls-error" in message and "&#x27;..&#x27;" in message and "Try" in message
    assert name == "../evil"  # kept so the user can fix it
    assert not (ctx.root.parent / "evil").exists()


def test_refresh_lists_projects_made_elsewhere(ctx):
    tab = build_tab(ctx)
    create_project(ctx.root, "bob")
    (dropdown,) = trigger(tab, "lora_studio_refresh", "click", None)
    assert dropdown["value"] == "bob"


def test_a_reloaded_page_gets_the_project_last_chosen(ctx):
    """lora_studio.js presses 🔄 once when a page (re)loads, with the value the tab was built with."""
    for name in ("alice", "bob", "carol"):
        create_project(ctx.root, name)
    tab = build_tab(ctx)
    select = next(fn for fn, _, outputs in handlers(tab, "lora_studio_project", "change")
                  if [getattr(o, "elem_id", None) for o in outputs] == ["lora_studio_message"])
    select("bob")
    (dropdown,) = trigger(tab, "lora_studio_refresh", "click", "alice")  # the built value: first project
    assert dropdown["value"] == "alice"  # a value still there is kept (a user's own choice)
    (dropdown,) = trigger(tab, "lora_studio_refresh", "click", None)  # a tab built before any project
    assert dropdown["value"] == "bob"
    trigger(tab, "lora_studio_create", "click", "dave")
    (dropdown,) = trigger(tab, "lora_studio_refresh", "click", None)
    assert dropdown["value"] == "dave"


def test_dataset_overview_follows_the_project(ctx):
    p = create_project(ctx.root, "alice")
    (p.dataset_dir / "1.png").write_bytes(b"x")
    (p.dataset_dir / "1.txt").write_text("a")
    tab = build_tab(ctx)
    # several sub-tabs follow the project; call those that take only its name
    outs = [fn("alice") for fn, inputs, outputs in handlers(tab, "lora_studio_project", "change") if len(inputs) == 1]
    assert any("**1 images**, 1 with captions" in str(o) for o in outs)


def test_job_panel_reattaches_and_cancels(ctx):
    release = threading.Event()

    def work(progress, cancel):
        progress(ProgressEvent(fraction=0.5, text="half way"))
        while not release.wait(0.01):
            cancel.raise_if_cancelled()

    job = ctx.jobs.submit("train", "Training alice", work, gpu=True)
    time.sleep(0.1)
    tab = build_tab(ctx)  # as after a page reload: the panel knows no job id yet
    job_id, html, log, cancel = trigger(tab, "lora_studio_poll", "click", "")
    assert job_id == job.id and "Training alice: 50%" in html and "half way" in html
    assert cancel["visible"] is True
    trigger(tab, "lora_studio_cancel", "click", job.id)
    assert job.wait(5) and job.status == JobStatus.CANCELLED
    job_id, html, log, cancel = trigger(tab, "lora_studio_poll", "click", job.id)
    assert "cancelled" in html and cancel["visible"] is False


def test_dataset_check_runs_as_a_job(ctx):
    p = create_project(ctx.root, "alice")
    (p.dataset_dir / "1.png").write_bytes(b"x")
    tab = build_tab(ctx)
    (job_id,) = trigger(tab, "lora_studio_dataset_check", "click", "alice")
    job = ctx.jobs.get(job_id)
    assert job.wait(5) and job.status == JobStatus.DONE
    assert job.summary.endswith("1 images checked")
    assert "1.png has no caption file" in "\n".join(job.log_tail)


def test_progress_html_states():
    assert "No job running" in progress_html(None)


def test_standalone_app_serves_the_tab_over_loopback(ctx):
    from tests.gradio_wire import served, studio_app

    with served(studio_app(ctx)) as base:
        page = urllib.request.urlopen(f"{base}/", timeout=10).read().decode()
        assert "function askProjectsOnce()" in page  # javascript/lora_studio.js injected, as the WebUI does
        assert "#lora_studio_poll" in page  # style.css injected
        config = json.loads(urllib.request.urlopen(f"{base}/config", timeout=10).read())
        elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert {"lora_studio_project", "lora_studio_progress", "lora_studio_dataset_check"} <= elem_ids
