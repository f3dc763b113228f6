"""The studio's promises about hostile and broken input, one test (or a few) per promise.

Read top to bottom, this is the list of what LoRA Studio guarantees when the outside world
misbehaves: a booru that lies, an archive with tricks in it, a visitor of the page who names
server files. Each section says the promise; the tests try more than one shape of the attack.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from lora_trainer.dataset.booru import DanbooruClient, GelbooruClient, SafebooruClient
from lora_trainer.dataset.importer import import_into_dataset
from lora_trainer.dataset.scrape import ScrapeOptions, download
from lora_trainer.errors import StudioError
from lora_trainer.paths import NAME_MAX_BYTES, inside
from tests.booru_server import FakeBooru, FakePost, make_image
from tests.gradio_wire import GRADIO_4
from tests.test_dataset_booru import fast_http
from tests.test_host_webui_api import studio as studio  # a fixture: a project and a tiny model host

# Shapes of a name that must never become a path outside its folder (or a path at all).
HOSTILE_NAMES = [
    "../escaped.png",
    "../../../../../../tmp/escaped.png",
    "a/../../escaped.png",
    "/tmp/escaped.png",
    "C:/escaped.png",
    "..\\..\\escaped.png",
    "sub\\..\\..\\escaped.png",
    "..",
    ".",
    "",
    "a//b.png",
    "a.png\x00.txt",
    "line\nbreak.png",
    "x" * (NAME_MAX_BYTES + 1) + ".png",
    "ü" * 130 + ".png",  # 260 bytes in UTF-8, fewer characters
]


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# ----------------------------------------------------------------------------------------------
# 1. A name that came from outside becomes a path only inside its folder (paths.inside)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_is_refused_with_a_sentence(tmp_path, name):
    with pytest.raises(StudioError) as e:
        inside(tmp_path / "dataset", name, "The booru's file name")
    assert "can not be a file name" in e.value.message or "is empty" in e.value.message
    assert "Traceback" not in str(e.value)


def test_ordinary_names_stay_as_spelled(tmp_path):
    assert inside(tmp_path, "a.png") == tmp_path / "a.png"
    assert inside(tmp_path, "10_alice/b c.jpg") == tmp_path / "10_alice" / "b c.jpg"
    assert inside(tmp_path, "é" * 100 + ".png").name == "é" * 100 + ".png"  # 204 bytes: allowed


def test_a_symlink_inside_the_folder_does_not_lead_out(tmp_path):
    folder, outside = tmp_path / "dataset", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "sub").symlink_to(outside, target_is_directory=True)
    (folder / "a.png").symlink_to(outside / "new.png")  # a link to a file not there yet
    (folder / "ok").symlink_to(folder / "real", target_is_directory=True)  # a link that stays inside
    for name in ("sub/x.png", "a.png"):
        with pytest.raises(StudioError, match="leads outside"):
            inside(folder, name)
    assert inside(folder, "ok/x.png") == folder / "ok" / "x.png"


# ----------------------------------------------------------------------------------------------
# 2. A booru's answer can not write outside the dataset, and a bad name skips only its post


def booru_with(posts: list[FakePost]) -> FakeBooru:
    return FakeBooru(posts=posts)


def hostile_posts() -> list[FakePost]:
    claims = ["../../escaped", "../" * 12 + "tmp/escaped", "a/b", "/etc/passwd", "..\\..\\escaped",
              "0123456789abcdef0123456789abcdef/../../x", "ABCDEF0123456789ABCDEF0123456789" + "\n", "", None]
    return [FakePost(i + 1, "png", make_image(i + 1), 16, 12, ("1girl", "tag_from_server"), claimed_md5=claim)
            for i, claim in enumerate(claims)]


@pytest.mark.parametrize("site", ["gelbooru", "danbooru", "safebooru"])
def test_a_hostile_md5_never_names_a_file_outside_the_dataset(tmp_path, site):
    posts = hostile_posts()
    ds = tmp_path / "deep" / "er" / "dataset"
    with booru_with(posts) as fake:
        client = {
            "gelbooru": lambda: GelbooruClient(api_url=fake.url + "/index.php", http=fast_http()),
            "danbooru": lambda: DanbooruClient(api_url=fake.url, http=fast_http()),
            "safebooru": lambda: SafebooruClient(api_url=fake.url + "/safebooru/index.php", http=fast_http()),
        }[site]()
        result = download(client, "1girl", ds, ScrapeOptions(cap=50, tags_as_captions=True))
    assert len(result.downloaded) == len(posts) and not result.failed
    # Every file is in the dataset folder itself, named by the real md5 or by site and id.
    names = files_under(ds)
    by_md5 = {p.md5 for p in posts if p.claimed_md5 is None or p.claimed_md5 == p.md5}
    expected = {f"{p.md5}.png" if p.md5 in by_md5 else f"{site}_{p.id}.png" for p in posts}
    expected |= {n.replace(".png", ".txt") for n in expected}
    assert names == expected
    assert files_under(tmp_path) == {"deep", "deep/er", "deep/er/dataset"} | {f"deep/er/dataset/{n}" for n in names}
    assert not Path("/tmp/escaped.png").exists() and not Path("/tmp/escaped").exists()


def test_an_uppercase_md5_is_a_real_md5(tmp_path):
    post = FakePost(1, "png", make_image(1), 16, 12, ("1girl",))
    post.claimed_md5 = post.md5.upper()
    with booru_with([post]) as fake:
        download(GelbooruClient(api_url=fake.url + "/index.php", http=fast_http()), "1girl", tmp_path, ScrapeOptions(cap=5))
    assert files_under(tmp_path) == {post.name}


def test_the_url_extension_is_not_a_way_out(tmp_path):
    """The extension of the downloaded file comes from the server's URL; only png/jpg/jpeg/webp are taken."""
    post = FakePost(1, "png", make_image(1), 16, 12, ("1girl",))
    with booru_with([post]) as fake:
        post.claimed_file_url = f"{fake.url}/images/ab/cd/{post.name}?x=/../../y.png"
        download(GelbooruClient(api_url=fake.url + "/index.php", http=fast_http()), "1girl", tmp_path, ScrapeOptions(cap=5))
    assert files_under(tmp_path) == {post.name}


