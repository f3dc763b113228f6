"""The dataset tag editor on a small project folder: only changed files are written, undo is byte-exact."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lora_trainer import trash
from lora_trainer.cli import main as cli_main
from lora_trainer.dataset import tag_editor as E
from lora_trainer.errors import StudioError


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


# name -> caption bytes (None: the image has no caption file)
CAPTIONS: dict[str, bytes | None] = {
    "a.png": b"1girl, solo, blue_hair\n",
    "b.jpg": b"solo,smile",  # no trailing newline, unusual spacing
    "c.webp": "\ufeffsks, 1girl, caf\u00e9\r\n".encode(),  # BOM, CRLF, non-ASCII
    "d.png": None,
    "sub/e.bmp": b"1boy, smile, solo",
}


def make_project(root: Path) -> Path:
    project = root / "proj"
    ds = project / "dataset"
    png = _png()
    for name, caption in CAPTIONS.items():
        image = ds / name
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(png)
        if caption is not None:
            image.with_suffix(".txt").write_bytes(caption)
    (ds / "orphan.txt").write_bytes(b"not, an, image")  # a caption without an image is left alone
    return project


def snapshot(project: Path) -> dict[str, bytes]:
    """Every caption file's bytes (what undo must bring back exactly)."""
    ds = project / "dataset"
    return {p.relative_to(ds).as_posix(): p.read_bytes() for p in sorted(ds.rglob("*.txt"))}


def mtimes(project: Path) -> dict[str, int]:
    ds = project / "dataset"
    return {p.relative_to(ds).as_posix(): p.stat().st_mtime_ns for p in ds.rglob("*.txt")}


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path)


def test_load_captions_reads_conventions(project):
    caps = {c.image.relative_to(project / "dataset").as_posix(): c for c in E.load_captions(project / "dataset")}
    assert sorted(caps) == ["a.png", "b.jpg", "c.webp", "d.png", "sub/e.bmp"]
    assert caps["a.png"].tags == ["1girl", "solo", "blue_hair"] and caps["a.png"].ending == "\n"
    assert caps["b.jpg"].ending == "" and caps["b.jpg"].body == "solo,smile"
    c = caps["c.webp"]
    assert c.bom and c.ending == "\r\n" and c.tags == ["sks", "1girl", "caf\u00e9"]
    assert not caps["d.png"].exists and caps["d.png"].tags == []


def test_bulk_edit_writes_only_changed_files_and_keeps_conventions(project):
    before, times = snapshot(project), mtimes(project)
    result = E.remove(project, ["1girl"])
    assert result.total == 5 and len(result.changed) == 2
    assert result.message == "Remove 1girl: 2 of 5 caption files changed; undo restores them."
    after = snapshot(project)
    assert after["a.txt"] == b"solo, blue_hair\n"
    assert after["c.txt"] == "\ufeffsks, caf\u00e9\r\n".encode()
    for name in ("b.txt", "sub/e.txt", "orphan.txt"):
        assert after[name] == before[name]
        assert mtimes(project)[name] == times[name]  # untouched, not rewritten with the same bytes
    assert "d.txt" not in after  # nothing to remove there, so no file was created


def test_every_bulk_operation(project):
    E.activate(project, ["sks", "style"])
    s = snapshot(project)
    assert s["a.txt"] == b"sks, style, 1girl, solo, blue_hair\n"
    assert s["b.txt"] == b"sks, style, solo, smile"
    assert s["c.txt"] == "\ufeffsks, style, 1girl, caf\u00e9\r\n".encode()
    assert s["d.txt"] == b"sks, style"  # a new caption file has no trailing newline
    E.merge(project, "smile", ["solo"])
    assert snapshot(project)["sub/e.txt"] == b"sks, style, 1boy, smile"
    E.replace(project, "1girl", "woman", if_all=["blue_hair"])
    assert snapshot(project)["a.txt"] == b"sks, style, woman, smile, blue_hair\n"
    assert snapshot(project)["c.txt"] == "\ufeffsks, style, 1girl, caf\u00e9\r\n".encode()
    E.replace(project, "_", " ", substring=True)
    assert snapshot(project)["a.txt"] == b"sks, style, woman, smile, blue hair\n"
    result = E.sort(project, "freq", activation=["sks", "style"])
    assert snapshot(project)["a.txt"] == b"sks, style, smile, blue hair, woman\n"
    assert result.reason == "tag edit: sort by frequency"
    E.remove(project, ["smile", "*hair"])  # "*hair" matches whole tags only
    assert snapshot(project)["a.txt"] == b"sks, style, woman\n"
    assert snapshot(project)["c.txt"] == "\ufeffsks, style, 1girl, caf\u00e9\r\n".encode()
    table = E.frequencies(project)
    assert table.iloc[0].tolist() == ["sks", 5, 1.0]
    assert "smile" not in set(table["tag"])
    assert E.frequencies(project, top=2, search="s")["tag"].tolist() == ["sks", "style"]


