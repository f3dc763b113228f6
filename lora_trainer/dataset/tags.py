"""Pure operations on one caption's tags (a list of strings) and on the tags of a whole dataset.

A caption is the comma-separated tag list kohya reads from `<image>.txt`. Every function here
takes and returns plain lists or strings and touches no file, so the dataset editor, the UI and
the tests share one behaviour. A tag is compared by its exact text: `blue_hair` and `blue hair`
are different tags (renaming one into the other is a `replace`).

Each operation that moves tags keeps the *first* occurrence's position, the way a person reading
the caption left to right would expect; kohya's `keep_tokens` counts from the front, which is why
activation tags always go first.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pandas is imported only by frequency_table, to keep `--help` fast
    import pandas as pd

SortKey = Literal["alpha", "freq"]
SORT_KEYS: tuple[str, ...] = ("alpha", "freq")
SEPARATOR = ", "  # what the Dataset Maker and the WD taggers write between tags

# ----------------------------------------------------------------------------------------------
# Text <-> tags


def parse_tags(caption: str) -> list[str]:
    """Split a caption at commas, trim whitespace around each tag, and drop empty entries."""
    return [t.strip() for t in caption.split(",") if t.strip()]


def join_tags(tags: Sequence[str]) -> str:
    """Join tags into caption text with ", " between them."""
    return SEPARATOR.join(tags)


def split_tag_args(values: Iterable[str]) -> list[str]:
    """Flatten user input where one entry may hold several comma-separated tags ("a, b" -> a, b)."""
    return [t for v in values for t in parse_tags(v)]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Compile a tag pattern where `*` matches any run of characters and everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def matches(tag: str, pattern: str) -> bool:
    """True if the whole tag matches `pattern` (`*` wildcards; without `*` an exact comparison)."""
    if "*" not in pattern:
        return tag == pattern
    return pattern_regex(pattern).fullmatch(tag) is not None


# ----------------------------------------------------------------------------------------------
# Operations on one caption


def dedupe_tags(tags: Sequence[str]) -> list[str]:
    """Drop repeated tags, keeping each tag's first occurrence and the order."""
    return list(dict.fromkeys(tags))


def add_activation(tags: Sequence[str], activation: Sequence[str]) -> list[str]:
    """Put the activation tags first, in their given order; copies elsewhere are moved, not duplicated."""
    front = dedupe_tags(activation)
    wanted = set(front)
    return front + [t for t in tags if t not in wanted]


def remove_tags(tags: Sequence[str], exact: Collection[str] = (), patterns: Sequence[str] = ()) -> list[str]:
    """Drop every tag equal to one in `exact` or matching one of `patterns` (`*` wildcards)."""
    exact = set(exact)
    regexes = [pattern_regex(p) for p in patterns]
    return [t for t in tags if t not in exact and not any(r.fullmatch(t) for r in regexes)]


def merge_tags(tags: Sequence[str], target: str, sources: Collection[str]) -> list[str]:
    """Fold `sources` into `target`: one `target` at the first position any of them (or it) held."""
    group = set(sources) | {target}
    out: list[str] = []
    placed = False
    for t in tags:
        if t in group:
            if not placed:
                out.append(target)
                placed = True
        else:
            out.append(t)
    return out


def condition_holds(tags: Sequence[str], if_any: Collection[str] = (), if_all: Collection[str] = ()) -> bool:
    """True if the caption has at least one tag of `if_any` and every tag of `if_all` (empty = no condition)."""
    present = set(tags)
    if if_any and present.isdisjoint(if_any):
        return False
    return set(if_all) <= present


def replace_tag(
    tags: Sequence[str],
    old: str,
    new: Sequence[str],
    if_any: Collection[str] = (),
    if_all: Collection[str] = (),
) -> list[str]:
    """Replace tag `old` by the tags `new` (none = remove) where the condition holds; no duplicates made."""
    if old not in tags or not condition_holds(tags, if_any, if_all):
        return list(tags)
    # Tags `new` adds at `old`'s place must not appear twice; tags the caption already had stay put.
    already = set(tags) - {old}
    insert = [t for t in dedupe_tags(new) if t not in already]
    out: list[str] = []
    for t in tags:
        if t == old:
            out.extend(insert)
            insert = []  # only the first occurrence of `old` receives the new tags
        else:
            out.append(t)
    return out


def replace_text(
    tags: Sequence[str],
    old: str,
    new: str,
    if_any: Collection[str] = (),
    if_all: Collection[str] = (),
) -> list[str]:
    """Replace the substring `old` by `new` inside every tag where the condition holds (e.g. "_" -> " ")."""
    if not old or not condition_holds(tags, if_any, if_all):
        return list(tags)
    # The result is re-parsed, so a replacement that introduces a comma makes two tags and one
    # that empties a tag drops it, exactly as the text would read after a save and reload.
    return [p for t in tags for p in parse_tags(t.replace(old, new))]


def _alpha_key(tag: str) -> tuple[str, str]:
    """Case-insensitive order, ties broken by the exact text so the order is total (and sorting idempotent)."""
    return tag.casefold(), tag


def sort_tags(
    tags: Sequence[str],
    by: SortKey = "alpha",
    counts: Mapping[str, int] | None = None,
    activation: Sequence[str] = (),
) -> list[str]:
    """Sort tags alphabetically or by dataset frequency (most common first); activation tags stay first."""
    if by not in SORT_KEYS:
        raise ValueError(f"sort by {by!r}: expected one of {', '.join(SORT_KEYS)}")
    pinned = set(activation)
    front = [a for a in dedupe_tags(activation) if a in tags for _ in range(tags.count(a))]
    rest = [t for t in tags if t not in pinned]
    counts = counts or {}
    if by == "alpha":
        rest.sort(key=_alpha_key)
    else:
        rest.sort(key=lambda t: (-counts.get(t, 0), *_alpha_key(t)))
    return front + rest


# ----------------------------------------------------------------------------------------------
# Across a dataset


def tag_counts(captions: Iterable[Sequence[str]]) -> Counter[str]:
    """How many captions (images) contain each tag; a tag repeated within one caption counts once."""
    counts: Counter[str] = Counter()
    for tags in captions:
        counts.update(set(tags))
    return counts


def frequency_table(captions: Sequence[Sequence[str]], search: str = "", top: int | None = None) -> pd.DataFrame:
    """A table of tag, count and share of images, most common first, filtered by a search text.

    `search` keeps tags containing it (case-insensitive); with a `*` it is a whole-tag pattern.
    """
    import pandas as pd

    counts = tag_counts(captions)
    n_images = len(captions)
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], *_alpha_key(kv[0])))
    if search:
        if "*" in search:
            regex = re.compile(pattern_regex(search).pattern, re.IGNORECASE | re.DOTALL)
            rows = [r for r in rows if regex.fullmatch(r[0])]
        else:
            needle = search.casefold()
            rows = [r for r in rows if needle in r[0].casefold()]
    if top is not None:
        rows = rows[: max(top, 0)]
    table = pd.DataFrame(rows, columns=["tag", "count"])
    table["count"] = table["count"].astype("int64")
    table["share"] = table["count"] / n_images if n_images else 0.0
    return table