def test_a_symlink_at_the_download_name_is_not_followed_out(tmp_path):
    post = FakePost(1, "png", make_image(1), 16, 12, ("1girl",))
    ds, outside = tmp_path / "dataset", tmp_path / "outside"
    ds.mkdir()
    outside.mkdir()
    (ds / post.name).symlink_to(outside / "planted.png")
    with booru_with([post]) as fake:
        result = download(GelbooruClient(api_url=fake.url + "/index.php", http=fast_http()), "1girl", ds, ScrapeOptions(cap=5))
    assert not list(outside.iterdir())
    assert result.downloaded == [] and "leads outside" in result.failed[0][1]


# ----------------------------------------------------------------------------------------------
# 3. An archive member can not write outside the dataset


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    path.write_bytes(buf.getvalue())
    return path


def test_zip_members_with_hostile_names_are_refused_and_the_rest_imported(tmp_path):
    png = make_image(7)
    # A zip entry needs a name, and zipfile cuts a name at its NUL.
    hostile = [n for n in HOSTILE_NAMES if n not in ("", ".", "..") and "\x00" not in n]
    members = {f"m{i}_{n}" if not n.startswith(("/", "C:", ".")) else n: png for i, n in enumerate(hostile)}
    members["good/ok.png"] = png
    src = zip_with(tmp_path / "in.zip", members)
    ds = tmp_path / "dataset"
    ds.mkdir()
    summary = import_into_dataset([src], ds)
    assert files_under(ds) == {"good", "good/ok.png"}
    assert len(summary.rejected) == len(members) - 1
    assert all(r.path.startswith("in.zip:") for r in summary.rejected)
    assert not Path("/tmp/escaped.png").exists()
    assert files_under(tmp_path) - {".cache", ".cache/import-origins.json"} == {"in.zip", "dataset", "dataset/good", "dataset/good/ok.png"}


def test_a_symlinked_folder_in_the_dataset_does_not_carry_an_import_out(tmp_path):
    ds, outside = tmp_path / "dataset", tmp_path / "outside"
    ds.mkdir()
    outside.mkdir()
    (ds / "10_alice").symlink_to(outside, target_is_directory=True)
    src = zip_with(tmp_path / "in.zip", {"10_alice/a.png": make_image(3), "b.png": make_image(4)})
    summary = import_into_dataset([src], ds)
    assert not list(outside.iterdir())
    assert [p.name for p in summary.imported] == ["b.png"]
    assert any("leads outside" in r.reason for r in summary.rejected)


# ----------------------------------------------------------------------------------------------
# 4. Reads are typed and bounded: regular files only, links stay inside, sizes capped


