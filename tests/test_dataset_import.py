"""Image import with hostile inputs, the shrink with its undo, and scan_dataset."""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from lora_trainer.cli import main as cli_main
from lora_trainer.dataset.images import BadImage, inspect_image, to_rgb
from lora_trainer.dataset.importer import (
    ImportOptions,
    ShrinkOptions,
    import_into_dataset,
    scan_dataset,
    shrink_images,
)
from lora_trainer.errors import Cancelled, StudioError
from lora_trainer.progress import CancelToken
from lora_trainer.trash import list_batches, restore


def image_bytes(fmt: str = "PNG", size=(16, 12), mode: str = "RGB", color=(200, 30, 60), **save) -> bytes:
    im = Image.new(mode, size, color)
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def noisy_jpeg(size=(64, 64)) -> bytes:
    rng = random.Random(0)
    im = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_header_only(w: int, h: int) -> bytes:
    """A valid PNG signature and IHDR claiming w x h pixels, with no real pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def palette_png_with_transparency() -> bytes:
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    im.putpixel((0, 0), 0)
    buf = io.BytesIO()
    im.save(buf, "PNG", transparency=0)
    return buf.getvalue()


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "proj" / "dataset").mkdir(parents=True)
    return tmp_path / "proj"


def run_import(sources, project: Path, **options):
    return import_into_dataset(sources, project / "dataset", project, ImportOptions(**options))


def rejected_reasons(summary) -> dict[str, str]:
    return {Path(r.path.split(":")[-1]).name: r.reason for r in summary.rejected}


# ----------------------------------------------------------------------------------------------
# Hostile files


def test_broken_and_mislabelled_files(tmp_path, project):
    src = tmp_path / "src"
    src.mkdir()
    (src / "truncated.jpg").write_bytes(noisy_jpeg()[:1500])
    (src / "random.png").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(500)))
    (src / "really_png.jpg").write_bytes(image_bytes("PNG"))
    (src / "really_png.txt").write_text("red square", "utf-8")
    (src / "fine.jpeg").write_bytes(image_bytes("JPEG"))
    s = run_import(src, project)
    reasons = rejected_reasons(s)
    assert set(reasons) == {"truncated.jpg", "random.png"}
    assert "broken image data" in reasons["truncated.jpg"] and "truncated" in reasons["truncated.jpg"]
    assert reasons["random.png"] == "not an image Pillow can read"
    ds = project / "dataset"
    assert sorted(f.name for f in ds.iterdir()) == ["fine.jpeg", "really_png.png", "really_png.txt"]
    assert (ds / "really_png.png").read_bytes() == (src / "really_png.jpg").read_bytes()
    assert (ds / "really_png.txt").read_text("utf-8") == "red square"
    assert any("a PNG file, saved as really_png.png" in f for f in s.fixed)
    assert s.images == {".": 2} and s.captions == {".": 1}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bombs_are_refused_from_the_header(tmp_path, project):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bomb.png").write_bytes(png_header_only(100_000, 100_000))  # 10 gigapixels: Pillow refuses
    (src / "big.png").write_bytes(png_header_only(12_000, 12_000))  # 144 MP: above the 89 MP limit
    s = run_import(src, project)
    reasons = rejected_reasons(s)
    assert "decompression bomb" in reasons["bomb.png"]
    assert "12000x12000 pixels is more than the limit" in reasons["big.png"]
    assert list((project / "dataset").iterdir()) == []
    with pytest.raises(BadImage, match="more than the limit of 100"):
        inspect_image(image_bytes(size=(16, 12)), max_pixels=100)


def test_cmyk_is_converted_and_palette_alpha_kept(tmp_path, project):
    src = tmp_path / "src"
    src.mkdir()
    (src / "print.jpg").write_bytes(image_bytes("JPEG", mode="CMYK", color=(0, 255, 255, 0)))
    pal = palette_png_with_transparency()
    (src / "sprite.png").write_bytes(pal)
    (src / "anim.gif").write_bytes(image_bytes("GIF", mode="P", color=3))
    s = run_import(src, project)
    ds = project / "dataset"
    with Image.open(ds / "print.jpg") as im:
        assert im.mode == "RGB" and im.format == "JPEG"
        r, g, b = im.getpixel((4, 4))
        assert r > 200 and g < 60 and b < 60  # CMYK (0,255,255,0) is red
    assert (ds / "sprite.png").read_bytes() == pal  # stored byte for byte, transparency included
    with Image.open(ds / "anim.png") as im:
        assert im.format == "PNG"
    assert sorted(s.fixed) == sorted([f"{src / 'anim.gif'}: GIF converted to PNG", f"{src / 'print.jpg'}: CMYK converted to RGB"])


def test_to_rgb_flattens_transparency_onto_white():
    with Image.open(io.BytesIO(palette_png_with_transparency())) as im:
        rgb = to_rgb(im)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 1)) == (255, 0, 0)


def test_zip_slip_is_refused(tmp_path, project):
    good = image_bytes("PNG")
    zpath = tmp_path / "upload.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name in ("../evil.png", "/abs.png", "a/../../evil2.png", "C:/win.png", "..\\back.png"):
            z.writestr(name, good)
        z.writestr("10_miku/ok.png", good)
        z.writestr("10_miku/ok.caption", "miku")
        z.writestr("__MACOSX/10_miku/._ok.png", b"junk")
        z.writestr("readme.md", "hello")
    s = run_import(zpath, project)
    assert len(s.rejected) == 5 and all("can not be a file name" in r.reason for r in s.rejected)
    assert s.images == {"10_miku": 1} and s.captions == {"10_miku": 1}
    assert (project / "dataset" / "10_miku" / "ok.txt").read_text() == "miku"  # .caption arrives as .txt
    assert not list(tmp_path.rglob("evil*.png")) and not list(tmp_path.rglob("win.png"))
    assert "upload.zip:readme.md" in s.others and "upload.zip:__MACOSX/10_miku/._ok.png" in s.others


def test_names_never_collide(tmp_path, project):
    ds = project / "dataset"
    a = image_bytes("PNG", color=(1, 2, 3))
    (ds / "a.png").write_bytes(a)
    (ds / "a.txt").write_text("old caption")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(image_bytes("PNG", color=(9, 9, 9)))
    (src / "a.txt").write_text("new caption")
    (src / "a.jpg").write_bytes(image_bytes("JPEG"))  # same stem, other image: kohya pairs captions by stem
    s = run_import(src, project)
    assert (ds / "a.png").read_bytes() == a and (ds / "a.txt").read_text() == "old caption"
    # a.txt belonged to both source images (kohya pairs by stem), so each copy gets it
    assert sorted(f.name for f in ds.iterdir()) == ["a.png", "a.txt", "a_1.jpg", "a_1.txt", "a_2.png", "a_2.txt"]
    assert (ds / "a_1.txt").read_text() == (ds / "a_2.txt").read_text() == "new caption"
    assert (ds / "a_2.png").read_bytes() == (src / "a.png").read_bytes()
    assert len(s.renamed) == 2
    # the same bytes under the same name are recognised, not copied again
    again = tmp_path / "again"
    again.mkdir()
    (again / "a.png").write_bytes(a)
    s2 = run_import(again, project)
    assert s2.already_present == 1 and s2.imported == []


def test_uploaded_files_land_at_the_top(tmp_path, project):
    up = tmp_path / "gradio_tmp" / "x1"
    up.mkdir(parents=True)
    (up / "one.webp").write_bytes(image_bytes("WEBP"))
    (up / "two.png").write_bytes(image_bytes("PNG"))
    s = run_import([up / "one.webp", str(up / "two.png")], project)
    assert s.images == {".": 2}
    assert sorted(f.name for f in (project / "dataset").iterdir()) == ["one.webp", "two.png"]


def test_others_are_listed_or_trashed(tmp_path, project):
    ds = project / "dataset"
    (ds / "notes.docx").write_bytes(b"PK..")
    src = tmp_path / "src"
    src.mkdir()
    (src / "img.png").write_bytes(image_bytes())
    (src / "orphan.txt").write_text("no image")
    (src / "script.py").write_text("print()")
    s = run_import(src, project)
    assert sorted(s.others) == sorted([f"{src / 'orphan.txt'} (a caption without an imported image)", str(src / "script.py")])
    assert (src / "script.py").exists() and (ds / "notes.docx").exists()
    s2 = run_import([], project, trash_others=True)
    assert s2.trashed_others == ["dataset/notes.docx"] and not (ds / "notes.docx").exists()
    assert list_batches(project)[0].reason == "import: not an image or caption"


def test_refuses_sources_inside_or_around_the_dataset(project):
    with pytest.raises(StudioError, match="already inside the dataset"):
        run_import(project / "dataset", project)
    with pytest.raises(StudioError, match="is inside"):
        run_import(project, project)
    with pytest.raises(StudioError, match="does not exist"):
        run_import(project / "nope", project)


def test_cancel_stops_between_files(tmp_path, project):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"{i}.png").write_bytes(image_bytes(color=(i, i, i)))
    token = CancelToken()

    def progress(event):
        if event.text.startswith("importing 3/"):
            token.cancel()

    with pytest.raises(Cancelled):
        import_into_dataset(src, project / "dataset", project, progress=progress, cancel=token)
    assert sorted(f.name for f in (project / "dataset").iterdir()) == ["0.png", "1.png"]


# ----------------------------------------------------------------------------------------------
# Shrink


def test_shrink_keeps_originals_in_the_trash_and_restores(project):
    ds = project / "dataset"
    big = image_bytes("PNG", size=(64, 32))
    (ds / "big.png").write_bytes(big)
    small = image_bytes("JPEG", size=(10, 10))
    (ds / "small.jpg").write_bytes(small)
    s = shrink_images([ds / "big.png", ds / "small.jpg"], project, ShrinkOptions(max_side=16))
    assert s.resized == [ds / "big.png"] and s.converted == []
    with Image.open(ds / "big.png") as im:
        assert im.size == (16, 8) and im.format == "PNG"
    assert (ds / "small.jpg").read_bytes() == small
    restore(project, s.trash_batch)
    assert (ds / "big.png").read_bytes() == big


def test_shrink_to_jpeg_flattens_alpha_onto_white(project):
    ds = project / "dataset"
    im = Image.new("RGBA", (40, 40), (0, 0, 255, 255))
    for x in range(20):
        for y in range(40):
            im.putpixel((x, y), (0, 0, 0, 0))  # left half transparent (black underneath)
    im.save(ds / "alpha.png")
    original = (ds / "alpha.png").read_bytes()
    s = shrink_images([ds / "alpha.png"], project, ShrinkOptions(max_side=20, to_jpeg=True, quality=90))
    assert s.converted == [ds / "alpha.jpg"] and not (ds / "alpha.png").exists()
    with Image.open(ds / "alpha.jpg") as out:
        assert out.size == (20, 20) and out.mode == "RGB"
        assert min(out.getpixel((2, 10))) > 240  # white, not black
        r, _g, b = out.getpixel((17, 10))
        assert b > 200 and r < 40
    restore(project, s.trash_batch)
    assert (ds / "alpha.png").read_bytes() == original


def test_shrink_rejects_bad_settings(project):
    with pytest.raises(StudioError, match="positive number of pixels"):
        shrink_images([], project, ShrinkOptions(max_side=0))
    with pytest.raises(StudioError, match="between 1 and 100"):
        shrink_images([], project, ShrinkOptions(max_side=10, quality=101))


# ----------------------------------------------------------------------------------------------
# scan_dataset and the CLI


def test_scan_dataset_counts_per_folder(project):
    ds = project / "dataset"
    (ds / "10_a").mkdir()
    (ds / "5_b").mkdir()
    for name in ("10_a/1.png", "10_a/2.jpg", "5_b/3.webp", "top.png"):
        (ds / name).write_bytes(b"x")
    for name in ("10_a/1.txt", "5_b/3.txt", "5_b/orphan.txt"):
        (ds / name).write_text("tag")
    (ds / "notes.md").write_text("")
    (ds / ".hidden").mkdir()
    (ds / ".hidden" / "x.png").write_bytes(b"x")
    s = scan_dataset(ds)
    assert len(s.images) == 4 and len(s.captions) == 2
    assert sorted(p.name for p in s.missing_captions) == ["2.jpg", "top.png"]
    assert [p.name for p in s.orphan_captions] == ["orphan.txt"] and [p.name for p in s.others] == ["notes.md"]
    assert {k: (v.images, v.captions) for k, v in s.folders.items()} == {".": (1, 0), "10_a": (2, 1), "5_b": (1, 1)}
    assert scan_dataset(project / "missing").images == ()


def test_cli_import_with_shrink(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(image_bytes("PNG", size=(64, 48)))
    (src / "a.txt").write_text("a")
    (src / "b.png").write_bytes(b"not an image")
    assert cli_main(["import", str(src), "--project", "p", "--root", str(tmp_path / "root"), "--shrink", "32", "--to-jpeg"]) == 0
    ds = tmp_path / "root" / "p" / "dataset"
    assert sorted(f.name for f in ds.iterdir()) == ["a.jpg", "a.txt"]
    with Image.open(ds / "a.jpg") as im:
        assert im.size == (32, 24)
    out = capsys.readouterr().out
    assert "imported 1 images and 1 captions" in out and "rejected:" in out and "b.png" in out
    assert cli_main(["import", str(src), "--project", "p", "--root", str(tmp_path / "root"), "--to-jpeg"]) == 2
