"""Project names, layout, project.toml round trips, and the trash."""

import os

import pytest

from lora_trainer import toml_io, trash
from lora_trainer.errors import StudioError
from lora_trainer.project import (
    MAX_SEGMENT_CHARS,
    check_name,
    create_project,
    list_projects,
    name_problem,
    open_project,
    rename_project,
    suggest_name,
)

HOSTILE = [
    ("..", "'..'"),
    ("../x", "'..'"),
    ("/etc/x", "absolute"),
    ("\\\\server\\share", "absolute"),
    ("C:evil", "absolute"),
    ("a/b/c", "more than two parts"),
    ("CON", "reserved device"),
    ("nul.txt", "reserved device"),
    ("a\x00b", "control character"),
    ("line\nbreak", "control character"),
    ("x" * 300, "characters long"),
    ("ab:c", "Windows does not allow"),
    ("what?", "Windows does not allow"),
    ("trailing.", "ends with"),
    (" padded", "starts or ends"),
    (".hidden", "starts with '.'"),
    ("_logs", "starts with '.' or '_'"),
    ("", "empty"),
    ("a//b", "empty"),
]


@pytest.mark.parametrize("name,rule", HOSTILE)
def test_hostile_names_are_refused_with_the_rule_and_a_fix(name, rule):
    assert rule in name_problem(name)
    with pytest.raises(StudioError) as err:
        check_name(name)
    fixed = suggest_name(name)
    assert fixed in err.value.fix
    assert name_problem(fixed) is None, (name, fixed)


@pytest.mark.parametrize("name", ["alice", "chars/alice", "Émilie", "日本語のキャラ", "my lora v2", "a-b_c.d"])
def test_good_names_pass(name):
    assert check_name(name) == name
    assert name_problem(name) is None


def test_name_is_nfc_normalised():
    decomposed = "E\u0301milie"  # E + combining acute
    assert check_name(decomposed) == "\u00c9milie"


def test_long_name_limit_is_exact():
    assert name_problem("x" * MAX_SEGMENT_CHARS) is None
    assert name_problem("x" * (MAX_SEGMENT_CHARS + 1)) is not None


def test_create_makes_the_colab_layout(tmp_path):
    p = create_project(tmp_path, "chars/alice")
    assert p.dir == tmp_path / "chars" / "alice"
    assert p.dataset_dir.is_dir() and p.output_dir.is_dir() and (tmp_path / "_logs").is_dir()
    assert p.file_stem == "alice"
    assert toml_io.load(p.toml_path)["schema_version"] == 1
    assert list_projects(tmp_path) == ["chars/alice"]
    with pytest.raises(StudioError, match="already exists"):
        create_project(tmp_path, "chars/alice")


def test_a_colab_loras_folder_opens_as_it_is(tmp_path):
    (tmp_path / "Loras" / "bob" / "dataset").mkdir(parents=True)
    (tmp_path / "Loras" / "_logs").mkdir()
    p = open_project(tmp_path / "Loras", "bob")
    assert p.dataset_dir.is_dir()
    assert not p.toml_path.exists()  # opening writes nothing
    assert p.load_file().sections == {}
    assert list_projects(tmp_path / "Loras") == ["bob"]


def test_open_missing_project_lists_the_known_ones(tmp_path):
    create_project(tmp_path, "alice")
    with pytest.raises(StudioError) as err:
        open_project(tmp_path, "bob")
    assert "alice" in err.value.fix


def test_rename(tmp_path):
    create_project(tmp_path, "alice")
    (tmp_path / "alice" / "dataset" / "1.txt").write_text("x")
    p = rename_project(tmp_path, "alice", "cat/alice2")
    assert (p.dataset_dir / "1.txt").read_text() == "x"
    assert list_projects(tmp_path) == ["cat/alice2"]


