"""The duplicate grid as a user works it: dataset.js turns clicks on thumbnails into keep/remove.

Four demo pictures and an exact copy of one; "Identical files only" needs no CLIP model. The grid
shows the pair with the kept one first; a click switches a picture between keep and remove (the
marks follow: `.ls-dup-keep` outlined, `.ls-dup-remove` dimmed), twice on the same picture too;
the one finally marked goes to the trash with its caption and Restore brings it back.
"""

from __future__ import annotations

import json
import shutil

import pytest

from lora_trainer.demo.dataset import make_demo_dataset
from lora_trainer.project import create_project

from .test_flow import click, open_section, panel_job, wait_job_done

pytestmark = pytest.mark.gradio3  # also run in A1111's gradio 3.41.2

GRID = "#lora_studio_dataset_dedupe_gallery"


def marks(page) -> list[tuple[str, str]]:
    """(the mark dataset.js gave each thumbnail, its caption), in grid order."""
    return page.evaluate(f"""() => [...document.querySelector("{GRID}").querySelectorAll(".thumbnail-item")].map(item => [
        item.classList.contains("ls-dup-remove") ? "remove" : item.classList.contains("ls-dup-keep") ? "keep" : "",
        (item.querySelector(".caption-label") || {{textContent: ""}}).textContent.trim()])""")


def wait_marks(page, expected: list[str]) -> list[tuple[str, str]]:
    page.wait_for_function(f"""() => {{
        const items = [...document.querySelector("{GRID}").querySelectorAll(".thumbnail-item")];
        const got = items.map(i => i.classList.contains("ls-dup-remove") ? "remove" : i.classList.contains("ls-dup-keep") ? "keep" : "");
        return JSON.stringify(got) === '{json.dumps(expected, separators=(",", ":"))}';
    }}""", timeout=15_000)
    return marks(page)


def click_thumbnail(page, index: int) -> None:
    page.locator(f"{GRID} .thumbnail-item").nth(index).click()


def test_click_to_keep_or_remove(page, studio):
    project = create_project(studio.root, "dups")
    make_demo_dataset(project.dataset_dir, count=4, size=64)
    shutil.copy(project.dataset_dir / "demo_01.png", project.dataset_dir / "demo_01 copy.png")
    shutil.copy(project.dataset_dir / "demo_01.txt", project.dataset_dir / "demo_01 copy.txt")

    page.goto(studio.url)
    page.locator("#lora_studio_tabs").wait_for()
    page.wait_for_function("() => document.querySelector('#lora_studio_project input').value === 'dups'")
    open_section(page, "4. Find duplicates")
    page.locator("#lora_studio_dataset_dedupe_exact input[type=checkbox]").check()
    before = panel_job(page)
    click(page, "lora_studio_dataset_dedupe_find")
    wait_job_done(page, "finding duplicates", before)

    first = wait_marks(page, ["keep", "remove"])
    assert all("identical" in caption for _, caption in first), first
    kept, removed = (caption.rsplit(" · ", 1)[1] for _, caption in first)
    assert {kept, removed} == {"demo_01.png", "demo_01 copy.png"}

    click_thumbnail(page, 1)  # the removed one: now both are kept
    wait_marks(page, ["keep", "keep"])
    click_thumbnail(page, 0)  # the first kept one goes instead
    wait_marks(page, ["remove", "keep"])
    click_thumbnail(page, 0)  # the same picture again: a second click is not lost
    wait_marks(page, ["keep", "keep"])
    click_thumbnail(page, 0)
    wait_marks(page, ["remove", "keep"])
    assert "1 would go to the trash" in page.locator("#lora_studio_dataset_dedupe_message").first.inner_text()

    click(page, "lora_studio_dataset_dedupe_apply")
    page.locator("#lora_studio_dataset_dedupe_message .ls-ok, #lora_studio_dataset_dedupe_message .ls-info",
                 has_text="Moved 1 images").first.wait_for()
    gone = project.dataset_dir / kept
    assert not gone.exists() and not gone.with_suffix(".txt").exists()
    assert (project.dataset_dir / removed).is_file()
    assert sorted(p.name for p in project.dir.joinpath(".trash").rglob(kept)), "the file is in the trash"

    click(page, "lora_studio_dataset_dedupe_restore")
    for _ in range(100):
        if gone.exists():
            break
        page.wait_for_timeout(100)
    assert gone.is_file() and gone.with_suffix(".txt").is_file()
