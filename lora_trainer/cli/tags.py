"""`python -m lora_trainer tags --project NAME ACTION ...`: edit a dataset's caption tags, with undo."""

from __future__ import annotations

import argparse

NAME = "tags"
HELP = "edit the caption tags of a project's dataset: frequencies, activation tags, remove, merge, replace, undo"


def _comma_list(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_project_arguments

    add_project_arguments(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = actions.add_parser("freq", help="show the most common tags with their counts")
    p.add_argument("--top", type=int, default=50, help="how many tags to show (default 50, as the Colab)")
    p.add_argument("--search", default="", help="only tags containing this text (a '*' makes it a pattern)")

    p = actions.add_parser("activate", help="put activation tag(s) first in every caption")
    p.add_argument("tags", nargs="+", metavar="TAG")

    p = actions.add_parser("remove", help="remove tags from every caption ('*' is a wildcard)")
    p.add_argument("tags", nargs="+", metavar="TAG")
    p.add_argument("--exact", action="store_true", help="treat '*' as an ordinary character")

    p = actions.add_parser("merge", help="merge SOURCE tags into TARGET")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("sources", nargs="+", metavar="SOURCE")

    p = actions.add_parser("replace", help="replace tag OLD by NEW (comma-separated tags, or '' to remove)")
    p.add_argument("old", metavar="OLD")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--if-any", type=_comma_list, default=[], metavar="T,...", help="only captions with any of these")
    p.add_argument("--if-all", type=_comma_list, default=[], metavar="T,...", help="only captions with all of these")
    p.add_argument("--text", action="store_true", help="replace OLD as text inside every tag (e.g. '_' by ' ')")

    p = actions.add_parser("sort", help="sort each caption's tags (activation tags stay first)")
    p.add_argument("--by", choices=["alpha", "freq"], default="alpha")
    p.add_argument("--activation", type=_comma_list, default=[], metavar="T,...", help="tags that stay first")

    actions.add_parser("dedupe", help="remove repeated tags within each caption")
    actions.add_parser("undo", help="undo the most recent tag edit")
    actions.add_parser("history", help="list the tag edits that can be undone")


def _files(n: int) -> str:
    return f"{n} caption file" if n == 1 else f"{n} caption files"


def _print_freq(table, search: str) -> None:
    if table.empty:
        print(f"No tags{f' matching {search!r}' if search else ''} in the dataset.")
        return
    width = max(len(str(c)) for c in table["count"])
    print(f"The {len(table)} most common tags{f' matching {search!r}' if search else ''}:")
    for tag, count, share in table.itertuples(index=False):
        print(f"  {count:>{width}}  {share * 100:5.1f}%  {tag}")


def run(args: argparse.Namespace) -> int:
    import time

    from ..dataset import tag_editor as E
    from ._common import project_of

    project = project_of(args)
    d, ds = project.dir, project.dataset_dir
    if args.action == "freq":
        _print_freq(E.frequencies(d, top=args.top, search=args.search, dataset_dir=ds), args.search)
        return 0
    if args.action == "history":
        batches = E.history(d)
        if not batches:
            print("There are no tag edits to undo.")
        for b in batches:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.created))
            print(f"  {when}  {b.reason[len(E.REASON_PREFIX) :]}  ({_files(len(b.files))})")
        return 0
    if args.action == "undo":
        batch = E.undo(d)
        if batch is None:
            print("There is no tag edit to undo.")
        else:
            print(f"Undid {batch.reason[len(E.REASON_PREFIX) :]!r}: {_files(len(batch.files))} restored.")
        return 0
    if args.action == "activate":
        result = E.activate(d, args.tags, dataset_dir=ds)
    elif args.action == "remove":
        result = E.remove(d, args.tags, dataset_dir=ds, wildcards=not args.exact)
    elif args.action == "merge":
        result = E.merge(d, args.target, args.sources, dataset_dir=ds)
    elif args.action == "replace":
        result = E.replace(d, args.old, args.new, args.if_any, args.if_all, substring=args.text, dataset_dir=ds)
    elif args.action == "sort":
        result = E.sort(d, args.by, args.activation, dataset_dir=ds)
    else:  # dedupe; argparse has already refused any other action
        result = E.dedupe(d, dataset_dir=ds)
    print(result.message)
    return 0
