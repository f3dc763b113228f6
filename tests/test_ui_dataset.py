"""The Dataset sub-tab under gradio 3.41.2 and 4.40: its real callbacks, driven by elem_id.

Each test presses the buttons a user would, waits for the job, then hands the finished job to the
tab the way the job panel's poll does (`lora_studio_progress.change`), and checks files and views.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from lora_trainer import trash
from lora_trainer.jobs import JobStatus
from lora_trainer.project import create_project
from lora_trainer.settings import StudioSettings
from lora_trainer.ui.app import build_tab
from lora_trainer.ui.context import StudioContext
from tests.ui_driver import component, handlers, is_update, trigger

pytestmark = pytest.mark.gradio3

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture
def ctx(tmp_path):
    return StudioContext.for_root(tmp_path / "studio")


@pytest.fixture
def project(ctx):
    return create_project(ctx.root, "alice")


def image(path, color, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def by_id(out: dict) -> dict:
    """A dict returned to gradio ({component: value}) keyed by elem_id."""
    return {c.elem_id: v for c, v in out.items()}


def finish(tab, job_id: str, name: str = "alice", seen: str = "") -> dict:
    """Wait for the job, then let the tab see it finish as the job panel's poll would."""
    assert isinstance(job_id, str) and job_id, f"no job was started: {job_id!r}"
    fn, _inputs, _outputs = handlers(tab, "lora_studio_progress", "change")[0]
    tab_ctx_job = fn.__self__.ctx.jobs.get(job_id)
    assert tab_ctx_job.wait(60), "job did not finish"
    return by_id(fn(job_id, name, seen))


def job_of(ctx, job_id):
    job = ctx.jobs.get(job_id)
    assert job.wait(60)
    return job


def value(update_or_value):
    return update_or_value["value"] if is_update(update_or_value) else update_or_value


def choices(update):
    return [c[0] if isinstance(c, (list, tuple)) else c for c in update["choices"]]


# ----------------------------------------------------------------------------------------------
# 1-2. Overview and import


def test_import_a_folder_as_a_job_and_the_overview_follows(ctx, project):
    src = ctx.root / "incoming"
    for i, color in enumerate([RED, GREEN, BLUE]):
        image(src / f"{i}.png", color)
    (src / "0.txt").write_text("1girl, solo")
    tab = build_tab(ctx)
    job_id, msg = trigger(tab, "lora_studio_dataset_import", "click", "alice", str(src), None, False, 2048, False, False)
    assert "Importing incoming" in msg
    out = finish(tab, job_id)
    assert ctx.jobs.get(job_id).status == JobStatus.DONE
    assert "imported 3 images and 1 captions" in out["lora_studio_dataset_import_message"]
    assert "**3 images**, 1 with captions, 2 without" in out["lora_studio_dataset_overview"]
    assert sorted(p.name for p in project.dataset_dir.iterdir()) == ["0.png", "0.txt", "1.png", "2.png"]
    assert choices(out["lora_studio_dataset_image"]) == ["0.png", "1.png", "2.png"]
    # the same job is shown once: a second poll changes nothing
    again = finish(tab, job_id, seen=out["lora_studio_dataset_seen"])
    assert list(again) == ["lora_studio_dataset_seen"]


def test_import_with_shrink_keeps_originals_in_the_trash(ctx, project):
    src = ctx.root / "big"
    image(src / "wide.png", RED, size=(400, 100))
    tab = build_tab(ctx)
    job_id, _ = trigger(tab, "lora_studio_dataset_import", "click", "alice", str(src), None, True, 128, True, False)
    out = finish(tab, job_id)
    with Image.open(project.dataset_dir / "wide.jpg") as im:
        assert im.size == (128, 32) and im.format == "JPEG"
    assert any("shrink to 128 px" in c for c in choices(out["lora_studio_dataset_trash_batches"]))


def test_a_path_outside_the_allowed_folders_is_refused_with_a_sentence(ctx, project, tmp_path):
    outside = tmp_path / "elsewhere"
    image(outside / "a.png", RED)
    tab = build_tab(ctx)
    job_id, msg = trigger(tab, "lora_studio_dataset_import", "click", "alice", str(outside), None, False, 2048, False, False)
    assert is_update(job_id)  # no job started
    assert 'class="ls-error"' in msg and "outside the folders LoRA Studio may use" in msg and "Traceback" not in msg
    assert not list(project.dataset_dir.iterdir())


