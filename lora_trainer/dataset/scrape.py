"""Scrape a booru search into a dataset folder: first a preview, then, once confirmed, the download.

`preview` costs two small requests and shows what a search would bring (the count, a few
thumbnails, the link to the same search on the site). `download` lists up to `cap` posts of a
supported type (png, jpg, jpeg, webp; the Dataset Maker's 1000-post cap), skips posts whose
image the dataset already has (by the post's md5, and by the md5 of every image already in the
folder), and saves each file as `<md5>.<ext>`: streamed to a hidden `.part` beside it, checked
against Content-Length and decoded by Pillow, then renamed. A cancel or an error never leaves a
`.part`; one left by a killed run is removed when the next download into the folder starts.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ..errors import Cancelled, StudioError
from ..fileio import clean_leftovers, publish, temp_beside, write_text
from ..paths import inside
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from .booru import BooruClient, Http, NetworkError, Post, ext_of_url, redact_url
from .images import (
    CAPTION_EXT,
    BadImage,
    file_md5,
    inspect_image,
    is_image_name,
    iter_files,
)

SUPPORTED_EXTS = ("png", "jpg", "jpeg", "webp")  # gif, webm, mp4 and zip posts are skipped
_MD5_NAME = re.compile(r"^(?:sample_)?([0-9a-f]{32})$")


@dataclass(frozen=True)
class ScrapeOptions:
    cap: int = 1000  # at most this many posts of a supported type: the Dataset Maker's total_limit
    page_limit: int = 100  # posts per API request: Gelbooru's maximum
    # Originals with a longer side than this are replaced by the site's sample. The guide swaps at
    # 3072x3072 pixels of area; samples are about 850 px wide (below SDXL's 1024), so only files
    # far beyond training size are swapped.
    max_side: int = 4096
    tags_as_captions: bool = False  # write the post's own tags as <name>.txt (underscores -> spaces)
    # A bigger file is refused (Content-Length, or counted as it arrives when a server sends none):
    # Danbooru and Gelbooru take uploads of at most 50-100 MB, so more is not a picture.
    max_file_bytes: int = 200 << 20


@dataclass(frozen=True)
class ScrapePreview:
    site: str
    tags: str
    count: int | None  # matching posts, as the site counts them (all types); None if unknown
    planned: int | None  # at most this many will be considered: min(count, cap)
    search_url: str  # the same search on the site's web pages
    thumbnails: tuple[str, ...]  # preview_url of the first few posts


@dataclass
class ScrapeResult:
    downloaded: list[Path] = field(default_factory=list)
    captions: list[Path] = field(default_factory=list)
    skipped_existing: int = 0  # already in the dataset (same md5)
    skipped_type: int = 0  # gif, webm, mp4, ...
    failed: list[tuple[str, str]] = field(default_factory=list)  # (url without query, reason)
    listed: int = 0  # posts of a supported type taken from the search (<= cap)

    def summary(self) -> str:
        parts = [f"downloaded {len(self.downloaded)} of {self.listed} posts"]
        if self.skipped_existing:
            parts.append(f"{self.skipped_existing} already in the dataset")
        if self.skipped_type:
            parts.append(f"{self.skipped_type} skipped (not png/jpg/webp)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.captions:
            parts.append(f"{len(self.captions)} tag captions written")
        return ", ".join(parts)


def _check_tags(tags: str) -> str:
    tags = " ".join(tags.split())
    if not tags:
        raise StudioError("The search has no tags.", "Type at least one tag, e.g. `1girl solo -monochrome`.")
    return tags


def preview(client: BooruClient, tags: str, cap: int = ScrapeOptions.cap, n_thumbnails: int = 8) -> ScrapePreview:
    """What a search would download, before anything is downloaded."""
    tags = _check_tags(tags)
    count = client.count(tags)
    posts = client.search(tags, page=0, limit=max(1, min(n_thumbnails, client.max_limit)))
    thumbs = tuple(p.preview_url for p in posts if p.preview_url)[:n_thumbnails]
    planned = None if count is None else min(count, cap)
    return ScrapePreview(client.site, tags, count, planned, client.search_page_url(tags), thumbs)


def known_md5s(dataset_dir: Path) -> set[str]:
    """md5 of every image under the folder, plus md5s in names (a sample saved as `<post md5>.jpg`)."""
    found = set()
    if dataset_dir.is_dir():
        for f in iter_files(dataset_dir):
            if is_image_name(f.name):
                found.add(file_md5(f))
                m = _MD5_NAME.match(f.stem.lower())
                if m:
                    found.add(m.group(1))
    return found


def choose_url(post: Post, max_side: int) -> str:
    """The original, or its sample when the original's longer side exceeds max_side and a sample exists."""
    if max_side and max(post.width, post.height) > max_side and post.sample_url:
        return post.sample_url
    return post.file_url


