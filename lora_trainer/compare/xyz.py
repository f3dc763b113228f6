"""The WebUI's X/Y/Z plot rules we follow exactly: axis text as CSV, and Prompt S/R.

From AUTOMATIC1111 1.10 `scripts/xyz_grid.py` (reference/webui-host.md section 5.1):
- An axis's text box is read with `csv.reader(..., skipinitialspace=True)` over all its lines and
  each value is stripped, so a value with a comma needs double quotes (`"a, b", c`), a doubled
  quote inside quotes is one quote, and empty values are kept.
- Prompt S/R: the axis's FIRST value is the search string. Each cell replaces every occurrence of
  it (`str.replace`) in the prompt AND the negative prompt with the cell's value; the first cell
  therefore renders the prompt unchanged. A search string found in neither prompt is an error.
- A cell applies the X axis, then Y, then Z, each to the result of the one before.
- The grid's infotext adds `Script: X/Y/Z plot`, `X Type`, `X Values`, ... so a saved grid can be
  pasted back into txt2img.

Nothing here imports torch or PIL: the UI uses it to check axis text as the user types.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence

from ..errors import StudioError
from ..infotext import fields_line

SR_TYPE = "Prompt S/R"
SEED_TYPE = "Seed"


def parse_axis_values(text: str) -> list[str]:
    """Axis text -> values, as the WebUI's `csv_string_to_list_strip` reads it."""
    try:
        rows = csv.reader(io.StringIO(text), skipinitialspace=True)
        return [value.strip() for value in itertools.chain.from_iterable(rows)]
    except csv.Error as e:
        raise StudioError(f"The axis values {text!r} are not valid CSV ({e}).", 'Quote values that contain commas: "a, b", c.') from e


def _csv_value(value: str) -> str:
    if value != value.strip():
        raise ValueError(f"axis value {value!r} has surrounding spaces, which the WebUI strips")
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def format_axis_values(values: Sequence[str]) -> str:
    """Values -> axis text that `parse_axis_values` (and the WebUI) reads back as the same values."""
    return ", ".join(_csv_value(v) for v in values)


def prompt_sr(prompt: str, negative: str, search: str, value: str) -> tuple[str, str]:
    """One Prompt S/R cell: replace every `search` by `value` in both prompts (the WebUI's apply_prompt)."""
    if search not in prompt and search not in negative:
        raise StudioError(
            f"Prompt S/R did not find {search} in prompt or negative prompt.",
            "The first value of a Prompt S/R axis must be text that is in the prompt.",
        )
    return prompt.replace(search, value), negative.replace(search, value)


def apply_axes(prompt: str, negative: str, axes: Sequence[tuple[Sequence[str], str]]) -> tuple[str, str]:
    """Apply S/R axes in order (X, then Y, then Z): each is (the axis values, this cell's value)."""
    for values, value in axes:
        prompt, negative = prompt_sr(prompt, negative, values[0], value)
    return prompt, negative


def xyz_fields(axes: Sequence[tuple[str, Sequence[str]]]) -> dict[str, str]:
    """The grid infotext fields of up to three axes, given as (type, values) for X, Y, Z."""
    if len(axes) > 3:
        raise ValueError(f"the X/Y/Z plot has 3 axes, got {len(axes)}")
    fields = {"Script": "X/Y/Z plot"}
    for letter, (kind, values) in zip("XYZ", axes):
        fields[f"{letter} Type"] = kind
        fields[f"{letter} Values"] = format_axis_values(values)
    return fields


def append_fields(infotext: str, fields: dict[str, str]) -> str:
    """Add `Key: value` pairs to the last line of an infotext (its parameter line)."""
    extra = fields_line(fields.items())
    if not infotext:
        return extra
    return f"{infotext}, {extra}"