def test_dedupe_and_selection(project):
    (project / "dataset" / "a.txt").write_bytes(b"x, y, x\n")
    (project / "dataset" / "b.txt").write_bytes(b"x, x")
    result = E.dedupe(project, selection=["a.png"])
    assert len(result.changed) == 1 and result.total == 1
    assert snapshot(project)["a.txt"] == b"x, y\n" and snapshot(project)["b.txt"] == b"x, x"
    with pytest.raises(StudioError, match="not an image of the dataset"):
        E.dedupe(project, selection=["missing.png"])


def test_undo_restores_bytes_and_history_lists_reasons(project):
    original = snapshot(project)
    E.activate(project, ["sks"])
    E.merge(project, "a", ["solo", "smile"])
    E.remove(project, ["nothing here"])  # changes nothing: no batch
    reasons = [b.reason for b in E.history(project)]
    assert reasons == ["tag edit: merge solo, smile into a", "tag edit: activate sks"]
    assert E.undo(project).reason == "tag edit: merge solo, smile into a"
    assert E.undo(project).reason == "tag edit: activate sks"
    assert snapshot(project) == original  # d.txt, created by activate, is gone again
    assert E.undo(project) is None and E.history(project) == []
    # nothing was lost: the undone captions are in the trash too
    assert any(b.reason.startswith("replaced by restoring") for b in trash.list_batches(project))


def test_per_image_read_write_and_undo(project):
    original = snapshot(project)
    assert E.read_caption(project, "c.webp") == "sks, 1girl, caf\u00e9"
    assert E.read_caption(project, "d.png") == ""
    result = E.write_caption(project, "c.webp", "sks, 1girl, smile")
    assert result.reason == "tag edit: caption of c.webp" and len(result.changed) == 1
    assert snapshot(project)["c.txt"] == "\ufeffsks, 1girl, smile\r\n".encode()
    assert E.write_caption(project, "c.webp", "sks, 1girl, smile").changed == ()
    assert E.write_caption(project, "d.png", "").changed == ()  # no empty file is created
    E.write_caption(project, project / "dataset" / "d.png", "new")
    assert snapshot(project)["d.txt"] == b"new"
    E.undo(project)
    E.undo(project)
    assert snapshot(project) == original


def test_not_utf8_caption_is_refused_by_name(project):
    (project / "dataset" / "b.txt").write_bytes(b"caf\xe9")
    before = snapshot(project)
    with pytest.raises(StudioError, match="b.txt is not UTF-8"):
        E.activate(project, ["sks"])
    assert snapshot(project) == before


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(StudioError, match="does not exist"):
        E.frequencies(tmp_path)


def test_cli_prints_what_changed(project, capsys):
    root = ["tags", "--root", str(project.parent), "--project", "proj"]
    assert cli_main([*root, "activate", "sks"]) == 0
    assert "Activate sks: 4 of 5 caption files changed" in capsys.readouterr().out
    assert cli_main([*root, "replace", "solo", "alone", "--if-any", "smile,1boy"]) == 0
    assert "2 of 5" in capsys.readouterr().out
    assert cli_main([*root, "freq", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "5  100.0%  sks" in out
    assert cli_main([*root, "history"]) == 0
    assert "replace solo -> alone if any of smile, 1boy  (2 caption files)" in capsys.readouterr().out
    assert cli_main([*root, "undo"]) == 0
    assert "Undid 'replace solo -> alone" in capsys.readouterr().out
    assert cli_main([*root, "merge", "x", "a,b"]) == 0
    assert "no caption file changed" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# Property: any sequence of edits is undone byte for byte.

tag = st.sampled_from(["1girl", "solo", "smile", "sks", "blue_hair", "x"])
edit = st.one_of(
    st.tuples(st.just("activate"), st.lists(tag, min_size=1, max_size=2)),
    st.tuples(st.just("remove"), st.lists(tag, min_size=1, max_size=2)),
    st.tuples(st.just("merge"), tag, st.lists(tag, min_size=1, max_size=2)),
    st.tuples(st.just("replace"), tag, tag, st.lists(tag, max_size=1)),
    st.tuples(st.just("sort"), st.sampled_from(["alpha", "freq"])),
    st.tuples(st.just("dedupe")),
    st.tuples(st.just("write"), st.sampled_from(["a.png", "d.png"]), st.lists(tag, max_size=3)),
)


def run_edit(project: Path, e: tuple) -> None:
    kind, *args = e
    if kind == "activate":
        E.activate(project, args[0])
    elif kind == "remove":
        E.remove(project, args[0])
    elif kind == "merge":
        E.merge(project, args[0], args[1])
    elif kind == "replace":
        E.replace(project, args[0], args[1], if_any=args[2])
    elif kind == "sort":
        E.sort(project, args[0])
    elif kind == "dedupe":
        E.dedupe(project)
    else:
        E.write_caption(project, args[0], ", ".join(args[1]))


@settings(max_examples=40, deadline=None)
@given(st.lists(edit, max_size=5))
def test_undo_after_any_edits_restores_bytes(edits):
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp))
        original = snapshot(project)
        for e in edits:
            run_edit(project, e)
        n = len(E.history(project))
        assert n <= len(edits)
        for _ in range(n):
            E.undo(project)
        assert snapshot(project) == original
