"""Grid drawing: geometry, cell placement and labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont

from lora_trainer.compare import grid as G


def solid(w: int, h: int, colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def cells(rows: int, cols: int, w: int = 64, h: int = 48) -> list[list[Image.Image]]:
    return [[solid(w, h, (40 * r + 10, 30 * c + 20, 200)) for c in range(cols)] for r in range(rows)]


def test_size_is_cells_plus_label_bands_and_cells_are_in_place():
    img, layout = G.draw_grid(cells(2, 3), ["alice-01", "alice-02"], ["0.5", "0.75", "1"])
    assert layout.pad_left >= 64 * 3 // 4 and layout.pad_top > 0
    assert img.size == (3 * 64 + layout.pad_left, 2 * 48 + layout.pad_top)
    assert img.mode == "RGB"
    a = np.asarray(img)
    for r in range(2):
        for c in range(3):
            x, y = layout.cell_origin(r, c)
            assert (x, y) == (layout.pad_left + 64 * c, layout.pad_top + 48 * r)
            assert (a[y:y + 48, x:x + 64] == (40 * r + 10, 30 * c + 20, 200)).all()


def test_webui_proportions_for_large_cells():
    _, layout = G.draw_grid(cells(1, 2, 512, 512), ["e"], ["a", "b"])
    assert layout.font_size == (512 + 512) // 25
    assert layout.pad_left == 512 * 3 // 4  # the WebUI's left band
    assert layout.pad_top == layout.line_height + 2 * layout.line_spacing


def test_labels_are_drawn_where_they_belong():
    img, layout = G.draw_grid(cells(2, 2), ["r-01", "r-02"], ["0.5", "1"])
    a = np.asarray(img).astype(int)
    white = np.array(G.BACKGROUND)
    for c in range(2):  # each column label: dark pixels in the top band above its column
        x, _ = layout.cell_origin(0, c)
        band = a[: layout.pad_top, x:x + 64]
        assert (band.sum(-1) < 300).sum() > 5
    for r in range(2):
        _, y = layout.cell_origin(r, 0)
        band = a[y:y + 48, : layout.pad_left]
        assert (band.sum(-1) < 300).sum() > 5
    assert (a[: layout.pad_top, : layout.pad_left] == white).all()  # the corner stays empty
    # different texts draw differently
    x0, x1 = layout.cell_origin(0, 0)[0], layout.cell_origin(0, 1)[0]
    assert not np.array_equal(a[: layout.pad_top, x0:x0 + 64], a[: layout.pad_top, x1:x1 + 64])


def test_no_labels_means_no_bands():
    img, layout = G.draw_grid(cells(2, 2), ["", ""], ["", ""])
    assert (layout.pad_left, layout.pad_top) == (0, 0)
    assert img.size == (128, 96)


def test_margin_between_cells():
    img, layout = G.draw_grid(cells(2, 3), ["a", "b"], ["x", "y", "z"], margin=4)
    assert img.size == (layout.pad_left + 3 * 64 + 2 * 4, layout.pad_top + 2 * 48 + 4)


def test_long_labels_wrap_and_multiline_labels_keep_their_lines():
    _, layout = G.draw_grid(cells(2, 1, 64, 64), ["alice-01\nseed 7", "alice-02\nseed 9"], ["a very long column label indeed"])
    assert layout.row_lines[0] == ("alice-01", "seed 7")
    assert len(layout.col_lines[0]) > 1
    assert layout.pad_top == layout.block_height(layout.col_lines[0]) + 2 * layout.line_spacing
    # the left band is at least as wide as the widest word, so no file name is cut
    assert layout.pad_left >= 64 * 3 // 4


def test_font_falls_back_without_scalable_default(monkeypatch):
    original = ImageFont.load_default

    def old_pillow(*args, **kwargs):
        if args or kwargs:
            raise TypeError("load_default() takes no arguments")
        return original()

    monkeypatch.setattr(ImageFont, "load_default", old_pillow)
    img, layout = G.draw_grid(cells(1, 2), ["r"], ["a", "b"])
    assert img.size == (layout.pad_left + 128, layout.pad_top + 48)


def test_cells_of_different_sizes_are_refused():
    bad = [[solid(64, 48, (0, 0, 0)), solid(32, 48, (0, 0, 0))]]
    with pytest.raises(ValueError, match=r"cell \(0, 1\) is \(32, 48\)"):
        G.draw_grid(bad, ["r"], ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        G.draw_grid(cells(1, 2), ["r", "s"], ["a", "b"])
