"""The README's settings reference is the one generated from TrainConfig (no browser needed)."""

from __future__ import annotations

import dataclasses

from lora_trainer.train.config import DatasetFolder, TrainConfig
from tests.browser.gen_settings_table import (
    README,
    readme_table,
    settings_rows,
    settings_table,
)


def test_every_setting_has_a_row_with_its_reason():
    keys = [key for _, key, *_ in settings_rows()]
    expected = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "datasets"]
    expected += [f"datasets[].{f.name}" for f in dataclasses.fields(DatasetFolder)]
    assert sorted(keys) == sorted(expected)
    assert len(keys) == len(set(keys))
    no_reason = [key for _, key, _, _, meaning in settings_rows() if not meaning]
    assert no_reason == [], "give these fields a comment in train/config.py"
    assert all(part for part, *_ in settings_rows())


def test_defaults_are_written_as_in_project_toml():
    rows = {key: (a, b) for _, key, a, b, _ in settings_rows()}
    assert rows["arch"] == ('`"sd15"`', '`"sdxl"`')
    assert rows["resolution"] == ("`512`", "`1024`")
    assert rows["datasets[].repeats"] == ("`10`", "`2`")
    assert rows["shuffle_tags"] == ("`true`", "`true`")
    assert rows["v_parameterization"][0] == "*(from the checkpoint)*"


def test_readme_table_is_the_generated_one():
    held = readme_table(README.read_text("utf-8"))
    assert held is not None, "README.md lost its settings-table markers"
    assert held == settings_table(), "README's settings table is stale: run .venv/bin/python tests/browser/gen_settings_table.py --write"
