"""Drawing the grid: cells in rows and columns, labels on top and on the left, like the WebUI's.

The WebUI (`modules/images.py` draw_grid_annotations) sizes its labels from the cell: font size
(w + h) / 25, a left margin of 3/4 of a cell width, a top margin as tall as the tallest column
label plus a line spacing above and below, labels word-wrapped to the space they have and
centred. We do the same with two changes: the font is never smaller than MIN_FONT_SIZE (small
test or preview cells would get unreadable 3-pixel text) and the left margin is never narrower
than the longest word of a row label (a file name such as `alice-10` is one word).

Fonts: a TrueType file when one is given (inside the WebUI, its bundled Roboto), else Pillow's
own font: scalable with `load_default(size=...)` (Pillow >= 10.1), else its small bitmap font.
System fonts are never looked up, so a grid looks the same on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

MIN_FONT_SIZE = 12
BACKGROUND = (255, 255, 255)  # the WebUI's grid_background_color
TEXT = (0, 0, 0)  # its grid_text_active_color


def load_font(size: int, path: str | Path | None = None) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A TrueType font from `path`, else Pillow's default at `size` where Pillow can scale it."""
    if path is not None:
        return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType
    except (TypeError, ImportError, OSError):  # older Pillow (no `size`), or Pillow without FreeType
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Lines of `text` (explicit newlines kept) with words packed greedily into `width` pixels."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}" if line else word
            if line and _text_size(draw, trial, font)[0] > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


@dataclass(frozen=True)
class GridLayout:
    """Where everything goes. The image is (pad_left + cols*cell_w + (cols-1)*margin) wide and
    (pad_top + rows*cell_h + (rows-1)*margin) tall."""

    rows: int
    cols: int
    cell_w: int
    cell_h: int
    pad_left: int  # the row labels' band
    pad_top: int  # the column labels' band
    margin: int  # between cells
    font_size: int
    line_height: int
    line_spacing: int
    row_lines: tuple[tuple[str, ...], ...]
    col_lines: tuple[tuple[str, ...], ...]

    @property
    def size(self) -> tuple[int, int]:
        return (
            self.pad_left + self.cols * self.cell_w + (self.cols - 1) * self.margin,
            self.pad_top + self.rows * self.cell_h + (self.rows - 1) * self.margin,
        )

    def cell_origin(self, row: int, col: int) -> tuple[int, int]:
        return self.pad_left + col * (self.cell_w + self.margin), self.pad_top + row * (self.cell_h + self.margin)

    def block_height(self, lines: Sequence[str]) -> int:
        return len(lines) * self.line_height + (len(lines) - 1) * self.line_spacing if lines else 0


def plan_layout(
    cell_w: int,
    cell_h: int,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    font=None,
    font_path: str | Path | None = None,
    margin: int = 0,
) -> tuple[GridLayout, object]:
    """The layout of a grid of cells of this size with these labels, and the font it uses."""
    font_size = max(MIN_FONT_SIZE, (cell_w + cell_h) // 25)
    font = font or load_font(font_size, font_path)
    spacing = max(2, font_size // 2)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = _text_size(scratch, "Ag|", font)[1]
    has_row_labels = any(label for label in row_labels)
    pad_left = 0
    if has_row_labels:
        longest_word = max(_text_size(scratch, w, font)[0] for label in row_labels for w in label.replace("\n", " ").split(" "))
        pad_left = max(cell_w * 3 // 4, longest_word + 2 * spacing)
    row_lines = tuple(tuple(wrap(scratch, label, font, max(pad_left - 2 * spacing, 1))) if label else () for label in row_labels)
    col_lines = tuple(tuple(wrap(scratch, label, font, cell_w)) if label else () for label in col_labels)
    tallest = max((len(ls) * line_height + (len(ls) - 1) * spacing for ls in col_lines if ls), default=0)
    pad_top = tallest + 2 * spacing if tallest else 0
    layout = GridLayout(
        rows=len(row_labels), cols=len(col_labels), cell_w=cell_w, cell_h=cell_h, pad_left=pad_left, pad_top=pad_top,
        margin=margin, font_size=font_size, line_height=line_height, line_spacing=spacing,
        row_lines=row_lines, col_lines=col_lines,
    )
    return layout, font


def _draw_block(draw: ImageDraw.ImageDraw, cx: float, top: float, lines: Sequence[str], font, layout: GridLayout) -> None:
    y = top
    for line in lines:
        w, _ = _text_size(draw, line, font)
        left, t, _, _ = draw.textbbox((0, 0), line, font=font)
        draw.text((cx - w / 2 - left, y - t), line, fill=TEXT, font=font)
        y += layout.line_height + layout.line_spacing


def draw_grid(
    cells: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    font_path: str | Path | None = None,
    margin: int = 0,
) -> tuple[Image.Image, GridLayout]:
    """cells[row][col] (all one size) under column labels and beside row labels, on white, as RGB."""
    rows, cols = len(cells), len(cells[0]) if cells else 0
    if rows != len(row_labels) or cols != len(col_labels) or any(len(r) != cols for r in cells):
        raise ValueError(f"{rows}x{cols} cells for {len(row_labels)} row and {len(col_labels)} column labels")
    cell_w, cell_h = cells[0][0].size
    for r, row in enumerate(cells):
        for c, img in enumerate(row):
            if img.size != (cell_w, cell_h):
                raise ValueError(f"cell ({r}, {c}) is {img.size}, the first is {(cell_w, cell_h)}")
    layout, font = plan_layout(cell_w, cell_h, row_labels, col_labels, font_path=font_path, margin=margin)
    grid = Image.new("RGB", layout.size, BACKGROUND)
    for r, row in enumerate(cells):
        for c, img in enumerate(row):
            grid.paste(img.convert("RGB"), layout.cell_origin(r, c))
    draw = ImageDraw.Draw(grid)
    for c, lines in enumerate(layout.col_lines):
        x, _ = layout.cell_origin(0, c)
        _draw_block(draw, x + cell_w / 2, (layout.pad_top - layout.block_height(lines)) / 2, lines, font, layout)
    for r, lines in enumerate(layout.row_lines):
        _, y = layout.cell_origin(r, 0)
        _draw_block(draw, layout.pad_left / 2, y + (cell_h - layout.block_height(lines)) / 2, lines, font, layout)
    return grid, layout