def tags_to_caption(tags: tuple[str, ...]) -> str:
    """Booru tags -> caption text: `long_hair` -> `long hair` (kaomoji keep underscores), joined by ", "."""
    from .tagger import format_tag  # numpy comes with it: only when captions are wanted
    from .tags import join_tags

    return join_tags([format_tag(t) for t in tags])


class TruncatedDownload(Exception):
    pass


def _too_large(url: str, max_bytes: int) -> NetworkError:
    size = f"{max_bytes >> 20} MB" if max_bytes >= 1 << 20 else f"{max_bytes} bytes"
    return NetworkError(f"{redact_url(url)} is larger than {size}, so it is not downloaded.")


def fetch_to_file(
    http: Http,
    url: str,
    dest: Path,
    verify: Callable[[Path], object] | None = None,
    cancel: CancelToken | None = None,
    chunk: int = 1 << 16,
    max_bytes: int | None = None,
) -> str:
    """Download `url` to `dest` through a hidden `.part` beside it; return the md5 of the bytes.

    More than `max_bytes` (announced, or counted while it arrives) raises NetworkError at once.

    A short body (fewer bytes than Content-Length, or a dropped connection) is retried as often as
    the Http config allows, then raises NetworkError. `verify(part)` may raise to refuse the file.
    The `.part` is removed on every failure and on cancel.
    """
    part = temp_beside(dest, ".part")
    attempts = http.config.retries + 1
    problem = ""
    try:
        for attempt in range(attempts):
            if attempt:
                http.sleep(http.backoff(attempt - 1))
            r = http.get(url, stream=True, what=f"Downloading {redact_url(url)}")
            try:
                if r.status_code != 200:
                    raise NetworkError(f"{redact_url(url)} answered HTTP {r.status_code}.")
                # Content-Length counts the bytes on the wire; with gzip they differ from what we write
                encoded = r.headers.get("Content-Encoding", "identity").lower() not in ("identity", "")
                expected = None if encoded else r.headers.get("Content-Length")
                if max_bytes is not None and expected is not None and expected.isdigit() and int(expected) > max_bytes:
                    raise _too_large(url, max_bytes)
                h, got = hashlib.md5(), 0
                try:
                    with open(part, "wb") as f:  # a retry starts the file again
                        for block in r.iter_content(chunk):
                            if cancel is not None:
                                cancel.raise_if_cancelled()
                            got += len(block)
                            if max_bytes is not None and got > max_bytes:
                                raise _too_large(url, max_bytes)
                            f.write(block)
                            h.update(block)
                    if expected is not None and expected.isdigit() and got != int(expected):
                        raise TruncatedDownload(f"got {got} of {expected} bytes")
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout, TruncatedDownload) as e:
                    problem = str(e) if isinstance(e, TruncatedDownload) else f"connection dropped ({type(e).__name__})"
                    continue
            finally:
                r.close()
            if verify is not None:
                verify(part)
            publish(part, dest)  # durable, with the umask's permissions
            return h.hexdigest()
        raise NetworkError(f"{redact_url(url)}: the download stayed incomplete after {attempts} attempts ({problem}).")
    finally:
        if part.exists():
            part.unlink()