def test_a_folder_import_reads_only_plain_files_that_stay_inside(tmp_path):
    src, ds = tmp_path / "src", tmp_path / "dataset"
    src.mkdir()
    ds.mkdir()
    (src / "a.png").write_bytes(make_image(1))
    (src / "a.txt").symlink_to("/etc/passwd")  # would become a caption
    (src / "b.png").write_bytes(make_image(2))
    (src / "b.txt").write_text("1girl, solo")
    (src / "zero.png").symlink_to("/dev/zero")  # would be read until the memory runs out
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(src / "f.png")  # would hang the read forever
    (src / "c.png").symlink_to(src / "b.png")  # a link that stays inside is a file like the others
    summary = import_into_dataset([src], ds)
    assert files_under(ds) == {"a.png", "b.png", "b.txt", "c.png"}
    assert (ds / "b.txt").read_text() == "1girl, solo"
    reasons = {Path(r.path).name: r.reason for r in summary.rejected}
    assert set(reasons) == {"a.txt", "zero.png", "gone.png", "f.png"}
    assert "outside the folder" in reasons["a.txt"] and "broken" in reasons["gone.png"]
    assert "not a regular file" in reasons["f.png"]


def test_a_huge_or_damaged_zip_member_is_a_sentence(tmp_path):
    good, big_caption = make_image(1), b"tag, " * 300_000  # 1.5 MB of "caption"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", good)
        zf.writestr("big.png", make_image(2))
        zf.writestr("big.txt", big_caption)
        zf.writestr("crc.png", make_image(3))
    data = bytearray(buf.getvalue())
    # Corrupt one byte of crc.png's compressed data: its CRC check fails when read.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("crc.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    src = tmp_path / "in.zip"
    src.write_bytes(bytes(data))
    ds = tmp_path / "dataset"
    ds.mkdir()
    summary = import_into_dataset([src], ds)
    assert files_under(ds) == {"ok.png", "big.png"}
    reasons = {r.path: r.reason for r in summary.rejected}
    assert "too large for a caption" in reasons["in.zip:big.txt"]
    assert "in.zip:crc.png" in reasons and "Traceback" not in reasons["in.zip:crc.png"]


def test_a_download_over_the_size_cap_is_refused_announced_or_not(tmp_path):
    small = FakePost(1, "png", make_image(1), 16, 12, ("1girl",))
    big = FakePost(2, "png", make_image(2) + b"\0" * 5000, 16, 12, ("1girl",))
    big_unsized = FakePost(3, "png", make_image(3) + b"\0" * 5000, 16, 12, ("1girl",))
    with booru_with([small, big, big_unsized]) as fake:
        fake.unsized = {f"/images/ab/cd/{p.name}" for p in (small, big_unsized)}
        result = download(GelbooruClient(api_url=fake.url + "/index.php", http=fast_http()), "1girl", tmp_path,
                          ScrapeOptions(cap=5, max_file_bytes=2000))
    assert files_under(tmp_path) == {small.name}
    assert sorted(reason for _, reason in result.failed) == sorted(
        f"{fake.url}/images/ab/cd/{p.name} is larger than 2000 bytes, so it is not downloaded." for p in (big, big_unsized))


# ----------------------------------------------------------------------------------------------
# 5. A visitor of the page can import only the files their browser uploaded, never a server file
#    they name in the request (gradio 3 copies any named path; gradio 4's cache holds more than uploads)


@pytest.fixture
def live_studio(tmp_path):
    """The standalone studio served on loopback with a project 'alice', and a client that speaks the wire."""
    from lora_trainer.project import create_project
    from lora_trainer.ui.context import StudioContext
    from tests.gradio_wire import Wire, served, studio_app

    ctx = StudioContext.for_root(tmp_path / "studio")
    project = create_project(ctx.root, "alice")
    with served(studio_app(ctx)) as base:
        yield ctx, project, Wire(base)


def write_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_image(seed))
    return path


def import_by_wire(ctx, wire, file_values: list) -> tuple[list[Path], str]:
    """Press Import with these File values; the files imported and the message shown."""
    job_id, msg = wire.call("lora_studio_dataset_import", ["alice", "", file_values, False, 2048, False, False])
    if not isinstance(job_id, str) or not job_id:  # refused before a job started
        return [], str(msg)
    job = ctx.jobs.get(job_id)
    assert job.wait(60), "the import did not finish"
    return list(job.result.imported), str(msg)


def test_an_uploaded_file_is_imported_over_the_wire(live_studio, tmp_path):
    ctx, project, wire = live_studio
    picture = write_png(tmp_path / "mine.png", 1)
    received = wire.upload(picture)
    imported, _ = import_by_wire(ctx, wire, [wire.file_value(received, "mine.png")])
    assert [p.name for p in imported] == ["mine.png"]
    assert (project.dataset_dir / "mine.png").read_bytes() == picture.read_bytes()


