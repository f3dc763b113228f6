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
    assert files_under(tmp_path) == {"in.zip", "dataset", "dataset/good", "dataset/good/ok.png"}


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
    from lora_trainer.ui.standalone import create_app
    from tests.gradio_wire import Wire, served

    ctx = StudioContext.for_root(tmp_path / "studio")
    project = create_project(ctx.root, "alice")
    with served(create_app(ctx)) as base:
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
    from lora_trainer.ui.standalone import create_app
    from tests.gradio_wire import Wire, served

    ctx = StudioContext.for_root(tmp_path / "studio")
    create_project(ctx.root, "alice")
    picture = write_png(tmp_path / "mine.png", 4)
    with served(create_app(ctx, logins=(("ann", "s3cret"),))) as base:
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
