"""`python -m lora_trainer scrape --tags "..." --project NAME`: download a booru search into a dataset."""

from __future__ import annotations

import argparse
import os
import sys

NAME = "scrape"
HELP = "download images of a Gelbooru (or Danbooru, Safebooru) search into a project's dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_project_arguments

    parser.add_argument("--tags", required=True, help='the search, e.g. "1girl solo -monochrome score:>=10 rating:general"')
    add_project_arguments(parser, create_if_missing=True)
    parser.add_argument("--limit", type=int, default=1000, help="at most this many posts (default 1000, as the Dataset Maker)")
    parser.add_argument("--site", choices=["gelbooru", "danbooru", "safebooru"], default="gelbooru")
    parser.add_argument("--api-url", default="", help="the site's API address (default: the site's own)")
    parser.add_argument("--api-key", default=None, help="API key (default: $<SITE>_API_KEY, e.g. $GELBOORU_API_KEY)")
    parser.add_argument("--user-id", default=None, help="numeric user id, Danbooru: login (default: $<SITE>_USER_ID)")
    parser.add_argument("--max-side", type=int, default=4096, help="take the site's smaller sample for originals with a longer side (px)")
    parser.add_argument("--tags-as-captions", action="store_true", help="write each post's tags as its caption .txt")
    parser.add_argument("--rate", type=float, default=2.0, help="at most this many requests per second (default 2)")
    parser.add_argument("--yes", action="store_true", help="download without asking after the preview")


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    from ..dataset.booru import Http, HttpConfig, make_client
    from ..dataset.scrape import ScrapeOptions, download, preview
    from ..errors import StudioError
    from ._common import project_of
    from ._console import ConsoleProgress

    if args.limit < 1:
        raise StudioError(f"--limit must be at least 1, not {args.limit}.")
    if args.rate <= 0:
        raise StudioError(f"--rate must be a positive number of requests per second, not {args.rate}.")
    site = args.site.upper()
    key = args.api_key if args.api_key is not None else os.environ.get(f"{site}_API_KEY", "")
    user = args.user_id if args.user_id is not None else os.environ.get(f"{site}_USER_ID", "")
    client = make_client(args.site, args.api_url, key, user, Http(HttpConfig(requests_per_s=args.rate)))

    project = project_of(args, create_if_missing=True)

    p = preview(client, args.tags, cap=args.limit)
    if p.count == 0:
        print(f"No results on {p.site} for {p.tags!r}.")
        return 0
    print(f"{p.site}: {p.count if p.count is not None else 'an unknown number of'} results for {p.tags!r}")
    print(f"  see them: {p.search_url}")
    for url in p.thumbnails[:3]:
        print(f"  thumbnail: {url}")
    question = f"Download up to {p.planned or args.limit} images into {project.dataset_dir}?"
    if not args.yes and not _confirm(question):
        print(f"{question} Not confirmed: nothing downloaded (add --yes to skip the question).")
        return 1
    options = ScrapeOptions(cap=args.limit, max_side=args.max_side, tags_as_captions=args.tags_as_captions)
    result = download(client, args.tags, project.dataset_dir, options, progress=ConsoleProgress())
    print(result.summary().capitalize() + ".")
    return 0
