"""The X/Y/Z plot rules: axis CSV parsing and Prompt S/R, as AUTOMATIC1111 1.10's xyz_grid.py has them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lora_trainer.compare import xyz
from lora_trainer.errors import StudioError


@pytest.mark.parametrize(
    "text, values",
    [
        ("-01, -02, -03", ["-01", "-02", "-03"]),
        ("a,b ,  c", ["a", "b", "c"]),  # skipinitialspace, then strip
        ('"a, b", c', ["a, b", "c"]),  # quotes keep a comma inside a value
        ('"say ""hi""", x', ['say "hi"', "x"]),  # a doubled quote inside quotes is one quote
        (":0.5>, :0.6>", [":0.5>", ":0.6>"]),
        ("<lora:x-01:, <lora:x-02:", ["<lora:x-01:", "<lora:x-02:"]),
        ("a,,b", ["a", "", "b"]),  # empty values are kept (a replacement by nothing)
        ("a, b\nc", ["a", "b", "c"]),  # every line of the text box
        ("", []),
    ],
)
def test_axis_values_parse_like_the_webui(text, values):
    assert xyz.parse_axis_values(text) == values


def test_unterminated_quote_reads_to_the_end_as_python_csv_does():
    assert xyz.parse_axis_values('"a, b') == ["a, b"]  # csv.reader is not strict, nor is the WebUI


@given(st.lists(st.text(alphabet='ab ,"<>:-.01\n', min_size=1).map(str.strip), min_size=1, max_size=6))
def test_format_then_parse_round_trips(values):
    assert xyz.parse_axis_values(xyz.format_axis_values(values)) == (values if values != [""] else [])


def test_format_quotes_only_what_needs_it():
    assert xyz.format_axis_values([":0.5>", "a, b", 'q"']) == ':0.5>, "a, b", "q"""'


def test_prompt_sr_replaces_every_occurrence_in_both_prompts():
    p, n = xyz.prompt_sr("x-01, <lora:x-01:0.5>", "bad x-01", "x-01", "x-02")
    assert (p, n) == ("x-02, <lora:x-02:0.5>", "bad x-02")


def test_prompt_sr_first_value_renders_the_prompt_unchanged():
    values = ["x-01", "x-02"]
    assert xyz.apply_axes("a <lora:x-01:1>", "n", [(values, values[0])]) == ("a <lora:x-01:1>", "n")


def test_prompt_sr_found_only_in_negative_is_enough():
    assert xyz.prompt_sr("cat", "blurry", "blurry", "noisy") == ("cat", "noisy")


def test_prompt_sr_missing_search_string_is_the_webuis_error():
    with pytest.raises(StudioError, match=r"^Prompt S/R did not find :0\.7> in prompt or negative prompt\."):
        xyz.prompt_sr("a <lora:x-01:0.5>", "", ":0.7>", ":0.5>")


def test_axes_apply_x_then_y():
    x = [":0.5>", ":1>"]
    y = ["x-01", "x-02"]
    assert xyz.apply_axes("<lora:x-01:0.5>", "", [(x, ":1>"), (y, "x-02")]) == ("<lora:x-02:1>", "")
    # Y's search runs on X's result: a Y value made of X's first text fails after X changed it
    with pytest.raises(StudioError):
        xyz.apply_axes("<lora:x-01:0.5>", "", [(x, ":1>"), (["x-01:0.5>", "x-02:0.5>"], "x-02:0.5>")])


def test_infotext_fields_are_quoted_like_the_webui():
    fields = xyz.xyz_fields([(xyz.SR_TYPE, [":0.5>", ":1>"]), (xyz.SR_TYPE, ["x-01", "x-02"])])
    assert fields == {
        "Script": "X/Y/Z plot",
        "X Type": "Prompt S/R",
        "X Values": ":0.5>, :1>",
        "Y Type": "Prompt S/R",
        "Y Values": "x-01, x-02",
    }
    line = xyz.append_fields("p\nSteps: 20", fields)
    assert line == 'p\nSteps: 20, Script: X/Y/Z plot, X Type: Prompt S/R, X Values: ":0.5>, :1>", Y Type: Prompt S/R, Y Values: "x-01, x-02"'
