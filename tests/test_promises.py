"""The studio's promises about hostile and broken input, one test (or a few) per promise.

Read top to bottom, this is the list of what LoRA Studio guarantees when the outside world
misbehaves: a booru that lies, an archive with tricks in it, a visitor of the page who names
server files. Each section says the promise; the tests try more than one shape of the attack.
"""

from __future__ import annotations

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
from tests.test_dataset_booru import fast_http

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