def test_a_server_file_named_in_the_request_is_not_imported(live_studio, tmp_path):
    from lora_trainer.ui.compat import upload_root

    ctx, project, wire = live_studio
    secret = write_png(tmp_path / "outside" / "secret.png", 2)
    (secret.parent / "secret.txt").write_text("the server's private caption")
    # A file in gradio's own folder that this visitor did not upload: a copy gradio cached (gradio 3
    # names the folder by the sha1 of the content), or a file of another kind left there.
    content = make_image(3)
    cached = write_png(upload_root() / hashlib.sha1(content).hexdigest() / "cached.png", 3)
    other = write_png(upload_root() / f"not-uploaded-{os.getpid()}-{tmp_path.name}" / "other.png", 5)
    try:
        named = [(str(secret), "secret.png"), (str(secret.parent), "outside"), (str(cached), "cached.png"),
                 (str(other), "other.png")]
        for server_path, name in named:
            try:
                imported, msg = import_by_wire(ctx, wire, [wire.file_value(server_path, name)])
            except RuntimeError as e:  # gradio 4 itself refuses a path outside its folder (echoing the client's own)
                imported, msg = [], ""
                assert GRADIO_4 or server_path == str(secret.parent), e
            assert imported == [], server_path
            if server_path in (str(cached), str(other)) or (not GRADIO_4 and server_path == str(secret)):
                assert "was not uploaded through this page" in msg, msg
            assert str(tmp_path) not in msg and str(upload_root()) not in msg  # our sentence shows no server path
        assert files_under(project.dataset_dir) == set()
    finally:
        import shutil

        shutil.rmtree(cached.parent, ignore_errors=True)
        shutil.rmtree(other.parent, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# 6. The standalone studio is never served open to the network by accident: --listen needs a login
#    (as the WebUI's --gradio-auth / --gradio-auth-path), and the login guards the page, uploads and queue


def test_listen_without_a_login_is_refused_before_anything_starts(tmp_path, capsys):
    from lora_trainer.cli import main

    for command in (["ui"], ["demo"]):
        assert main([*command, "--root", str(tmp_path / "studio"), "--listen"]) == 2
        err = capsys.readouterr().err
        assert "--listen would let everyone" in err and "--auth user:password" in err and "--insecure-open" in err
    assert not (tmp_path / "studio" / "demo").exists()  # the demo made nothing before refusing


def test_logins_are_read_as_the_webui_writes_them(tmp_path):
    from lora_trainer.logins import ServeAccess, parse_credentials

    assert parse_credentials("ann:pw, bob:a:b:c") == [("ann", "pw"), ("bob", "a:b:c")]
    logins = tmp_path / "logins.txt"
    logins.write_text("cy:one,dee:two\n\neve:three\n")
    access = ServeAccess.decide(True, "ann:pw", str(logins))
    assert access.logins == (("ann", "pw"), ("cy", "one"), ("dee", "two"), ("eve", "three"))
    assert access.host == "0.0.0.0" and access.warning() is None
    for bad in ("ann", "ann:", ":pw", "ann:pw,bob"):
        with pytest.raises(StudioError, match="is not written as user:password"):
            ServeAccess.decide(True, bad)
    with pytest.raises(StudioError, match="can not be read"):
        ServeAccess.decide(True, None, str(tmp_path / "missing.txt"))
    with pytest.raises(StudioError, match="login list is empty"):
        ServeAccess.decide(True, " , ")
    opened = ServeAccess.decide(True, insecure_open=True)
    assert opened.logins == () and "without a password" in opened.warning()
    assert ServeAccess.decide(False).host == "127.0.0.1"


def test_a_login_guards_the_page_its_uploads_and_its_events(tmp_path):
    import httpx

    from lora_trainer.project import create_project
    from lora_trainer.ui.context import StudioContext
    from tests.gradio_wire import Wire, served, studio_app

    ctx = StudioContext.for_root(tmp_path / "studio")
    create_project(ctx.root, "alice")
    picture = write_png(tmp_path / "mine.png", 4)
    with served(studio_app(ctx, logins=(("ann", "s3cret"),))) as base:
        stranger = httpx.Client(base_url=base, timeout=30)
        assert stranger.get("/config").status_code == 401
        with open(picture, "rb") as f:
            assert stranger.post("/upload", files={"files": ("mine.png", f)}).status_code == 401
        assert "s3cret" not in stranger.get("/").text
        assert stranger.post("/login", data={"username": "ann", "password": "wrong"}).status_code >= 400
        assert stranger.get("/config").status_code == 401

        wire = Wire(base, login=("ann", "s3cret"))
        received = wire.upload(picture)
        job_id, _ = wire.call("lora_studio_dataset_import", ["alice", "", [wire.file_value(received, "mine.png")],
                                                            False, 2048, False, False])
        assert ctx.jobs.get(job_id).wait(60)
        assert [p.name for p in ctx.jobs.get(job_id).result.imported] == ["mine.png"]


# ----------------------------------------------------------------------------------------------
# 7. Every path an HTTP API body names passes the tab's confinement (TrainConfig.with_paths)


def test_the_api_trains_only_on_paths_the_tab_allows(studio, tmp_path):
    from lora_trainer.host.webui_api import PREFIX
    from tests.test_host_webui_api import FAST, client

    ctx, project = studio
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    keep = outside / "alice-01.safetensors"
    keep.write_bytes(b"the user's own file")
    write_png(outside / "pics" / "a.png", 6)
    c = client(ctx)
    for field, value in [("output_dir", str(outside)), ("checkpoint", str(outside / "model.safetensors")),
                         ("vae", "../../elsewhere/vae.safetensors"), ("network_weights", str(keep)),
                         ("datasets", [{"path": str(outside / "pics"), "repeats": 1}]),
                         ("datasets", [{"path": "../../elsewhere/pics", "repeats": 1}])]:
        r = c.post(f"{PREFIX}/train", json={"project": "alice", "config": {**FAST, field: value}})
        assert r.status_code == 400, (field, r.text)
        assert "outside the folders LoRA Studio may use" in r.json()["error"], r.json()
    assert ctx.jobs.jobs() == []
    assert keep.read_bytes() == b"the user's own file" and files_under(outside) == {"alice-01.safetensors", "pics", "pics/a.png"}


def test_the_tab_reads_no_dataset_outside_the_allowed_folders(tmp_path):
    from lora_trainer.project import create_project
    from lora_trainer.train.config import DatasetFolder, TrainConfig
    from lora_trainer.ui.context import StudioContext
    from lora_trainer.ui.train.session import check

    ctx = StudioContext.for_root(tmp_path / "studio")
    project = create_project(ctx.root, "alice")
    write_png(tmp_path / "elsewhere" / "a.png", 7)
    config = TrainConfig.sd15_defaults().replace(checkpoint="model.safetensors",
                                                 datasets=[DatasetFolder(path=str(tmp_path / "elsewhere"))])
    result = check(ctx, project, config)
    assert any("outside the folders LoRA Studio may use" in e for e in result.errors)
    assert result.train_images == 0  # the folder was not even listed


# ----------------------------------------------------------------------------------------------
# 8. Nothing is lost when a move or a write is cut short (a kill, a full disk), and what a killed
#    write left behind is cleaned up by the next run of the same operation


def test_a_trash_batch_cut_short_is_listed_and_restores(tmp_path, monkeypatch):
    import shutil

    from lora_trainer import trash
    from lora_trainer.project import create_project

    project = create_project(tmp_path, "alice")
    files = {name: f"picture {name}".encode() for name in ("a.png", "b.png", "c.png")}
    for name, data in files.items():
        (project.dataset_dir / name).write_bytes(data)
    real_move, moved = shutil.move, []

    def move_then_fail(src, dst):
        if len(moved) == 1:
            raise OSError(28, "No space left on device")
        moved.append(src)
        return real_move(src, dst)

    monkeypatch.setattr(shutil, "move", move_then_fail)
    with pytest.raises(OSError):
        trash.move_to_trash(project.dir, [project.dataset_dir / n for n in files], "duplicates")
    monkeypatch.setattr(shutil, "move", real_move)
    (batch,) = trash.list_batches(project.dir)
    assert not batch.complete and "cut short" in batch.warning() and batch.files == ("dataset/a.png",)
    trash.restore(project.dir, batch.batch_id)
    assert {p.name: p.read_bytes() for p in project.dataset_dir.iterdir()} == files
    assert trash.list_batches(project.dir) == []


@pytest.mark.parametrize("damage", ["missing", "torn", "not json"])
def test_a_trash_batch_with_a_damaged_manifest_is_listed_and_restores(tmp_path, damage):
    from lora_trainer import trash
    from lora_trainer.project import create_project

    project = create_project(tmp_path, "alice")
    (project.dataset_dir / "sub").mkdir()
    files = {"a.png": b"picture a", "sub/b.txt": b"a caption"}
    for name, data in files.items():
        (project.dataset_dir / name).write_bytes(data)
    batch = trash.move_to_trash(project.dir, [project.dataset_dir / n for n in files], "duplicates")
    manifest = project.dir / trash.TRASH_DIR / batch.batch_id / trash.MANIFEST
    if damage == "missing":
        manifest.unlink()
    else:
        manifest.write_text(manifest.read_text()[:20] if damage == "torn" else "\x00\x00")
    (listed,) = trash.list_batches(project.dir)
    assert listed.batch_id == batch.batch_id and not listed.complete
    assert listed.files == ("dataset/a.png", "dataset/sub/b.txt") and "damaged" in listed.reason
    trash.restore(project.dir, listed.batch_id)
    assert {n: (project.dataset_dir / n).read_bytes() for n in files} == files


def dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_files_of_a_killed_write_are_removed_by_the_next_edit(tmp_path):
    from lora_trainer.dataset.tag_editor import rewrite_captions
    from lora_trainer.fileio import clean_leftovers
    from lora_trainer.project import create_project

    project = create_project(tmp_path, "alice")
    ds = project.dataset_dir
    gone = dead_pid()
    leftover = ds / f".a.txt.{gone}.k3x9.tmp"
    part = ds / f".abc.png.{gone}.q1.part"
    live = ds / f".b.txt.{os.getpid()}.zz.tmp"  # this process is writing it
    users = [ds / ".notes.tmp", ds / f"a.{gone}.b.tmp", ds / "draft.part"]  # not names we make
    for p in (leftover, part, live, *users):
        p.write_text("x")
    assert clean_leftovers(tmp_path / "nowhere") == []
    rewrite_captions(project.dir, {ds / "a.txt": "1girl"}, "tag edit: test")
    assert not leftover.exists() and not part.exists()
    assert live.exists() and all(p.exists() for p in users)
    assert (ds / "a.txt").read_text() == "1girl"


def test_written_files_get_the_umask_and_replaced_files_keep_their_mode(tmp_path):
    import stat

    from lora_trainer.fileio import UMASK, write_text

    write_text(tmp_path / "new.txt", "x")
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o666 & ~UMASK  # not mkstemp's 0600
    (tmp_path / "shared.txt").write_text("old")
    os.chmod(tmp_path / "shared.txt", 0o664)
    write_text(tmp_path / "shared.txt", "new")
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o664


# ----------------------------------------------------------------------------------------------
# 9. One training (and one bulk caption write) per project at a time, across processes; the lock
#    of a killed run is free again


def test_a_second_training_of_a_project_is_refused_with_a_sentence(studio):
    from lora_trainer.host.webui_api import PREFIX
    from lora_trainer.locks import hold
    from tests.test_host_webui_api import FAST, client, wait

    ctx, project = studio
    c = client(ctx)
    with hold(project.dir, "training", "A training of alice"):
        job = wait(c, c.post(f"{PREFIX}/train", json={"project": "alice", "config": FAST}).json()["job"]["id"])
    assert job["status"] == "error"
    assert job["error"].startswith(f"A training of alice is already running on this project (process {os.getpid()}, since ")
    assert not list(project.output_dir.glob("*.safetensors"))


def test_the_lock_of_a_killed_process_is_free_again(tmp_path):
    import signal
    import subprocess
    import sys

    from lora_trainer.locks import hold

    code = ("import sys, time; from lora_trainer.locks import hold\n"
            "with hold(sys.argv[1], 'training', 'A training of bob'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(StudioError, match=rf"A training of bob is already running on this project \(process {child.pid}"):
            with hold(tmp_path, "training", "A training of alice"):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    with hold(tmp_path, "training", "A training of alice") as path:
        assert '"what": "A training of alice"' in path.read_text()
    with hold(tmp_path, "training", "again"):  # released at the end of the block
        pass


# ----------------------------------------------------------------------------------------------
# 10. A picture trains as it looks: 16-bit and float greyscale are scaled, not clipped to white


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_a_16_bit_or_float_grey_picture_trains_as_its_picture(tmp_path, mode):
    import numpy as np
    from PIL import Image

    from lora_trainer.train.data import load_image

    ramp = np.tile(np.linspace(0, 1, 64), (16, 1))  # black to white, left to right
    scale = {"I;16": 65535, "I": 65535, "F": 1.0}[mode]
    data = (ramp * scale).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
    path = tmp_path / ("grey.png" if mode != "F" else "grey.tiff")
    Image.fromarray(data, mode).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I", "F")
    rgb = np.asarray(load_image(path), dtype=np.float64)
    assert rgb.shape == (16, 64, 3)
    assert np.abs(rgb[..., 0] - ramp * 255).max() <= 1.0  # not white: the ramp, within rounding


def test_the_cli_lists_and_restores_the_trash(tmp_path, capsys):
    from lora_trainer import trash
    from lora_trainer.cli import main
    from lora_trainer.project import create_project

    project = create_project(tmp_path, "alice")
    (project.dataset_dir / "a.png").write_bytes(b"picture a")
    batch = trash.move_to_trash(project.dir, [project.dataset_dir / "a.png"], "duplicates")
    assert main(["trash", "--root", str(tmp_path), "--project", "alice"]) == 0
    assert f"{batch.batch_id}" in capsys.readouterr().out
    assert main(["trash", "--root", str(tmp_path), "--project", "alice", "--restore", "nope"]) == 2
    assert "There is no trash batch 'nope'" in capsys.readouterr().err
    assert main(["trash", "--root", str(tmp_path), "--project", "alice", "--restore", batch.batch_id]) == 0
    assert f"Restored 1 files of batch {batch.batch_id} (duplicates)." in capsys.readouterr().out
    assert (project.dataset_dir / "a.png").read_bytes() == b"picture a"
    assert main(["trash", "--root", str(tmp_path), "--project", "alice"]) == 0
    assert "The trash of alice is empty." in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# 11. A full disk is a sentence, and leaves the previous file as it was: caption edits, imports,
#     the training state (run in a child process whose file size limit plays the full disk)

FULL_DISK_CHILD = r"""
import io, json, os, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing the process
root = Path(sys.argv[1])
from PIL import Image
import numpy as np
import torch
from lora_trainer.dataset.importer import import_into_dataset
from lora_trainer.dataset.tag_editor import rewrite_captions
from lora_trainer.errors import StudioError
from lora_trainer.project import open_project
from lora_trainer.train.state import save_state
project = open_project(root, "alice")
ds = project.dataset_dir
Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(root / "noise.png")

class State:
    def to_dict(self):
        return {"weights": torch.zeros(200_000)}

resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
out = {}
for name, run in [("caption", lambda: rewrite_captions(project.dir, {ds / "a.txt": "x" * 200_000}, "tag edit: big")),
                  ("import", lambda: import_into_dataset([root / "noise.png"], ds, project.dir)),
                  ("state", lambda: save_state(project.dir / "state.pt", State()))]:
    try:
        run()
        out[name] = "no error"
    except StudioError as e:
        out[name] = str(e)
    except BaseException as e:
        out[name] = f"traceback: {type(e).__name__}: {e}"
print(json.dumps(out))
"""


def test_a_full_disk_is_a_sentence_and_the_old_file_stays(tmp_path):
    import json
    import subprocess
    import sys

    from lora_trainer.project import create_project

    project = create_project(tmp_path, "alice")
    (project.dataset_dir / "a.txt").write_text("1girl, smile")
    (project.dir / "state.pt").write_bytes(b"the previous state")
    child = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout.strip().splitlines()[-1])
    for name, target in [("caption", project.dataset_dir / "a.txt"), ("import", project.dataset_dir / "noise.png"),
                         ("state", project.dir / "state.pt")]:
        assert out[name].startswith(f"There is no room on the disk to write {target}."), (name, out[name])
    assert (project.dataset_dir / "a.txt").read_text() == "1girl, smile"
    assert (project.dir / "state.pt").read_bytes() == b"the previous state"
    assert sorted(p.name for p in project.dataset_dir.iterdir()) == ["a.txt"]  # no picture, no temp file
    assert not [p for p in project.dir.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------------------
# 12. Odd input that used to end in a traceback or in silence: each is a sentence


def test_an_archive_with_a_file_and_a_folder_of_one_name_imports_what_it_can(tmp_path):
    z = zip_with(tmp_path / "x.zip", {"a.png": make_image(1), "a.png/b.png": make_image(2)})
    summary = import_into_dataset([z], tmp_path / "ds", tmp_path)
    assert files_under(tmp_path / "ds") == {"a.png"}
    assert [r.reason for r in summary.rejected] == ["its folder 'a.png' can not be made in the dataset: a file there has that name"]
    z2 = zip_with(tmp_path / "y.zip", {"c.png/d.png": make_image(3), "c.png": make_image(4)})
    import_into_dataset([z2], tmp_path / "ds2", tmp_path)
    assert files_under(tmp_path / "ds2") == {"c.png", "c.png/d.png", "c_1.png"}  # renamed, nothing lost


def test_pictures_that_are_left_alone_say_why(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "logo.svg").write_text("<svg/>")
    (src / "photo.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    lines = import_into_dataset([src], tmp_path / "ds", tmp_path).lines()
    assert "  .heic: HEIC (iPhone photos) is not readable here; export as JPEG (Photos: Most Compatible) or convert it" in lines
    assert any(line.startswith("  .svg: a vector drawing, not pixels; export it as PNG") for line in lines)


def test_a_name_with_a_line_break_is_refused_on_one_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "two\nlines.png").write_bytes(make_image(1))
    lines = import_into_dataset([src], tmp_path / "ds", tmp_path).lines()
    (refused,) = [line for line in lines if line.startswith("rejected:")]
    assert "two\\nlines.png" in refused and "control character" in refused
    assert files_under(tmp_path / "ds") == set()


@pytest.mark.parametrize("body", ['{"post": "x"}', '"hello"', '{"@attributes": {"count": 3}, "post": 7}'])
def test_booru_json_of_the_wrong_shape_is_a_sentence(tmp_path, body):
    from tests.booru_server import serve_text

    with serve_text(body) as url:
        with pytest.raises(StudioError, match="answered with JSON of a form LoRA Studio does not know") as e:
            download(GelbooruClient(api_url=url + "/index.php", http=fast_http()), "1girl", tmp_path, ScrapeOptions(cap=3))
        assert "--api-url" in e.value.fix
        with pytest.raises(StudioError, match="answered with JSON of a form LoRA Studio does not know"):
            download(DanbooruClient(api_url=url, http=fast_http()), "1girl", tmp_path, ScrapeOptions(cap=3))


def test_a_redirect_loop_is_a_sentence(tmp_path):
    from tests.booru_server import serve_text

    with serve_text("", redirect_to="/index.php") as url:
        with pytest.raises(StudioError, match="sends the request round in a loop of redirects"):
            download(GelbooruClient(api_url=url + "/index.php", http=fast_http()), "1girl", tmp_path, ScrapeOptions(cap=3))


def test_a_folder_given_as_the_checkpoint_is_named_a_folder(tmp_path):
    from lora_trainer.host.standalone import StandaloneHost

    with pytest.raises(StudioError, match="is a folder, not a model file") as e:
        StandaloneHost(tmp_path)
    assert "single-file SD1.5 or SDXL checkpoint" in e.value.fix
    with pytest.raises(StudioError, match="does not exist"):
        StandaloneHost(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("to_jpeg", [False, True])
def test_importing_a_folder_again_after_a_shrink_adds_nothing(tmp_path, to_jpeg):
    import numpy as np
    from PIL import Image

    from lora_trainer.dataset.importer import ImportOptions, ShrinkOptions

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(src / "a.png")
    (src / "a.txt").write_text("1girl")
    options = ImportOptions(shrink=ShrinkOptions(128, to_jpeg))
    first = import_into_dataset([src], tmp_path / "ds", tmp_path, options)
    again = import_into_dataset([src], tmp_path / "ds", tmp_path, options)
    name = "a.jpg" if to_jpeg else "a.png"
    assert [p.name for p in first.imported] == ["a.png"] and again.imported == [] and again.already_present == 1
    assert files_under(tmp_path / "ds") == {name, "a.txt"}
    with Image.open(tmp_path / "ds" / name) as im:
        assert max(im.size) == 128


def test_settings_that_contradict_themselves_are_refused():
    from lora_trainer.train.config import TrainConfig, validate

    config = TrainConfig.sd15_defaults().replace(min_bucket_reso=1024, max_bucket_reso=256, keep_tokens=99999)
    problems = {p.field: p.message for p in validate(config) if p.is_error}
    assert problems["min_bucket_reso"] == "must be between 64 and the resolution (512)."
    assert problems["max_bucket_reso"] == "must be at least the resolution (512)."
    assert problems["keep_tokens"] == "must be at most 225: more tags than a caption of 225 tokens can hold."
    assert "keep_tokens" not in {p.field for p in validate(TrainConfig.sd15_defaults().replace(keep_tokens=3))}


def test_a_name_of_255_bytes_imports_and_renames_within_the_limit(tmp_path):
    from PIL import Image

    src, ds = tmp_path / "src", tmp_path / "ds"
    src.mkdir()
    ds.mkdir()
    stem = "x" * (NAME_MAX_BYTES - 4)  # "xxx…x.png" is exactly 255 bytes
    Image.new("RGB", (8, 8), (1, 2, 3)).save(src / f"{stem}.png")
    (src / f"{stem}.txt").write_text("1girl")
    Image.new("RGB", (8, 8), (9, 9, 9)).save(ds / f"{stem}.png")  # another picture holds the name
    summary = import_into_dataset([src], ds, tmp_path)
    assert summary.rejected == [] and len(summary.renamed) == 1
    (new,) = summary.imported
    assert len(new.name.encode()) <= NAME_MAX_BYTES and new.stem.endswith("_1")
    assert new.with_suffix(".txt").read_text() == "1girl"


def test_asking_whether_a_writer_lives_never_signals_it(monkeypatch):
    # On Windows os.kill(pid, 0) terminates the process: the leftover cleaner must not call it there.
    from lora_trainer import fileio

    calls, gone = [], dead_pid()
    monkeypatch.setattr(fileio.os, "kill", lambda pid, sig: calls.append((pid, sig)))
    monkeypatch.setattr(fileio, "_alive_windows", lambda pid: True)
    monkeypatch.setattr(fileio.os, "name", "nt")
    assert fileio._alive(gone) is True and calls == []
