"""The guide's whole flow, tried in a real browser as a user would: Dataset -> Train -> Compare.

A fresh studio root on loopback; the demo pictures, the tiny ONNX tagger and the tiny demo
checkpoint are made in code under that root. Each step clicks and types through the page, waits for
what the user would wait for (the job panel, a message), then checks the files on disk. Mid-training
the page is reloaded, as a user closing and reopening the browser would: the job panel must find
the running training by itself. Polled panels must never look dimmed. Screenshots
of each sub-tab go to test-artifacts/browser/ (the README's docs/screenshots/ are copies of them).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from lora_trainer.demo.dataset import make_demo_dataset

pytestmark = pytest.mark.gradio3  # also run in A1111's gradio 3.41.2 (./studio.sh test runs both)

PROJECT = "flow"
VIEWPORT_WIDTH = 1366  # conftest.VIEWPORT
# What a user sees when the server let an exception through: gradio's error toast, or a traceback.
BROKEN = 'text=/Traceback \\(most recent call last\\)/'


# ----------------------------------------------------------------------------------------------
# Small page helpers (gradio puts elem_id on the component's wrapper; inputs are inside it. gradio
# 3 puts an HTML component's elem_id on its inner div too, hence the `.first`s.)


def field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def fill(page, elem_id: str, text: str) -> None:
    box = field(page, elem_id)
    box.fill(text)
    box.dispatch_event("input")


def click(page, elem_id: str) -> None:
    page.locator(f"#{elem_id}").click()


def set_number(page, elem_id: str, value) -> None:
    """A number box or a slider's number box: gradio takes the value when the box loses focus."""
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")


def pick(page, elem_id: str, choice: str) -> None:
    """Choose a dropdown option by its exact text."""
    field(page, elem_id).click()
    # gradio 4 gives the options role=option, gradio 3 role=button (and a ✓ in the text): both
    # label them with aria-label
    page.locator(f'ul.options li[aria-label="{choice}"]').first.click()
    assert field(page, elem_id).input_value() == choice


def open_tab(page, label: str) -> None:
    """A sub-tab's button (gradio 4 gives it role=tab, gradio 3 does not: both have .tab-nav)."""
    page.locator("#lora_studio_tabs .tab-nav button").filter(has_text=re.compile(rf"^\s*{label}\s*$")).first.click()


def open_section(page, title: str) -> None:
    """Open an accordion by its title (clicking an open one would close it)."""
    head = page.locator(".label-wrap", has_text=title).first
    if "open" not in (head.get_attribute("class") or ""):
        head.click()


def panel_job(page) -> tuple[str, str, str]:
    """(the id of the job the job panel watches (a hidden textbox), its bar's class, its bar's text),
    read at one instant."""
    return page.evaluate("""() => {
        const bar = document.querySelector("#lora_studio_progress .ls-progress");
        const id = document.querySelector("#lora_studio_job_id textarea, #lora_studio_job_id input");
        return [id ? id.value : "", bar ? bar.className : "", bar ? bar.textContent : ""];
    }""")


def wait_job_done(page, what: str, before: tuple, timeout_s: float = 90, seen: list[str] | None = None) -> str:
    """Wait until the job panel shows a job other than `before` (from panel_job) finished; fail with
    its text if it ended in an error. `seen` collects the distinct texts the bar showed on the way."""
    deadline = time.time() + timeout_s
    # A Start button sets the watched id at once; the bar follows at the next poll (once a second).
    while (now := panel_job(page))[0] in ("", before[0]) or now[1:] == before[1:]:
        if time.time() > deadline:
            pytest.fail(f"{what}: the job panel never showed the new job")
        page.wait_for_timeout(100)
    while time.time() < deadline:
        _, cls, text = panel_job(page)
        if seen is not None and "ls-status-running" in cls and (not seen or seen[-1] != text):
            seen.append(text)
        if "ls-status-done" in cls:
            return text
        if "ls-status-error" in cls or "ls-status-cancelled" in cls:
            pytest.fail(f"{what}: the job ended with {text!r}")
        page.wait_for_timeout(250)
    pytest.fail(f"{what}: no finished job after {timeout_s:.0f} s; the panel says {panel_job(page)[2]!r}")


