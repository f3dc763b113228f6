"""Booru clients: Gelbooru, Danbooru and Safebooru behind one small interface.

A client answers two questions, `count(tags)` and `search(tags, page, limit, before_id)`, and
turns each site's JSON into the same `Post`. `iter_posts` pages through a search the way the
sites allow: page numbers while inside the site's deep-paging window (Gelbooru refuses offsets
past about 20 000 results), then an `id:<N` cursor (Danbooru: `page=b<N>`) that restarts at the
oldest id seen so far. See shared/reference/dataset-tools.md §3.

All requests go through `Http`: one requests session, a polite rate limit, an honest
User-Agent, and bounded exponential back-off on 429, 5xx, timeouts and dropped connections.
"""

from __future__ import annotations

import html
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlencode, urlsplit

import requests

from ..errors import StudioError

PROJECT_URL = "https://github.com/lora-studio/lora-studio"  # named in the User-Agent so site admins can reach us
SITES = ("gelbooru", "danbooru", "safebooru")


def default_user_agent() -> str:
    from .. import __version__

    return f"LoRA-Studio/{__version__} (+{PROJECT_URL})"


# ----------------------------------------------------------------------------------------------
# HTTP: rate limit, retries


@dataclass(frozen=True)
class HttpConfig:
    timeout_s: float = 30.0  # per request (connect and each read); a stalled server is retried
    retries: int = 4  # extra attempts after the first: back-off 1+2+4+8 = 15 s at most
    backoff_s: float = 1.0  # the first wait; doubles on each retry
    max_wait_s: float = 60.0  # cap on one wait, including a server's Retry-After
    requests_per_s: float = 2.0  # one request at a time, at most this often (dataset-tools.md §3.6)
    user_agent: str = ""  # empty: "LoRA-Studio/<version> (+<project url>)"


class NetworkError(StudioError):
    """A request that still failed after every retry (or was refused for good)."""


class RateLimiter:
    """Spaces calls at least 1/per_s seconds apart (across threads)."""

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / per_s if per_s > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None  # earliest time the next call may go out
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self._clock()
            if self._next is not None and now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date, or absent: use our own back-off
        return None


