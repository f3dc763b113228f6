"""A phone portrait (pixels stored lying down, EXIF orientation 6 = "rotate 90° clockwise to view")
is seen upright everywhere: the tagger, the captioner, the duplicate finder, thumbnails, training,
and a shrunk copy (which keeps no EXIF tag, so its pixels must be turned)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lora_trainer.dataset.captioner import _open_rgb
from lora_trainer.dataset.dedupe import _load_for_embedding
from lora_trainer.dataset.images import upright
from lora_trainer.dataset.importer import ShrinkOptions, shrink_images
from lora_trainer.dataset.tagger import load_for_tagger
from lora_trainer.project import create_project
from lora_trainer.train.data import image_size, load_image
from lora_trainer.ui.dataset.common import thumbnail

RED, BLUE = (255, 0, 0), (0, 0, 255)
ORIENTATION = 0x0112


@pytest.fixture
def portrait(tmp_path):
    """Stored 80x40, red on the left half, blue on the right; shown 40x80, red on top."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = RED
    pixels[:, 40:] = BLUE
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    return path


def colour_at(im: Image.Image, x: int, y: int) -> str:
    r, g, b = im.convert("RGB").getpixel((x, y))[:3]
    return "red" if r > 200 and b < 60 else "blue" if b > 200 and r < 60 else f"other {r, g, b}"


def test_upright_turns_the_pixels(portrait):
    with Image.open(portrait) as im:
        assert im.size == (80, 40)
        shown = upright(im)
    assert shown.size == (40, 80)
    assert (colour_at(shown, 20, 10), colour_at(shown, 20, 70)) == ("red", "blue")


def test_every_reader_sees_it_upright(portrait, tmp_path):
    assert _open_rgb(portrait).size == (40, 80)  # the captioner
    w, h = _load_for_embedding(portrait).size  # the duplicate finder
    assert h == 2 * w
    assert image_size(portrait) == (40, 80) and load_image(portrait).size == (40, 80)  # training

    # The tagger centres the picture on a white square: upright, the top middle is red (BGR),
    # lying down it would be white padding.
    square = load_for_tagger(portrait, 32)
    assert square.shape == (32, 32, 3)
    b, g, r = square[2, 16]
    assert r > 200 and b < 60, square[2, 16]

    project = create_project(tmp_path / "studio", "p")
    with Image.open(thumbnail(project, portrait, side=64)) as thumb:
        assert thumb.size == (32, 64) and colour_at(thumb, 16, 5) == "red"


def test_a_shrunk_copy_stands_upright_without_the_tag(portrait, tmp_path):
    project = create_project(tmp_path / "studio", "p")
    inside = project.dataset_dir / portrait.name
    portrait.rename(inside)
    summary = shrink_images([inside], project.dir, ShrinkOptions(max_side=40))
    assert summary.trash_batch  # the original is kept
    with Image.open(inside) as im:
        assert im.size == (20, 40)
        assert im.getexif().get(ORIENTATION) in (None, 1)
        assert (colour_at(im, 10, 5), colour_at(im, 10, 35)) == ("red", "blue")