def download(
    client: BooruClient,
    tags: str,
    dataset_dir: str | os.PathLike,
    options: ScrapeOptions = ScrapeOptions(),
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> ScrapeResult:
    """Download up to `options.cap` posts of a search into `dataset_dir` (see the module docstring).

    Failures of single files are logged and counted; failures of the search itself raise. A cancel
    raises Cancelled between (or during) downloads, leaving only complete files behind.
    """
    tags = _check_tags(tags)
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    clean_leftovers(dataset_dir)  # what a killed download left
    result = ScrapeResult()

    # 1. list the posts (a few pages; counts as the first 5%)
    progress(ProgressEvent(0.0, f"searching {client.site} for {tags!r}"))
    posts: list[Post] = []
    page_limit = max(1, min(options.page_limit, options.cap))  # a small cap asks for small pages
    for post in client.iter_posts(tags, limit=page_limit, log=lambda line: progress(ProgressEvent(log=line))):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if post.file_ext not in SUPPORTED_EXTS or not post.file_url:
            result.skipped_type += 1
            continue
        posts.append(post)
        if len(posts) >= options.cap:
            break
    result.listed = len(posts)
    if result.skipped_type:
        progress(ProgressEvent(log=f"skipped {result.skipped_type} posts that are not png/jpg/jpeg/webp (gif, video, zip)"))
    known = known_md5s(dataset_dir)
    progress(ProgressEvent(0.05, f"found {len(posts)} posts; {len(known)} images already in the dataset"))

    # 2. download, one at a time (the rate limit spaces them)
    for i, post in enumerate(posts):
        if cancel is not None and cancel.cancelled:
            progress(ProgressEvent(log=f"cancelled: {result.summary()}"))
            raise Cancelled()
        done_text = f"downloaded {len(result.downloaded)}/{len(posts)}"
        if post.md5 and post.md5 in known:
            result.skipped_existing += 1
            progress(ProgressEvent(0.05 + 0.95 * (i + 1) / len(posts), done_text, log=f"skip post {post.id}: already in the dataset"))
            continue
        url = choose_url(post, options.max_side)
        ext = ext_of_url(url)
        ext = ext if ext in SUPPORTED_EXTS else post.file_ext  # the URL's "extension" is the server's text
        try:
            dest = inside(dataset_dir, f"{post.md5 or f'{client.site}_{post.id}'}.{ext}", f"The file name of post {post.id}")
        except StudioError as e:
            result.failed.append((redact_url(url), e.message))
            progress(ProgressEvent(log=f"skip post {post.id}: {e.message}"))
            continue
        if dest.exists():
            result.skipped_existing += 1
            progress(ProgressEvent(log=f"skip post {post.id}: {dest.name} already exists"))
            continue
        try:
            digest = fetch_to_file(client.http, url, dest, verify=inspect_image, cancel=cancel,
                                   max_bytes=options.max_file_bytes)
        except (NetworkError, BadImage) as e:
            result.failed.append((redact_url(url), e.message))
            progress(ProgressEvent(log=f"skip post {post.id}: {e.message}"))
            continue
        except Cancelled:
            progress(ProgressEvent(log=f"cancelled: {result.summary()}"))
            raise
        known.update({digest, post.md5} - {""})
        result.downloaded.append(dest)
        if options.tags_as_captions and post.tags:
            caption = dest.with_suffix(CAPTION_EXT)
            if not caption.exists():  # never overwrite a caption someone wrote
                write_text(caption, tags_to_caption(post.tags) + "\n")
                result.captions.append(caption)
        progress(ProgressEvent(0.05 + 0.95 * (i + 1) / len(posts), f"downloaded {len(result.downloaded)}/{len(posts)}"))

    progress(ProgressEvent(1.0, result.summary()))
    return result