class Http:
    """GET with a rate limit and bounded retries; shared by a client and its downloads."""

    def __init__(self, config: HttpConfig = HttpConfig(), session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = config.user_agent or default_user_agent()
        self.limiter = RateLimiter(config.requests_per_s, sleep=sleep)
        self.sleep = sleep

    def backoff(self, attempt: int) -> float:
        return min(self.config.backoff_s * 2**attempt, self.config.max_wait_s)

    def get(self, url: str, params: dict | None = None, *, stream: bool = False, what: str = "") -> requests.Response:
        """GET `url`. 429, 5xx, timeouts and connection errors are retried; other statuses are returned.

        what: how to name the request in an error (never the URL with its API key).
        """
        what = what or redact_url(url)
        problem, wait = "", 0.0
        for attempt in range(self.config.retries + 1):
            if attempt:
                self.sleep(wait)
            self.limiter.wait()
            try:
                r = self.session.get(url, params=params, timeout=self.config.timeout_s, stream=stream)
            except requests.Timeout:
                problem, wait = f"no answer within {self.config.timeout_s:g} s", self.backoff(attempt)
                continue
            except requests.ConnectionError as e:
                problem, wait = f"connection failed ({type(e).__name__})", self.backoff(attempt)
                continue
            except requests.TooManyRedirects:
                raise NetworkError(f"{what} sends the request round in a loop of redirects.",
                                   "Check the API address; the site may be misconfigured.") from None
            except requests.RequestException as e:  # an address requests can not use, and the like
                raise NetworkError(f"{what} can not be requested ({type(e).__name__}).", "Check the API address.") from None
            if r.status_code == 429 or r.status_code >= 500:
                problem = f"HTTP {r.status_code}"
                wait = min(_retry_after(r) or self.backoff(attempt), self.config.max_wait_s)
                r.close()
                continue
            return r
        raise NetworkError(
            f"{what} failed after {self.config.retries + 1} attempts: {problem}.",
            "Check the connection, or try again later (the site may be busy).",
        )


def _unknown_shape(site: str, url: str, data) -> NetworkError:
    return NetworkError(f"{site} answered with JSON of a form LoRA Studio does not know ({type(data).__name__} where a "
                        f"list of posts belongs) from {redact_url(url)}.",
                        "Check the API address (--api-url): it must be the site's API, not a web page or another service.")


def redact_url(url: str) -> str:
    """A URL fit for a message: scheme, host and path only (the query may hold an API key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# ----------------------------------------------------------------------------------------------
# Posts


@dataclass(frozen=True)
class Post:
    id: int
    md5: str  # of the original file, 32 lower-case hex digits; "" when the site hides it (or sends something else)
    file_url: str  # the original
    sample_url: str  # a smaller rendition ("" when the site has none)
    preview_url: str  # a thumbnail
    width: int  # of the original
    height: int
    tags: tuple[str, ...]  # as the site writes them, underscores included
    rating: str  # general | sensitive | questionable | explicit (older sites: safe)
    file_ext: str  # of the original, lower case, without the dot


RATING_WORDS = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}


def ext_of_url(url_or_name: str) -> str:
    """`https://x/a/b.JPG?x=1` -> "jpg"; "" when the name has no extension."""
    path = urlsplit(url_or_name).path
    return path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""


_MD5 = re.compile(r"[0-9a-f]{32}")


def _md5(value) -> str:
    """The post's md5 as 32 lower-case hex digits, or "" for anything else: the server's JSON
    names the downloaded file, so `../../x` or `a/b` in it must never reach a path."""
    text = str(value or "").lower()
    return text if _MD5.fullmatch(text) else ""


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _absolute(url: str, origin: str) -> str:
    if url.startswith("//"):
        return urlsplit(origin).scheme + ":" + url
    if url.startswith("/"):
        return origin + url
    return url


def has_custom_sort(tags: str) -> bool:
    """True if the query orders results other than newest first, so an id cursor would skip posts."""
    sorts = [t.lower() for t in tags.split() if t.lower().startswith("sort:") or t.lower().startswith("order:")]
    return any(s.split(":", 1)[1] not in ("id", "id:desc", "id_desc") for s in sorts)


# ----------------------------------------------------------------------------------------------
# Clients


class BooruClient:
    """One booru site. Subclasses set the class constants and implement count/search/search_page_url."""

    site: ClassVar[str] = ""
    default_api_url: ClassVar[str] = ""
    max_limit: ClassVar[int] = 100  # posts per request the site allows
    deep_window: ClassVar[int] = 20_000  # results reachable by page numbers; past it, an id cursor
    max_anonymous_tags: ClassVar[int | None] = None
    key_help: ClassVar[str] = ""

    def __init__(self, api_url: str = "", api_key: str = "", user_id: str = "", http: Http | None = None, deep_window: int | None = None):
        self.api_url = (api_url or self.default_api_url).rstrip("/")
        self.api_key = api_key.strip()
        self.user_id = str(user_id).strip()
        self.http = http or Http()
        if deep_window is not None:  # tests shrink the window so paging past it stays fast
            self.deep_window = deep_window
        parts = urlsplit(self.api_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"

    # -- the interface -------------------------------------------------------------------------

    def count(self, tags: str) -> int | None:
        """How many posts match (None when the site does not say)."""
        raise NotImplementedError

    def search(self, tags: str, page: int = 0, limit: int = 100, before_id: int | None = None) -> list[Post]:
        """One page of results, newest first. before_id: only posts with a smaller id (the cursor)."""
        raise NotImplementedError

    def search_page_url(self, tags: str) -> str:
        """The same search on the site's web pages, for people to look at."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------

    def iter_posts(self, tags: str, limit: int = 100, log: Callable[[str], None] = lambda line: None) -> Iterator[Post]:
        """Every post of a search, page by page, each once; switches to an id cursor at the deep window."""
        limit = max(1, min(limit, self.max_limit))
        seen: set[int] = set()
        page, before_id, oldest = 0, None, None
        while True:
            if page > 0 and (page + 1) * limit > self.deep_window:
                if has_custom_sort(tags):
                    log(f"{self.site} can not page past {self.deep_window} results of a search with its own sort: order; stopped there.")
                    return
                before_id, page = oldest, 0
            posts = self.search(tags, page=page, limit=limit, before_id=before_id)
            new = [p for p in posts if p.id not in seen]
            for p in new:
                seen.add(p.id)
                oldest = p.id if oldest is None else min(oldest, p.id)
                yield p
            if len(posts) < limit or not new:
                return
            page += 1

    def _get(self, params: dict, path: str = "", what: str = "") -> requests.Response:
        url = self.api_url + path
        r = self.http.get(url, params=params, what=what or f"The {self.site} search")
        if r.status_code in (401, 403):
            r.close()
            raise self._auth_error(r.status_code)
        if r.status_code != 200:
            detail = r.text[:200].strip()
            r.close()
            raise NetworkError(
                f"{self.site} answered HTTP {r.status_code} to {redact_url(url)}" + (f": {detail}" if detail else "."),
                "Check the tags and the API address.",
            )
        return r

    def _json(self, params: dict, path: str = ""):
        r = self._get(params, path)
        try:
            return r.json()
        except ValueError:
            raise NetworkError(
                f"{self.site} answered something that is not JSON from {redact_url(self.api_url + path)}.",
                "Check the API address (--api-url) and the site's status.",
            ) from None

    def _auth_error(self, status: int) -> StudioError:
        who = "with this API key" if self.api_key else "without an API key"
        return StudioError(f"{self.site} refused the search {who} (HTTP {status}).", self.key_help)

    def _check_tag_count(self, tags: str) -> None:
        n = len([t for t in tags.split() if not t.lower().startswith("rating:")])
        if self.max_anonymous_tags is not None and not self.api_key and n > self.max_anonymous_tags:
            raise StudioError(
                f"{self.site} allows only {self.max_anonymous_tags} tags per search without an account; the search has {n}: {tags!r}.",
                "Use fewer tags, or give your login and API key.",
            )


class GelbooruClient(BooruClient):
    """gelbooru.com's DAPI (`index.php?page=dapi&s=post&q=index&json=1`)."""

    site = "gelbooru"
    default_api_url = "https://gelbooru.com/index.php"
    max_limit = 100  # the documented hard limit; what gallery-dl and the Dataset Maker use
    deep_window = 20_000
    key_help = (
        "Gelbooru now requires an API key and user id: find them on gelbooru.com under Account -> Settings "
        "(Options) -> API Access Credentials, and pass --api-key and --user-id (the number, not the login name)."
    )

    def _params(self, tags: str, page: int, limit: int) -> dict:
        params = {"page": "dapi", "s": "post", "q": "index", "json": "1", "tags": tags, "limit": limit, "pid": page}
        if self.api_key:
            params.update(api_key=self.api_key, user_id=self.user_id)
        return params

    @staticmethod
    def _cursor_tags(tags: str, before_id: int | None) -> str:
        return f"{tags} id:<{before_id}".strip() if before_id is not None else tags

    def count(self, tags: str) -> int | None:
        data = self._json(self._params(tags, 0, 1))
        return _int(data.get("@attributes", {}).get("count")) if isinstance(data, dict) else None

    def search(self, tags: str, page: int = 0, limit: int = 100, before_id: int | None = None) -> list[Post]:
        data = self._json(self._params(self._cursor_tags(tags, before_id), page, limit))
        raw = data.get("post", []) if isinstance(data, dict) else data  # no "post" key when nothing matched
        if isinstance(raw, dict):  # some versions send a lone result as an object
            raw = [raw]
        if not isinstance(raw, list):
            raise _unknown_shape(self.site, self.api_url, raw)
        return [p for p in (self._post(d) for d in raw) if p is not None]

    def search_page_url(self, tags: str) -> str:
        return f"{self.api_url}?" + urlencode({"page": "post", "s": "list", "tags": tags})

    def _post(self, d: dict) -> Post | None:
        """Gelbooru-0.2 post JSON -> Post (Safebooru names md5 `hash` and may omit the URLs)."""
        if not isinstance(d, dict) or "id" not in d:
            return None
        image = str(d.get("image") or "")
        directory = str(d.get("directory") or "")
        md5 = _md5(d.get("md5") or d.get("hash"))
        file_url = _absolute(str(d.get("file_url") or ""), self.origin)
        if not file_url and image:
            file_url = f"{self.origin}/images/{directory}/{image}"
        stem = image.rsplit(".", 1)[0]
        sample_url = _absolute(str(d.get("sample_url") or ""), self.origin)
        if not sample_url and str(d.get("sample")).lower() in ("1", "true") and stem:
            sample_url = f"{self.origin}/samples/{directory}/sample_{stem}.jpg"
        preview_url = _absolute(str(d.get("preview_url") or ""), self.origin)
        if not preview_url and stem:
            preview_url = f"{self.origin}/thumbnails/{directory}/thumbnail_{stem}.jpg"
        return Post(
            id=_int(d["id"]),
            md5=md5,
            file_url=file_url,
            sample_url=sample_url if sample_url != file_url else "",
            preview_url=preview_url,
            width=_int(d.get("width")),
            height=_int(d.get("height")),
            tags=tuple(html.unescape(str(d.get("tags") or "")).split()),
            rating=RATING_WORDS.get(str(d.get("rating") or ""), str(d.get("rating") or "")),
            file_ext=ext_of_url(file_url or image),
        )


class SafebooruClient(GelbooruClient):
    """safebooru.org: the same Gelbooru-0.2 DAPI, but JSON is a bare list and the count only comes as XML."""

    site = "safebooru"
    default_api_url = "https://safebooru.org/index.php"
    key_help = "safebooru refused the request; if it now asks for an API key, pass --api-key and --user-id from your account settings."

    def count(self, tags: str) -> int | None:
        params = self._params(tags, 0, 1)
        del params["json"]  # the XML answer carries <posts count="N">; the JSON one does not
        r = self._get(params)
        try:
            root = ET.fromstring(r.content)
        except ET.ParseError:
            return None
        return _int(root.get("count"), default=0) if root.get("count") is not None else None


class DanbooruClient(BooruClient):
    """Danbooru (`/posts.json`, `/counts/posts.json`); also safebooru.donmai.us and testbooru."""

    site = "danbooru"
    default_api_url = "https://danbooru.donmai.us"
    max_limit = 200
    deep_window = 0  # always the `page=b<id>` cursor after the first page: numeric pages stop at 1000
    max_anonymous_tags = 2
    key_help = (
        "Danbooru refused the request: check the login (--user-id) and the API key (--api-key) from your "
        "Danbooru profile -> API Key, or search without them."
    )

    def _auth(self) -> dict:
        return {"login": self.user_id, "api_key": self.api_key} if self.api_key else {}

    def count(self, tags: str) -> int | None:
        self._check_tag_count(tags)
        data = self._json({"tags": tags, **self._auth()}, "/counts/posts.json")
        counts = data.get("counts") if isinstance(data, dict) else None
        return _int(counts.get("posts")) if isinstance(counts, dict) else None

    def search(self, tags: str, page: int = 0, limit: int = 100, before_id: int | None = None) -> list[Post]:
        self._check_tag_count(tags)
        page_param = f"b{before_id}" if before_id is not None else str(page + 1)  # numeric pages start at 1
        data = self._json({"tags": tags, "limit": limit, "page": page_param, **self._auth()}, "/posts.json")
        if not isinstance(data, list):
            raise _unknown_shape(self.site, f"{self.api_url}/posts.json", data)
        return [p for p in (self._post(d) for d in data) if p is not None]

    def search_page_url(self, tags: str) -> str:
        return f"{self.api_url}/posts?" + urlencode({"tags": tags})

    def _post(self, d: dict) -> Post | None:
        if not isinstance(d, dict) or "id" not in d:
            return None
        file_url = _absolute(str(d.get("file_url") or ""), self.origin)
        large = _absolute(str(d.get("large_file_url") or ""), self.origin)
        return Post(
            id=_int(d["id"]),
            md5=_md5(d.get("md5")),
            file_url=file_url,
            sample_url=large if large != file_url else "",
            preview_url=_absolute(str(d.get("preview_file_url") or ""), self.origin),
            width=_int(d.get("image_width")),
            height=_int(d.get("image_height")),
            tags=tuple(str(d.get("tag_string") or "").split()),
            rating=RATING_WORDS.get(str(d.get("rating") or ""), str(d.get("rating") or "")),
            file_ext=str(d.get("file_ext") or ext_of_url(file_url)).lower(),
        )


CLIENTS: dict[str, type[BooruClient]] = {c.site: c for c in (GelbooruClient, DanbooruClient, SafebooruClient)}


def make_client(site: str, api_url: str = "", api_key: str = "", user_id: str = "", http: Http | None = None) -> BooruClient:
    """The client for `site` (gelbooru | danbooru | safebooru)."""
    cls = CLIENTS.get(site.lower())
    if cls is None:
        raise StudioError(f"Unknown booru site {site!r}.", f"Choose one of: {', '.join(SITES)}.")
    return cls(api_url=api_url, api_key=api_key, user_id=user_id, http=http)