def test_project_toml_keeps_unknown_keys(tmp_path):
    p = create_project(tmp_path, "alice")
    p.toml_path.write_text(
        'schema_version = 1\nfuture_key = "kept"\n\n[train]\nlr = 0.0005\nnew_thing = [1, 2]\n\n[train.nested]\nx = true\n\n[mystery]\n"odd key" = "v"\n'
    )
    pf = p.load_file()
    train = pf.section("train")
    train["lr"] = 0.0003
    pf.set_section("train", train)
    p.save_file(pf)
    doc = toml_io.load(p.toml_path)
    assert doc == {
        "schema_version": 1,
        "future_key": "kept",
        "train": {"lr": 0.0003, "new_thing": [1, 2], "nested": {"x": True}},
        "mystery": {"odd key": "v"},
    }


def test_newer_schema_is_refused(tmp_path):
    p = create_project(tmp_path, "alice")
    p.toml_path.write_text("schema_version = 99\n")
    with pytest.raises(StudioError, match="newer LoRA Studio"):
        p.load_file()


def test_invalid_toml_names_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("x = = 1\n")
    with pytest.raises(StudioError, match="bad.toml is not valid TOML"):
        toml_io.load(f)


def test_toml_writer_round_trips_awkward_values():
    doc = {
        "s": 'quote " backslash \\ tab \t newline \n ctl \x01 unicode ✓',
        "i": -3,
        "f": 1e-4,
        "inf": float("inf"),
        "b": False,
        "arr": [[1, 2], ["a"]],
        "t": {"k": 1, "sub": {"deep": "x"}},
        "aot": [{"name": "a", "n": 1}, {"name": "b", "n": 2}],
    }
    assert toml_io.loads(toml_io.dumps(doc)) == doc


def test_trash_moves_and_restores_byte_exact(tmp_path):
    p = create_project(tmp_path, "alice")
    img, cap = p.dataset_dir / "1.png", p.dataset_dir / "1.txt"
    img.write_bytes(b"\x89PNG fake")
    cap.write_bytes(b"tag, other")
    batch = trash.move_to_trash(p.dir, [img, cap, p.dataset_dir / "missing.png"], "duplicates")
    assert not img.exists() and not cap.exists()
    assert batch.files == ("dataset/1.png", "dataset/1.txt")
    assert [b.reason for b in trash.list_batches(p.dir)] == ["duplicates"]
    cap.write_bytes(b"new caption")  # something reappeared at the original place
    displaced = trash.restore(p.dir, batch.batch_id)
    assert img.read_bytes() == b"\x89PNG fake" and cap.read_bytes() == b"tag, other"
    assert displaced.files == ("dataset/1.txt",)  # the newer caption went to the trash, not away
    assert [b.batch_id for b in trash.list_batches(p.dir)] == [displaced.batch_id]


def test_trash_refuses_files_outside_the_project(tmp_path):
    p = create_project(tmp_path, "alice")
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    with pytest.raises(StudioError, match="not inside the project"):
        trash.move_to_trash(p.dir, [outside], "test")
    assert outside.exists()


def test_keep_copies_leaves_originals(tmp_path):
    p = create_project(tmp_path, "alice")
    cap = p.dataset_dir / "1.txt"
    cap.write_text("a, b")
    batch = trash.keep_copies(p.dir, [cap], "tag edit")
    assert cap.read_text() == "a, b" and batch.kept_original
    cap.write_text("a")
    trash.restore(p.dir, batch.batch_id)
    assert cap.read_text() == "a, b"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from lora_trainer.fileio import atomic_path, write_text

    target = tmp_path / "f.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-save")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]  # no temp file left behind


def test_keep_copies_records_files_about_to_be_created_and_restore_removes_them(tmp_path):
    p = create_project(tmp_path, "alice")
    old, new = p.dataset_dir / "1.txt", p.dataset_dir / "2.txt"
    old.write_text("a, b")
    batch = trash.keep_copies(p.dir, [old, new], "tag edit")
    assert batch.files == ("dataset/1.txt",) and batch.new_files == ("dataset/2.txt",)
    old.write_text("a")
    new.write_text("fresh caption")
    displaced = trash.restore(p.dir, batch.batch_id)
    assert old.read_text() == "a, b" and not new.exists()
    assert sorted(displaced.files) == ["dataset/1.txt", "dataset/2.txt"]  # the edit's result is itself undoable