def sha1_of(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_uploaded_files_are_imported_and_smuggled_paths_refused(ctx, project, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    up = image(tmp_path / "uploads" / ("ab" * 20) / "photo.png", BLUE)  # gradio 3's upload: a random 40-hex folder
    copy = tmp_path / "uploads" / sha1_of(up) / "photo.png"  # gradio 3's copy of it: a folder named by the content
    copy.parent.mkdir()
    copy.write_bytes(up.read_bytes())

    class Gradio3Upload:  # gradio 3 hands over temp-file objects (a copy, and the path it was named by)
        name = str(copy)
        orig_name = str(up)

    tab = build_tab(ctx)
    for files in ([str(up)], [Gradio3Upload()]):
        job_id, _ = trigger(tab, "lora_studio_dataset_import", "click", "alice", "", files, False, 2048, False, False)
        assert job_of(ctx, job_id).status == JobStatus.DONE
    assert [p.name for p in project.dataset_dir.iterdir()] == ["photo.png"]  # the second was already present
    secret = image(tmp_path / "secret" / "x.png", RED)
    cached = tmp_path / "uploads" / sha1_of(secret) / "x.png"
    cached.parent.mkdir()
    cached.write_bytes(secret.read_bytes())

    class Gradio3Smuggled:  # gradio 3 copied a server file the request named into its temp folder
        name = str(cached)
        orig_name = str(secret)

    class Gradio3Cached:  # ...or a file gradio itself had cached (another visitor's, an output)
        name = str(cached)
        orig_name = str(cached)

    for files in ([str(secret)], [Gradio3Smuggled()], [Gradio3Cached()]):
        job_id, msg = trigger(tab, "lora_studio_dataset_import", "click", "alice", "", files, False, 2048, False, False)
        assert is_update(job_id) and "x.png&#x27; was not uploaded through this page" in msg
        assert cached.parent.name not in msg and str(tmp_path) not in msg  # the temp copy's path stays on the server
    _, msg = trigger(tab, "lora_studio_dataset_import", "click", "alice", "", None, False, 2048, False, False)
    assert "Nothing to import" in msg


def test_check_job_lists_missing_captions(ctx, project):
    image(project.dataset_dir / "a.png", RED)
    (project.dataset_dir / "b.png").write_bytes(b"not an image")
    tab = build_tab(ctx)
    (job_id,) = trigger(tab, "lora_studio_dataset_check", "click", "alice")
    job = job_of(ctx, job_id)
    assert job.summary.endswith("1 unreadable, 2 without a caption; 2 images checked")
    log = "\n".join(job.log_tail)
    assert "b.png cannot be used" in log and "a.png has no caption file" in log


# ----------------------------------------------------------------------------------------------
# 3. Scrape (loopback booru)

KEY, USER = "secret-key", "1234"


@pytest.fixture
def booru():
    from tests.booru_server import FakeBooru

    with FakeBooru(api_key=KEY, user_id=USER) as fake:
        yield fake


def test_scrape_preview_then_confirmed_download(tmp_path, booru):
    ctx = StudioContext.for_root(tmp_path / "studio", settings=StudioSettings(gelbooru_api_key=KEY, gelbooru_user_id=USER))
    p = create_project(ctx.root, "alice")
    tab = build_tab(ctx)
    api = booru.url + "/index.php"
    html, key, button, msg = trigger(tab, "lora_studio_dataset_scrape_preview", "click", "gelbooru", "1girl  solo", 3, api)
    assert "<b>30 results</b>" in html and "3 will be downloaded" in html and msg == ""
    assert html.count('<img src="http://127.0.0.1') == 8 and "page=post&amp;s=list" in html
    assert button["visible"] is True and button["value"] == "Download 3 images"

    # a changed search is not what was confirmed
    job_id, msg = trigger(tab, "lora_studio_dataset_scrape_download", "click", "alice", "gelbooru", "1girl", 5, 4096, True, api, key)
    assert is_update(job_id) and "changed since the preview" in msg
    assert not list(p.dataset_dir.iterdir())

    job_id, msg = trigger(tab, "lora_studio_dataset_scrape_download", "click", "alice", "gelbooru", "1girl solo", 3, 4096, True, api, key)
    out = finish(tab, job_id)
    assert "Downloaded 3 of 3 posts" in out["lora_studio_dataset_scrape_message"]
    assert len(list(p.dataset_dir.glob("*.png")) + list(p.dataset_dir.glob("*.jpg"))) == 3
    assert len(list(p.dataset_dir.glob("*.txt"))) == 3
    assert "**3 images**, 3 with captions" in out["lora_studio_dataset_overview"]


def test_scrape_refused_by_the_site_is_a_sentence(ctx, booru):
    create_project(ctx.root, "alice")
    tab = build_tab(ctx)  # no API key in the settings
    html, key, button, msg = trigger(tab, "lora_studio_dataset_scrape_preview", "click", "gelbooru", "1girl", 10, booru.url + "/index.php")
    assert html == "" and key == "" and button["visible"] is False
    assert 'class="ls-error"' in msg and "refused the search without an API key (HTTP 401)" in msg


def test_custom_api_address_is_off_for_remote_servers(tmp_path, booru):
    ctx = StudioContext.for_root(tmp_path / "studio", remote=True)
    tab = build_tab(ctx)
    *_, msg = trigger(tab, "lora_studio_dataset_scrape_preview", "click", "gelbooru", "1girl", 10, booru.url)
    assert "custom API address is off" in msg


# ----------------------------------------------------------------------------------------------
# 4. Duplicates


def select(index: int):
    return gr.SelectData(None, {"index": index, "value": None})


def clicker(tab, plan_job):
    """Click the n-th thumbnail of the duplicate grid as javascript/dataset.js reports it."""
    return lambda n: trigger(tab, "lora_studio_dataset_dedupe_toggle", "click", plan_job, "alice", f"{n}:{time.time()}")


def test_exact_duplicates_grid_toggle_apply_and_restore(ctx, project):
    ds = project.dataset_dir
    a = image(ds / "a.png", RED, size=(64, 48))
    (ds / "b.png").write_bytes(a.read_bytes())
    (ds / "b.txt").write_text("copy")
    image(ds / "c.png", GREEN)
    tab = build_tab(ctx)
    job_id, _ = trigger(tab, "lora_studio_dataset_dedupe_find", "click", "alice", 0.985, True, "ViT-B-32")
    out = finish(tab, job_id)
    grid = out["lora_studio_dataset_dedupe_gallery"]
    assert [label.split(" · ")[0] for _, label in grid] == ["✓ keep", "✗ remove"]
    assert [label.rsplit(" · ", 1)[1] for _, label in grid] == ["a.png", "b.png"]  # same size: the first name
    assert "1 groups of duplicates among 3 images; 1 would go to the trash" in out["lora_studio_dataset_dedupe_message"]
    plan_job = out["lora_studio_dataset_dedupe_job"]
    with Image.open(grid[0][0]) as im:  # thumbnails, not originals
        assert im.format == "JPEG" and max(im.size) <= 256

    # click: keep b instead of a
    click = clicker(tab, plan_job)
    grid, msg = click(0)
    grid, msg = click(0)  # twice on the same image: back to keep
    assert [label.split(" · ")[0] for _, label in grid] == ["✓ keep", "✗ remove"]
    grid, msg = click(0)
    grid, msg = click(1)
    assert [label.split(" · ")[0] for _, label in grid] == ["✗ remove", "✓ keep"]
    grid, msg = click(7)
    assert is_update(grid) and "no longer in the list" in msg

    apply_out = trigger(tab, "lora_studio_dataset_dedupe_apply", "click", "alice", plan_job)
    gallery, plan_job_after, batch_id, msg, *views = apply_out
    assert "Moved 1 images" in msg and gallery == [] and plan_job_after == "" and batch_id
    assert sorted(p.name for p in ds.iterdir()) == ["b.png", "b.txt", "c.png"]
    assert any("**2 images**" in str(v) for v in views)

    batch_after, msg, *views = trigger(tab, "lora_studio_dataset_dedupe_restore", "click", "alice", batch_id)
    assert "back in the dataset" in msg and batch_after == ""
    assert sorted(p.name for p in ds.iterdir()) == ["a.png", "b.png", "b.txt", "c.png"]
    assert any("**3 images**" in str(v) for v in views)


def test_a_group_with_nothing_kept_is_refused(ctx, project):
    ds = project.dataset_dir
    a = image(ds / "a.png", RED)
    (ds / "b.png").write_bytes(a.read_bytes())
    tab = build_tab(ctx)
    job_id, _ = trigger(tab, "lora_studio_dataset_dedupe_find", "click", "alice", 0.985, True, "")
    plan_job = finish(tab, job_id)["lora_studio_dataset_dedupe_job"]
    clicker(tab, plan_job)(0)  # a -> remove; b was remove already
    _, _, _, msg, *_ = trigger(tab, "lora_studio_dataset_dedupe_apply", "click", "alice", plan_job)
    assert "has no image marked to keep" in msg
    assert sorted(p.name for p in ds.iterdir()) == ["a.png", "b.png"]


def test_apply_without_a_plan_explains(ctx, project):
    tab = build_tab(ctx)
    _, _, _, msg, *_ = trigger(tab, "lora_studio_dataset_dedupe_apply", "click", "alice", "")
    assert "Press Find duplicates first" in msg


def test_near_duplicates_with_a_tiny_clip_folder(ctx, project):
    pytest.importorskip("open_clip")
    from tests.tiny_models import write_tiny_open_clip

    clip = write_tiny_open_clip(ctx.root / "_models" / "tiny-clip")
    ds = project.dataset_dir
    image(ds / "a.png", RED, size=(64, 48))
    image(ds / "b.png", RED, size=(32, 24))  # the same picture, smaller
    tab = build_tab(ctx)
    job_id, _ = trigger(tab, "lora_studio_dataset_dedupe_find", "click", "alice", 0.99, False, str(clip))
    out = finish(tab, job_id)
    assert ctx.jobs.get(job_id).status == JobStatus.DONE, ctx.jobs.get(job_id).error
    labels = [label for _, label in out["lora_studio_dataset_dedupe_gallery"]]
    assert labels[0].startswith("✓ keep · group 1 (similar) · 64×48") and labels[1].startswith("✗ remove")


# ----------------------------------------------------------------------------------------------
# 5. Tagging and captioning


def test_tagging_with_the_tiny_onnx_tagger_refreshes_top_tags_and_table(ctx, project):
    pytest.importorskip("onnx")
    from tests.tiny_models import write_tiny_tagger

    model = write_tiny_tagger(ctx.root / "_models" / "tiny-tagger", size=32)
    image(project.dataset_dir / "r.png", RED)
    image(project.dataset_dir / "b.png", BLUE)
    tab = build_tab(ctx)
    job_id, _msg = trigger(tab, "lora_studio_dataset_tag", "click", "alice", str(model), "", 0.35, 0.85, True, False,
                          "long hair", "overwrite", 8)
    out = finish(tab, job_id)
    assert ctx.jobs.get(job_id).status == JobStatus.DONE, ctx.jobs.get(job_id).error
    assert "Tagged 2 images: 2 caption files written" in out["lora_studio_dataset_tag_message"]
    caption = (project.dataset_dir / "r.txt").read_text()
    assert "red theme" in caption and "^_^" in caption and "long hair" not in caption  # blacklisted
    assert "hatsune miku" in (project.dataset_dir / "b.txt").read_text()
    assert "red theme (1)" in out["lora_studio_dataset_top_tags"]
    table = out["lora_studio_dataset_tags_table"]
    assert set(table["tag"]) >= {"red theme", "blue theme", "hatsune miku"}
    assert "**2 images**, 2 with captions" in out["lora_studio_dataset_overview"]


def test_tagger_folder_outside_the_allowed_folders_is_refused(ctx, project, tmp_path):
    tab = build_tab(ctx)
    job_id, msg = trigger(tab, "lora_studio_dataset_tag", "click", "alice", str(tmp_path / "m"), "", 0.35, 0.85, True,
                          False, "", "overwrite", 8)
    assert is_update(job_id) and "outside the folders" in msg


def test_captioning_with_an_injected_caption_fn(ctx, project):
    ctx.extra["caption_fn"] = lambda images: [f"a photo {im.size[0]} wide" for im in images]
    image(project.dataset_dir / "a.png", RED, size=(40, 30))
    tab = build_tab(ctx)
    job_id, _ = trigger(tab, "lora_studio_dataset_caption", "click", "alice", "coca_ViT-L-14", 10, 75, "overwrite")
    out = finish(tab, job_id)
    assert (project.dataset_dir / "a.txt").read_text() == "a photo 40 wide"
    assert "Captioned 1 images" in out["lora_studio_dataset_tag_message"]
    assert "a photo 40 wide" in out["lora_studio_dataset_top_tags"]


def test_caption_lengths_are_checked(ctx, project):
    tab = build_tab(ctx)
    job_id, msg = trigger(tab, "lora_studio_dataset_caption", "click", "alice", "coca_ViT-L-14", 80, 75, "overwrite")
    assert is_update(job_id) and "out of range" in msg


# ----------------------------------------------------------------------------------------------
# 6. Edit tags


@pytest.fixture
def captioned(project):
    ds = project.dataset_dir
    texts = {"a": "1girl, long hair, solo, smile", "b": "1girl, short hair, smile, smile", "c": "1boy, solo"}
    for stem, text in texts.items():
        image(ds / f"{stem}.png", RED)
        (ds / f"{stem}.txt").write_text(text)
    return project


def read(project, stem):
    return (project.dataset_dir / f"{stem}.txt").read_text()


def snapshot(project):
    return {p.name: p.read_bytes() for p in sorted(project.dataset_dir.glob("*.txt"))}


def edit(tab, elem_id, *values, image=""):
    msg, table, history, caption = trigger(tab, elem_id, "click", "alice", "", image, *values)
    return msg, table, history, caption


@pytest.mark.parametrize(
    "elem_id, values, expect",
    [
        ("lora_studio_dataset_tags_activate", ["mychar"], {"a": "mychar, 1girl, long hair, solo, smile", "c": "mychar, 1boy, solo"}),
        ("lora_studio_dataset_tags_remove", ["solo, *hair"], {"a": "1girl, smile", "c": "1boy"}),
        ("lora_studio_dataset_tags_merge", ["1girl", "1girl, 1boy"], {"c": "1girl, solo"}),
        ("lora_studio_dataset_tags_replace", ["smile", "grin", "long hair", "", False], {"a": "1girl, long hair, solo, grin", "b": "1girl, short hair, smile, smile"}),
        ("lora_studio_dataset_tags_replace", [" hair", "_hair", "", "", True], {"a": "1girl, long_hair, solo, smile"}),
        ("lora_studio_dataset_tags_sort", ["alphabetically", ""], {"a": "1girl, long hair, smile, solo"}),
        ("lora_studio_dataset_tags_dedupe", [], {"b": "1girl, short hair, smile"}),
    ],
)
def test_each_tag_edit_changes_files_and_undo_restores_them(ctx, captioned, elem_id, values, expect):
    tab = build_tab(ctx)
    before = snapshot(captioned)
    msg, table, history, _ = edit(tab, elem_id, *values)
    assert 'class="ls-ok"' in msg and "undo restores them" in msg, msg
    for stem, text in expect.items():
        assert read(captioned, stem) == text
    assert "Undo reverts the top one" in history
    assert int(table["count"].sum()) == sum(len(set(t.split(", "))) for t in (read(captioned, s) for s in "abc"))
    msg, table, history, _ = trigger(tab, "lora_studio_dataset_tags_undo", "click", "alice", "", "")
    assert "Undid" in msg
    assert snapshot(captioned) == before
    assert history == "No edits to undo."
    msg, *_ = trigger(tab, "lora_studio_dataset_tags_undo", "click", "alice", "", "")
    assert "no tag edit to undo" in msg


def test_bad_edit_input_is_a_sentence(ctx, captioned):
    tab = build_tab(ctx)
    msg, table, _history, _caption = edit(tab, "lora_studio_dataset_tags_merge", "a, b", "c")
    assert 'class="ls-error"' in msg and "exactly one tag" in msg and is_update(table)
    msg, *_ = edit(tab, "lora_studio_dataset_tags_activate", "")
    assert "No activation tag was given" in msg


def test_frequency_table_search_and_pick(ctx, captioned):
    tab = build_tab(ctx)
    (table,) = trigger(tab, "lora_studio_dataset_tags_search", "change", "alice", "hair")
    assert list(table["tag"]) == ["long hair", "short hair"]
    assert list(table.columns) == ["tag", "count", "share"]
    (full,) = trigger(tab, "lora_studio_dataset_tags_search", "change", "alice", "")
    assert list(full["tag"][:2]) == ["1girl", "smile"] and list(full["count"][:2]) == [2, 2]
    pick, _, _ = handlers(tab, "lora_studio_dataset_tags_table", "select")[0]
    assert pick("", full, gr.SelectData(None, {"index": [1, 0], "value": "smile"})) == "smile"
    assert pick("smile", full, gr.SelectData(None, {"index": [0, 1], "value": 2})) == "smile, 1girl"


def test_per_image_caption_edit_save_and_undo(ctx, captioned):
    tab = build_tab(ctx)
    preview, caption, msg = trigger(tab, "lora_studio_dataset_image", "change", "alice", "b.png")
    assert caption == "1girl, short hair, smile, smile" and msg == ""
    with Image.open(preview) as im:
        assert im.size == (40, 30)
    msg, _, history, caption = trigger(tab, "lora_studio_dataset_caption_save", "click", "alice", "", "b.png", "1girl, wink")
    assert "1 of 1 caption file changed" in msg and read(captioned, "b") == "1girl, wink"
    assert "caption of b.png" in history
    msg, _, _, caption = trigger(tab, "lora_studio_dataset_tags_undo", "click", "alice", "", "b.png")
    assert read(captioned, "b") == "1girl, short hair, smile, smile" and caption == read(captioned, "b")
    (nxt,) = trigger(tab, "lora_studio_dataset_image_next", "click", "alice", "c.png")
    assert nxt["value"] == "a.png"  # wraps around
    (prv,) = trigger(tab, "lora_studio_dataset_image_prev", "click", "alice", "b.png")
    assert prv["value"] == "a.png"
    msg, *_ = trigger(tab, "lora_studio_dataset_caption_save", "click", "alice", "", "", "x")
    assert "No image is picked" in msg


# ----------------------------------------------------------------------------------------------
# 7. Trash


def test_trash_lists_batches_and_restores_the_selected_one(ctx, captioned):
    ds = captioned.dataset_dir
    batch = trash.move_to_trash(captioned.dir, [ds / "c.png", ds / "c.txt"], "duplicates: 1 images")
    tab = build_tab(ctx)
    (batches,) = trigger(tab, "lora_studio_dataset_trash_refresh", "click", "alice")
    labels = choices(batches)
    assert len(labels) == 1 and labels[0].startswith(batch.batch_id) and "duplicates: 1 images · 2 files" in labels[0]
    msg, *views = trigger(tab, "lora_studio_dataset_trash_restore", "click", "alice", labels[0])
    assert "Restored 2 files (duplicates: 1 images)" in msg
    assert (ds / "c.png").exists() and read(captioned, "c") == "1boy, solo"
    assert any("**3 images**" in str(v) for v in views)
    msg, *_ = trigger(tab, "lora_studio_dataset_trash_restore", "click", "alice", labels[0])
    assert "is gone" in msg


# ----------------------------------------------------------------------------------------------
# Wiring


def test_project_change_refreshes_every_view(ctx, captioned):
    create_project(ctx.root, "bob")
    tab = build_tab(ctx)
    fns = [fn for fn, inputs, outputs in handlers(tab, "lora_studio_project", "change") if fn.__name__ == "on_project"]
    out = by_id(fns[0]("bob"))
    assert "**0 images**" in out["lora_studio_dataset_overview"]
    assert len(out["lora_studio_dataset_tags_table"]) == 0 and choices(out["lora_studio_dataset_image"]) == []
    out = by_id(fns[0]("alice"))
    assert "**3 images**, 3 with captions" in out["lora_studio_dataset_overview"]
    assert choices(out["lora_studio_dataset_image"]) == ["a.png", "b.png", "c.png"]


def test_select_handlers_get_the_event_from_gradio(ctx, project):
    """gradio finds `evt: gr.SelectData` by its annotation (string annotations resolved) in both versions."""
    from gradio.helpers import special_args

    tab = build_tab(ctx)
    for elem_id, n_inputs in [("lora_studio_dataset_tags_table", 2)]:
        fn, inputs, _ = handlers(tab, elem_id, "select")[0]
        assert len(inputs) == n_inputs
        args, *_ = special_args(fn, inputs=["x", "y"], event_data=select(3))
        assert args[:2] == ["x", "y"] and isinstance(args[2], gr.SelectData) and args[2].index == 3


def test_every_dataset_control_has_a_unique_elem_id(ctx, project):
    tab = build_tab(ctx)
    ids = [b.elem_id for b in tab.blocks.values() if getattr(b, "elem_id", None) and str(b.elem_id).startswith("lora_studio_dataset")]
    assert len(ids) == len(set(ids)) and len(ids) > 60
    component(tab, "lora_studio_dataset_seen")


# ----------------------------------------------------------------------------------------------
# Through gradio's own pre/post-processing (what the browser gets), in both versions


def fn_index(blocks, elem_id: str, event: str, name: str | None = None):
    target = component(blocks, elem_id)._id
    if isinstance(blocks.fns, dict):  # gradio 4
        return next(k for k, f in blocks.fns.items()
                    if (target, event) in [tuple(t) for t in f.targets] and (name is None or f.fn.__name__ == name))
    return next(i for i, (dep, f) in enumerate(zip(blocks.dependencies, blocks.fns))  # gradio 3
                if dep["trigger"] == event and target in dep["targets"] and (name is None or f.fn.__name__ == name))


def process(blocks, elem_id: str, event: str, inputs: list, event_data=None, name: str | None = None) -> list:
    """Run one event as the server does for the browser: preprocess, call, postprocess."""
    import asyncio

    try:
        from gradio.state_holder import SessionState  # gradio 4

        state = SessionState(blocks)
    except ImportError:
        state = {}
    out = asyncio.run(blocks.process_api(fn_index(blocks, elem_id, event, name), inputs, state, event_data=event_data))
    return out["data"]


def file_of(item) -> str:
    """The file behind a gallery item / image value as sent to the browser (gradio 3: name, 4: path)."""
    if isinstance(item, (list, tuple)):
        item = item[0]
    if isinstance(item, dict) and "image" in item:
        item = item["image"]
    return item.get("path") or item.get("name") if isinstance(item, dict) else item


def test_duplicates_grid_and_editor_through_gradio_processing(ctx, captioned):
    tab = build_tab(ctx)  # a, b and c are the same red picture
    job_id, _ = process(tab, "lora_studio_dataset_dedupe_find", "click", ["alice", 0.985, True, "ViT-B-32"])
    assert ctx.jobs.get(job_id).wait(30)
    outs = process(tab, "lora_studio_progress", "change", [job_id, "alice", ""], name="job_finished")
    _fn, _, outputs = handlers(tab, "lora_studio_progress", "change")[0]
    got = {c.elem_id: v for c, v in zip(outputs, outs)}
    gallery = got["lora_studio_dataset_dedupe_gallery"]
    gallery = gallery["value"] if isinstance(gallery, dict) and "value" in gallery else gallery
    assert len(gallery) == 3
    served = [file_of(g) for g in gallery]
    assert all(str(ctx.root) not in str(p) for p in served)  # copies in gradio's cache, not our folders
    table = got["lora_studio_dataset_tags_table"]
    table = table.get("value", table)
    assert table["headers"] == ["tag", "count", "share"] and table["data"][0][:2] == ["1girl", 2]

    plan_job = got["lora_studio_dataset_dedupe_job"]
    plan_job = plan_job.get("value", plan_job) if isinstance(plan_job, dict) else plan_job
    assert plan_job == job_id
    grid, msg = process(tab, "lora_studio_dataset_dedupe_toggle", "click", [plan_job, "alice", "0:1"])
    labels = [g["caption"] if isinstance(g, dict) else g[1] for g in (grid.get("value", grid) if isinstance(grid, dict) else grid)]
    assert [label.split(" · ")[0] for label in labels] == ["✗ remove"] * 3  # the kept one was clicked
    assert "3 would go to the trash" in msg

    preview, caption, _msg = process(tab, "lora_studio_dataset_image", "change", ["alice", "b.png"])
    assert caption == "1girl, short hair, smile, smile" and preview

    create_project(ctx.root, "bob")  # an empty project: empty table, no images, no batches
    outs = process(tab, "lora_studio_project", "change", ["bob"], name="on_project")
    assert any("**0 images**" in str(o) for o in outs)


def test_dataset_script_and_styles_are_injected_like_the_webui_does():
    from lora_trainer.ui.standalone import page_head_assets

    head = page_head_assets()
    assert "#lora_studio_dataset_dedupe_gallery" in head and "ls-dup-remove" in head  # dataset.js + style.css
    assert head.count("<script>") >= 2
