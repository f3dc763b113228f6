"""The guide's whole flow, tried in a real browser as a user would: Dataset -> Train -> Compare.

A fresh studio root on loopback; the demo pictures, the tiny ONNX tagger and the tiny demo
checkpoint are made in code under that root. Each step clicks and types through the page, waits for
what the user would wait for (the job panel, a message), then checks the files on disk. Screenshots
of each sub-tab go to test-artifacts/browser/ (the README's docs/screenshots/ are copies of them).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from lora_trainer.demo.dataset import make_demo_dataset

PROJECT = "flow"
# What a user sees when the server let an exception through: gradio's error toast, or a traceback.
BROKEN = 'text=/Traceback \\(most recent call last\\)/'


# ----------------------------------------------------------------------------------------------
# Small page helpers (gradio puts elem_id on the component's wrapper; inputs are inside it)


def field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def fill(page, elem_id: str, text: str) -> None:
    box = field(page, elem_id)
    box.fill(text)
    box.dispatch_event("input")


def click(page, elem_id: str) -> None:
    page.locator(f"#{elem_id}").click()


def open_tab(page, label: str) -> None:
    page.get_by_role("tab", name=label, exact=True).click()


def open_section(page, title: str) -> None:
    """Open an accordion by its title (clicking an open one would close it)."""
    head = page.locator(".label-wrap", has_text=title).first
    if "open" not in (head.get_attribute("class") or ""):
        head.click()


def wait_job_done(page, what: str, timeout_s: float = 90) -> str:
    """Wait until the job panel shows a finished job; fail with its text if it ended in an error."""
    bar = page.locator("#lora_studio_progress .ls-progress")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        cls = bar.get_attribute("class") or ""
        if "ls-status-done" in cls:
            return bar.inner_text()
        if "ls-status-error" in cls or "ls-status-cancelled" in cls:
            pytest.fail(f"{what}: the job ended with {bar.inner_text()!r}")
        page.wait_for_timeout(250)
    pytest.fail(f"{what}: no finished job after {timeout_s:.0f} s; the panel says {bar.inner_text()!r}")


def assert_no_error_shown(page, step: str) -> None:
    broken = page.locator(BROKEN)
    assert broken.count() == 0, f"{step}: a traceback is on the page: {broken.first.inner_text()[:400]}"
    toasts = page.locator(".toast-body.error")
    assert toasts.count() == 0, f"{step}: gradio shows an error: {toasts.first.inner_text()[:400]}"


def shot(page, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def captions(dataset_dir: Path) -> dict[str, list[str]]:
    return {p.stem: [t.strip() for t in p.read_text("utf-8").split(",") if t.strip()] for p in sorted(dataset_dir.glob("*.txt"))}


# ----------------------------------------------------------------------------------------------
# The flow


def make_inputs(root: Path) -> dict[str, Path]:
    """What a user would bring: a folder of pictures, a tagger folder, a checkpoint (all tiny)."""
    from tests.tiny_models import write_tiny_tagger

    pictures = root / "incoming"
    make_demo_dataset(pictures, count=6, size=64)
    for txt in pictures.glob("*.txt"):  # the user's own pictures come without captions
        txt.unlink()
    tagger = write_tiny_tagger(root / "_models" / "tiny-tagger")
    return {"pictures": pictures, "tagger": tagger}


def step_create_project(page, studio) -> Path:
    fill(page, "lora_studio_new_name", PROJECT)
    click(page, "lora_studio_create")
    page.locator("#lora_studio_message .ls-info", has_text=f"Created {PROJECT}").wait_for()
    assert field(page, "lora_studio_project").input_value() == PROJECT
    project_dir = studio.root / PROJECT
    assert (project_dir / "project.toml").is_file()
    return project_dir


def step_import(page, pictures: Path, dataset_dir: Path) -> None:
    open_section(page, "2. Import images")
    fill(page, "lora_studio_dataset_import_path", str(pictures))
    click(page, "lora_studio_dataset_import")
    wait_job_done(page, "import")
    page.locator("#lora_studio_dataset_import_message .ls-ok").wait_for()
    page.locator("#lora_studio_dataset_overview", has_text="6 images").wait_for()
    assert sorted(p.name for p in dataset_dir.glob("*.png")) == sorted(p.name for p in pictures.glob("*.png"))


def step_tag(page, tagger: Path, dataset_dir: Path) -> dict[str, list[str]]:
    open_section(page, "5. Tag / caption images")
    fill(page, "lora_studio_dataset_tag_model", str(tagger))
    click(page, "lora_studio_dataset_tag")
    wait_job_done(page, "tagging")
    page.locator("#lora_studio_dataset_tag_message .ls-ok", has_text="Tagged 6 images").wait_for()
    tagged = captions(dataset_dir)
    assert len(tagged) == 6 and sum(map(bool, tagged.values())) >= 4, tagged  # a dark picture may get no tag
    assert any("theme" in t for tags in tagged.values() for t in tags), tagged  # the tiny tagger's colour tags
    return tagged


def step_merge(page, dataset_dir: Path, before: dict[str, list[str]]) -> tuple[str, str]:
    open_section(page, "6. Edit tags")
    counts: dict[str, int] = {}
    for tags in before.values():
        for t in tags:
            counts[t] = counts.get(t, 0) + 1
    a, b = sorted(counts, key=lambda t: (-counts[t], t))[:2]  # the two commonest tags
    fill(page, "lora_studio_dataset_tags_merge_sources", f"{a}, {b}")
    fill(page, "lora_studio_dataset_tags_merge_target", "merged colour")
    click(page, "lora_studio_dataset_tags_merge")
    page.locator("#lora_studio_dataset_tags_message .ls-ok").wait_for()
    page.locator("#lora_studio_dataset_tags_table", has_text="merged colour").wait_for()
    after = captions(dataset_dir)
    assert after != before
    for stem, tags in before.items():
        had = a in tags or b in tags
        assert a not in after[stem] and b not in after[stem], (stem, after[stem])
        assert after[stem].count("merged colour") == (1 if had else 0), (stem, after[stem])
    return a, b


def test_dataset_train_compare_flow(page, studio, artifacts):
    started = time.time()
    inputs = make_inputs(studio.root)
    page.goto(studio.url)
    page.locator("#lora_studio_tabs").wait_for()
    assert_no_error_shown(page, "start")

    project_dir = step_create_project(page, studio)
    dataset_dir = project_dir / "dataset"
    step_import(page, inputs["pictures"], dataset_dir)
    tagged = step_tag(page, inputs["tagger"], dataset_dir)
    step_merge(page, dataset_dir, tagged)
    assert_no_error_shown(page, "dataset")
    shot(page, artifacts, "dataset")

    print(f"browser flow took {time.time() - started:.1f} s")
