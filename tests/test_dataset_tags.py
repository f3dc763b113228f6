"""Pure tag operations: exact expected captions, and properties that hold for any caption."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lora_trainer.dataset import tags as T


def ops(caption: str, fn, *args, **kwargs) -> str:
    """Parse, apply, join: the whole round trip a caption file goes through."""
    return T.join_tags(fn(T.parse_tags(caption), *args, **kwargs))


# ----------------------------------------------------------------------------------------------
# Parsing


def test_parse_trims_and_drops_empty_entries():
    assert T.parse_tags(" 1girl ,solo,, blue hair , ,\n") == ["1girl", "solo", "blue hair"]
    assert T.parse_tags("") == []
    assert T.parse_tags(" , ,") == []


def test_parse_keeps_tag_text_exactly():
    assert T.parse_tags("Blue_Hair, \\(cosplay\\), (smile:1.2)") == ["Blue_Hair", "\\(cosplay\\)", "(smile:1.2)"]


def test_join_uses_comma_space():
    assert T.join_tags(["a", "b c", "d"]) == "a, b c, d"
    assert T.join_tags([]) == ""


def test_split_tag_args_flattens_comma_lists():
    assert T.split_tag_args(["a, b", " c ", ""]) == ["a", "b", "c"]


def test_wildcard_matching_is_whole_tag_and_literal_otherwise():
    assert T.matches("blue hair", "*hair")
    assert T.matches("hair", "*hair")
    assert not T.matches("hair ornament", "*hair")
    assert T.matches("a.b", "a.b") and not T.matches("axb", "a.b")  # '.' is literal
    assert T.matches("(x)", "(*)")
    assert not T.matches("blue hair", "blue")


# ----------------------------------------------------------------------------------------------
# Operations with exact results


def test_activation_tags_go_first_in_given_order():
    assert ops("a, b, c", T.add_activation, ["sks"]) == "sks, a, b, c"
    assert ops("a, sks, b", T.add_activation, ["sks"]) == "sks, a, b"
    assert ops("a, style, b, sks", T.add_activation, ["sks", "style"]) == "sks, style, a, b"
    assert ops("sks, a, sks", T.add_activation, ["sks"]) == "sks, a"
    assert ops("", T.add_activation, ["sks", "sks"]) == "sks"


def test_remove_exact_and_by_pattern():
    assert ops("a, b, c, b", T.remove_tags, ["b"]) == "a, c"
    assert ops("blue hair, long hair, hair ornament, solo", T.remove_tags, (), ["*hair"]) == "hair ornament, solo"
    assert ops("blue eyes, solo", T.remove_tags, ["solo"], ["blue*"]) == ""
    assert ops("a, b", T.remove_tags, ["x"]) == "a, b"


def test_merge_places_target_once_at_first_occurrence():
    assert ops("x, b, a, c", T.merge_tags, "a", ["b", "c"]) == "x, a"
    assert ops("x, c, y", T.merge_tags, "a", ["b", "c"]) == "x, a, y"
    assert ops("a, x, a", T.merge_tags, "a", ["b"]) == "a, x"
    assert ops("x, y", T.merge_tags, "a", ["b"]) == "x, y"


def test_replace_with_conditions():
    assert ops("x, old, y", T.replace_tag, "old", ["new"]) == "x, new, y"
    assert ops("x, old, y", T.replace_tag, "old", ["new"], if_any=["z", "y"]) == "x, new, y"
    assert ops("x, old, y", T.replace_tag, "old", ["new"], if_any=["z"]) == "x, old, y"
    assert ops("x, old, y", T.replace_tag, "old", ["new"], if_all=["x", "y"]) == "x, new, y"
    assert ops("x, old, y", T.replace_tag, "old", ["new"], if_all=["x", "z"]) == "x, old, y"
    assert ops("x, old, y", T.replace_tag, "old", ["new"], if_any=["x"], if_all=["z"]) == "x, old, y"


def test_replace_makes_no_duplicates_and_can_remove_or_split():
    assert ops("new, old", T.replace_tag, "old", ["new"]) == "new"
    assert ops("old, a, old", T.replace_tag, "old", ["n1", "n2"]) == "n1, n2, a"
    assert ops("a, old, b", T.replace_tag, "old", []) == "a, b"
    assert ops("a, b", T.replace_tag, "old", ["new"]) == "a, b"


def test_replace_text_inside_tags():
    assert ops("blue_hair, long_hair, solo", T.replace_text, "_", " ") == "blue hair, long hair, solo"
    assert ops("blue_hair, solo", T.replace_text, "_", " ", if_any=["x"]) == "blue_hair, solo"
    assert ops("a_b, ab", T.replace_text, "_", ",") == "a, b, ab"  # a comma makes two tags
    assert ops("xx, a", T.replace_text, "xx", "") == "a"  # an emptied tag is dropped


def test_sort_alpha_and_by_frequency_with_activation_first():
    assert ops("b, C, a, sks", T.sort_tags, "alpha", activation=["sks"]) == "sks, a, b, C"
    counts = {"a": 1, "b": 5, "c": 3}
    assert ops("a, c, b, zz, sks", T.sort_tags, "freq", counts, ["sks"]) == "sks, b, c, a, zz"
    assert ops("b, a, b", T.sort_tags) == "a, b, b"  # sorting does not dedupe
    with pytest.raises(ValueError, match="alpha, freq"):
        T.sort_tags(["a"], "length")


def test_dedupe_keeps_first():
    assert ops("a, b, a, c, b", T.dedupe_tags) == "a, b, c"


def test_frequency_table_counts_images_and_filters():
    captions = [["a", "b", "a"], ["b", "c"], ["b"], []]
    table = T.frequency_table(captions)
    assert table["tag"].tolist() == ["b", "a", "c"]
    assert table["count"].tolist() == [3, 1, 1]
    assert table["share"].tolist() == [0.75, 0.25, 0.25]
    assert T.frequency_table(captions, search="B")["tag"].tolist() == ["b"]
    assert T.frequency_table(captions, top=1)["tag"].tolist() == ["b"]
    assert T.frequency_table([["blue hair", "hair ornament"]], search="*hair")["tag"].tolist() == ["blue hair"]
    empty = T.frequency_table([])
    assert empty.empty and list(empty.columns) == ["tag", "count", "share"]


# ----------------------------------------------------------------------------------------------
# Properties

# A small alphabet makes collisions (repeated tags, shared tags) common.
tag = st.text(alphabet="ab _()", min_size=1, max_size=4).map(str.strip).filter(bool)
tag_list = st.lists(tag, max_size=8)
FEW = settings(max_examples=80, deadline=None)


@FEW
@given(tag_list)
def test_parse_join_round_trip(tags):
    assert T.parse_tags(T.join_tags(tags)) == tags


@FEW
@given(tag_list, st.sampled_from(T.SORT_KEYS), st.dictionaries(tag, st.integers(0, 5)), st.lists(tag, max_size=2))
def test_sort_is_idempotent_and_a_permutation(tags, by, counts, activation):
    once = T.sort_tags(tags, by, counts, activation)
    assert T.sort_tags(once, by, counts, activation) == once
    assert sorted(once) == sorted(tags)


@FEW
@given(tag_list)
def test_dedupe_is_idempotent_and_keeps_every_tag(tags):
    once = T.dedupe_tags(tags)
    assert T.dedupe_tags(once) == once
    assert set(once) == set(tags) and len(once) == len(set(tags))


@FEW
@given(tag_list, st.lists(tag, min_size=1, max_size=3))
def test_activation_tags_always_first(tags, activation):
    out = T.add_activation(tags, activation)
    front = list(dict.fromkeys(activation))
    assert out[: len(front)] == front
    assert out.count(front[0]) == 1
    assert set(out) == set(tags) | set(activation)


@FEW
@given(tag_list, tag, st.lists(tag, min_size=1, max_size=3))
def test_merge_loses_nothing_but_the_sources(tags, target, sources):
    out = T.merge_tags(tags, target, sources)
    group = set(sources) | {target}
    assert [t for t in out if t not in group] == [t for t in tags if t not in group]
    assert (target in out) == any(t in group for t in tags)
    assert out.count(target) <= 1
    assert not (set(sources) - {target}) & set(out)


@FEW
@given(st.lists(tag_list, max_size=6), st.lists(tag, min_size=1, max_size=2))
def test_removed_tags_count_zero(captions, removed):
    after = [T.remove_tags(c, removed) for c in captions]
    counts = T.tag_counts(after)
    assert all(counts[t] == 0 for t in removed)
    assert not set(T.frequency_table(after)["tag"]) & set(removed)