def wait_job_running(page, before: tuple, seen: list[str], texts: int, timeout_s: float = 60) -> None:
    """Wait until the job panel's bar showed `texts` distinct texts of a new running job."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        now = panel_job(page)
        if now[0] not in ("", before[0]) and "ls-status-running" in now[1] and (not seen or seen[-1] != now[2]):
            seen.append(now[2])
            if len(seen) >= texts:
                return
        page.wait_for_timeout(250)
    pytest.fail(f"the job panel showed {seen} in {timeout_s:.0f} s, not {texts} texts of a running job")


def assert_no_error_shown(page, step: str) -> None:
    broken = page.locator(BROKEN)
    assert broken.count() == 0, f"{step}: a traceback is on the page: {broken.first.inner_text()[:400]}"
    toasts = page.locator(".toast-body.error")
    assert toasts.count() == 0, f"{step}: gradio shows an error: {toasts.first.inner_text()[:400]}"


# How visible the panel's text is: for each element of its HTML/Markdown content (`.prose`, in
# gradio 3 and 4) holding text, the product of its own and its ancestors' opacity up to the panel.
# (gradio's status tracker, hidden at opacity 0, is outside .prose.)
TEXT_OPACITY = """e => {
    const leaves = [...e.querySelectorAll('.prose, .prose *')].filter(d => d.childElementCount === 0 && d.textContent.trim());
    const seen = d => { let o = 1; for (let x = d; x && x !== e.parentElement; x = x.parentElement) o *= +getComputedStyle(x).opacity; return o; };
    return leaves.length ? Math.min(...leaves.map(seen)) : 1;
}"""


def assert_not_dimmed(page, elem_id: str, samples: int = 10) -> None:
    """The panel never looks disabled while the polls refresh it (gradio dims a pending output to
    20%; style.css keeps ours at full strength). Sampled over about two seconds of polling."""
    lowest = 1.0
    for _ in range(samples):
        lowest = min(lowest, page.locator(f"#{elem_id}").first.evaluate(TEXT_OPACITY))
        page.wait_for_timeout(200)
    assert lowest == 1.0, f"#{elem_id} was shown at opacity {lowest} while polled"


def shot(page, artifacts: Path, name: str, bottom: str) -> Path:
    """Two pictures of the sub-tab shown: `<name>.png`, the window as a 1366x768 laptop shows it
    from the sub-tab's top, and `<name>-tab.png`, from the project row down to the bottom of the
    `bottom` element. With LORA_STUDIO_SCREENSHOTS=<folder> the second one is also saved there,
    as a 256-colour PNG for the README (docs/screenshots)."""
    from PIL import Image

    page.locator("#lora_studio_tabs").scroll_into_view_if_needed()
    page.evaluate("() => window.scrollTo(0, document.querySelector('#lora_studio_tabs').getBoundingClientRect().top + window.scrollY - 8)")
    page.wait_for_timeout(300)  # let gradio finish re-laying out after the scroll
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path))
    top = page.locator("#lora_studio_project_row").first.bounding_box()
    end = page.locator(bottom).first.bounding_box()
    scroll = page.evaluate("() => window.scrollY")
    y0 = max(0, top["y"] + scroll - 8)
    clip = {"x": 0, "y": y0, "width": VIEWPORT_WIDTH, "height": end["y"] + end["height"] + scroll + 16 - y0}
    tab = artifacts / f"{name}-tab.png"
    page.screenshot(path=str(tab), full_page=True, clip=clip)
    readme = os.environ.get("LORA_STUDIO_SCREENSHOTS")
    if readme:
        with Image.open(tab) as im:
            small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            Path(readme).mkdir(parents=True, exist_ok=True)
            small.save(Path(readme) / f"{name}.png", optimize=True)
    return path


def captions(dataset_dir: Path) -> dict[str, list[str]]:
    return {p.stem: [t.strip() for t in p.read_text("utf-8").split(",") if t.strip()] for p in sorted(dataset_dir.glob("*.txt"))}


# ----------------------------------------------------------------------------------------------
# The flow


def make_inputs(root: Path) -> dict[str, Path]:
    """What a user would bring: a folder of pictures, a tagger folder, a checkpoint (all tiny)."""
    from lora_trainer.models.demo import write_demo_checkpoint
    from tests.tiny_models import write_tiny_tagger

    pictures = root / "incoming"
    make_demo_dataset(pictures, count=6, size=64)
    for txt in pictures.glob("*.txt"):  # the user's own pictures come without captions
        txt.unlink()
    tagger = write_tiny_tagger(root / "_models" / "tiny-tagger")
    checkpoint = write_demo_checkpoint(root / "_models" / "tiny-sd15.safetensors", "sd15", dtype="fp32")
    return {"pictures": pictures, "tagger": tagger, "checkpoint": checkpoint}


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
    before = panel_job(page)
    click(page, "lora_studio_dataset_import")
    wait_job_done(page, "import", before)
    page.locator("#lora_studio_dataset_import_message .ls-ok").wait_for()
    page.locator("#lora_studio_dataset_overview", has_text="6 images").first.wait_for()
    assert sorted(p.name for p in dataset_dir.glob("*.png")) == sorted(p.name for p in pictures.glob("*.png"))


def step_tag(page, tagger: Path, dataset_dir: Path) -> dict[str, list[str]]:
    open_section(page, "5. Tag / caption images")
    fill(page, "lora_studio_dataset_tag_model", str(tagger))
    before = panel_job(page)
    click(page, "lora_studio_dataset_tag")
    wait_job_done(page, "tagging", before)
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
    page.locator("#lora_studio_dataset_tags_table", has_text="merged colour").first.wait_for()
    after = captions(dataset_dir)
    assert after != before
    for stem, tags in before.items():
        had = a in tags or b in tags
        assert a not in after[stem] and b not in after[stem], (stem, after[stem])
        assert after[stem].count("merged colour") == (1 if had else 0), (stem, after[stem])
    return a, b


EPOCHS = 2
REPEATS = 2  # 6 pictures x 2 repeats / batch 1 = 12 steps per epoch (about 1 s each on 2 CPU cores)


def glance_at_train_tab(page) -> None:
    """Show the Train tab once and come back. The first time it is shown, train.js presses its
    Reload (up to 2 s later), which would overwrite anything typed into the form before; a user
    who waits sees the same. Seen done here, the later steps type into a settled form."""
    page.evaluate("""() => document.addEventListener("click", (e) => {
        if (e.target.closest && e.target.closest("#lora_studio_train_load")) window.lsTrainReloads = (window.lsTrainReloads || 0) + 1;
    }, true)""")
    open_tab(page, "Train")
    page.wait_for_function("() => window.lsTrainReloads >= 1", timeout=10_000)
    page.locator("#lora_studio_train_message", has_text="No saved settings yet").first.wait_for()
    open_tab(page, "Dataset")


def step_train(page, studio, checkpoint: Path, output_dir: Path):
    open_tab(page, "Train")
    fill(page, "lora_studio_train_checkpoint", str(checkpoint))
    set_number(page, "lora_studio_train_resolution", 256)
    set_number(page, "lora_studio_train_repeats", REPEATS)
    set_number(page, "lora_studio_train_max_train_epochs", EPOCHS)
    set_number(page, "lora_studio_train_train_batch_size", 1)
    pick(page, "lora_studio_train_optimizer", "AdamW")
    open_section(page, "Expert settings")
    page.locator("#lora_studio_train_bucket_no_upscale input[type=checkbox]").check()  # the 64 px pictures stay 64 px
    set_number(page, "lora_studio_train_max_token_length", 75)  # one text-encoder pass per caption, not three
    pick(page, "lora_studio_train_mixed_precision", "no")  # plain float32, as on a CPU anyway
    click(page, "lora_studio_train_check")
    page.locator("#lora_studio_train_preview", has_text=f"{EPOCHS * 6 * REPEATS} total steps").first.wait_for()
    assert page.locator("#lora_studio_train_problems .ls-error").count() == 0, page.locator("#lora_studio_train_problems").first.inner_text()

    before = panel_job(page)
    click(page, "lora_studio_train_start")
    page.locator("#lora_studio_train_message", has_text="started").first.wait_for()
    seen: list[str] = []
    wait_job_running(page, before, seen, texts=2)
    # A reload (or a closed and reopened browser) mid-training: the page finds the job by itself.
    watched = panel_job(page)[0]
    page.reload()
    page.locator("#lora_studio_tabs").wait_for()
    page.wait_for_function("""id => {
        const box = document.querySelector("#lora_studio_job_id textarea, #lora_studio_job_id input");
        const bar = document.querySelector("#lora_studio_progress .ls-progress");
        return box && box.value === id && bar && /ls-status-(running|done)/.test(bar.className);
    }""", arg=watched, timeout=15_000)
    open_tab(page, "Train")
    wait_job_done(page, "training", ("", "", ""), timeout_s=150, seen=seen)
    job = next(j for j in studio.ctx.jobs.jobs() if j.kind == "train")
    print(f"training took {job.elapsed_s:.1f} s; the bar showed {len(seen)} texts")
    assert len(seen) >= 2, f"the progress bar did not move: {seen}"
    # While training, "NN% ... step S/T": both only go up (the set-up before shows its own fraction).
    steps = [(int(m.group(1)), int(m.group(2))) for t in seen if (m := re.search(r"(\d+)% .*step (\d+)/", t))]
    assert len(steps) >= 2 and steps == sorted(steps) and steps[-1][1] > steps[0][1], seen

    summary = page.locator("#lora_studio_train_summary", has_text=f"Finished {EPOCHS} of {EPOCHS} epochs").first
    summary.wait_for()
    assert_not_dimmed(page, "lora_studio_train_summary")
    epochs = [output_dir / f"{PROJECT}-{i:02d}.safetensors" for i in range(1, EPOCHS + 1)]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in epochs), sorted(output_dir.glob("*"))
    page.locator("#lora_studio_train_epochs", has_text=epochs[-1].name).first.wait_for()
    chart = page.locator("#lora_studio_train_chart img")
    chart.wait_for()
    assert chart.evaluate("img => img.naturalWidth") > 100
    losses = [h["loss"] for h in job.history if "loss" in h]
    assert len(losses) >= EPOCHS * 6 * REPEATS // 2, job.history[:3]  # the chart's data: one point per step
    return epochs


def step_compare(page, project_dir: Path) -> Path:
    open_tab(page, "Compare")
    click(page, "lora_studio_compare_refresh")
    page.locator("#lora_studio_compare_found", has_text=f"{PROJECT}-02").first.wait_for()
    fill(page, "lora_studio_compare_weights", "0.5, 1")
    set_number(page, "lora_studio_compare_steps", 2)
    set_number(page, "lora_studio_compare_width", 64)
    set_number(page, "lora_studio_compare_height", 64)
    before = panel_job(page)
    click(page, "lora_studio_compare_render")
    page.locator("#lora_studio_compare_message", has_text="Rendering a 2x2 grid").first.wait_for()
    wait_job_done(page, "grid", before)
    page.locator("#lora_studio_compare_message .ls-ok", has_text="Wrote").wait_for()
    grids = sorted(project_dir.rglob("grid-*.png"))
    assert len(grids) == 1, grids
    from PIL import Image

    with Image.open(grids[0]) as im:
        assert im.width > 2 * 64 and im.height > 2 * 64  # 2x2 cells of 64 px and the labels
    shown = page.locator("#lora_studio_compare_image img")
    shown.wait_for()
    assert shown.evaluate("img => img.naturalWidth") > 128
    # A click on a cell gives its parameters (what the WebUI's "Send to txt2img" pastes).
    page.locator("#lora_studio_compare_cells .thumbnail-item").first.click()
    params = field(page, "lora_studio_compare_cell_params")
    page.wait_for_function("box => box.value.includes('<lora:')", arg=params.element_handle(), timeout=15_000)
    text = params.input_value()
    assert f"<lora:{PROJECT}-01:0.5>" in text and "Steps: 2, " in text and "Size: 64x64" in text, text
    return grids[0]


def test_dataset_train_compare_flow(page, studio, artifacts):
    started = time.time()
    inputs = make_inputs(studio.root)
    page.goto(studio.url)
    page.locator("#lora_studio_tabs").wait_for()
    assert_no_error_shown(page, "start")

    project_dir = step_create_project(page, studio)
    glance_at_train_tab(page)
    dataset_dir = project_dir / "dataset"
    step_import(page, inputs["pictures"], dataset_dir)
    tagged = step_tag(page, inputs["tagger"], dataset_dir)
    step_merge(page, dataset_dir, tagged)
    assert_no_error_shown(page, "dataset")
    for title in ("2. Import images", "5. Tag / caption images"):  # done: fold them, as a user would
        page.locator(".label-wrap", has_text=title).first.click()
    shot(page, artifacts, "dataset", bottom="#lora_studio_dataset_tags_history")

    step_train(page, studio, inputs["checkpoint"], project_dir / "output")
    assert_no_error_shown(page, "train")
    shot(page, artifacts, "train", bottom="#lora_studio_train_epochs")

    step_compare(page, project_dir)
    assert_no_error_shown(page, "compare")
    shot(page, artifacts, "compare", bottom="#lora_studio_compare_image")

    print(f"browser flow took {time.time() - started:.1f} s")
