"""A loopback booru for tests: Gelbooru's DAPI, Safebooru's variant and Danbooru's posts.json.

Everything is served from memory on 127.0.0.1 (port 0). Faults are planned per path:
`fail[path] = [500, 503]` answers those statuses first, `slow[path] = [2.0]` delays the next
answers, `truncate[path] = n` sends the next n answers with a Content-Length larger than the body,
and a path in `unsized` is answered without a Content-Length (the end of the body closes the connection).
Every request is logged with its time, so tests can count requests and check spacing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image


def make_image(seed: int, fmt: str = "PNG", size: tuple[int, int] = (16, 12)) -> bytes:
    """Tiny distinct image bytes (the colour comes from the seed, so every md5 differs)."""
    color = ((seed * 67) % 256, (seed * 131) % 256, (seed * 29 + 7) % 256)
    im = Image.new("RGB", size, color)
    im.putpixel((0, 0), (seed % 256, seed // 256 % 256, 1))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class FakePost:
    id: int
    ext: str  # png, jpg, gif, webm, ...
    data: bytes
    width: int  # as the API claims (can be larger than the served bytes)
    height: int
    tags: tuple[str, ...]
    rating: str = "general"
    sample: bytes = b""  # served at /samples/sample_<md5>.jpg when not empty
    claimed_md5: str | None = None  # what the JSON says the md5 is (a hostile server's `../../x`)
    claimed_file_url: str | None = None  # the JSON's file_url, when it is not the served one

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()

    @property
    def name(self) -> str:
        return f"{self.md5}.{self.ext}"


def default_posts(n: int) -> list[FakePost]:
    posts = []
    for i in range(1, n + 1):
        ext = "png" if i % 2 else "jpg"
        tags = ("1girl", "solo", "long_hair" if i % 3 else "short_hair", "^_^")
        posts.append(FakePost(i, ext, make_image(i, "PNG" if ext == "png" else "JPEG"), 1000, 800, tags))
    return posts


@dataclass
class FakeBooru:
    posts: list[FakePost] = field(default_factory=lambda: default_posts(30))
    api_key: str = ""  # when set, the Gelbooru API (not Safebooru's) answers 401 unless api_key and user_id match
    user_id: str = ""
    deep_window: int = 20_000  # refuse (empty answer) when pid * limit > deep_window
    fail: dict[str, list[int]] = field(default_factory=dict)
    slow: dict[str, list[float]] = field(default_factory=dict)
    truncate: dict[str, int] = field(default_factory=dict)
    unsized: set[str] = field(default_factory=set)
    log: list[tuple[float, str, dict]] = field(default_factory=list)  # (time, path, query)
    user_agents: set[str] = field(default_factory=set)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FakeBooru:  # noqa: PYI034 (typing.Self needs Python 3.11)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fake._handle(self)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a deliberately slow answer must not hold up the test
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()  # quick shutdown
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def requests_to(self, path: str) -> list[dict]:
        """The query of every request to `path` (a prefix when it ends with "/")."""
        with self._lock:
            return [q for _, p, q in self.log if p == path or (path.endswith("/") and p.startswith(path))]

    # -- searching ------------------------------------------------------------------------------

    def matching(self, tags: str) -> list[FakePost]:
        """Posts matching a query, newest (highest id) first; metatags other than id:/rating: are ignored."""
        out = sorted(self.posts, key=lambda p: -p.id)
        for term in tags.split():
            if term.startswith("id:<"):
                n = int(term[4:])
                out = [p for p in out if p.id < n]
            elif term.startswith("rating:"):
                out = [p for p in out if p.rating == term.split(":", 1)[1]]
            elif ":" in term:
                continue
            elif term.startswith("-"):
                out = [p for p in out if term[1:] not in p.tags]
            else:
                out = [p for p in out if term in p.tags]
        return out

    def _gelbooru_json(self, p: FakePost) -> dict:
        return {
            "id": p.id, "md5": p.md5 if p.claimed_md5 is None else p.claimed_md5, "width": p.width, "height": p.height, "rating": p.rating,
            "tags": " ".join(p.tags), "image": p.name, "directory": "ab/cd",
            "file_url": f"{self.url}/images/ab/cd/{p.name}" if p.claimed_file_url is None else p.claimed_file_url,
            "sample_url": f"{self.url}/samples/ab/cd/sample_{p.md5}.jpg" if p.sample else "",
            "sample": 1 if p.sample else 0,
            "preview_url": f"{self.url}/thumbnails/ab/cd/thumbnail_{p.md5}.jpg",
        }  # fmt: skip

    # -- the server -----------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with self._lock:
            self.log.append((time.monotonic(), path, query))
            self.user_agents.add(h.headers.get("User-Agent", ""))
            status = self.fail[path].pop(0) if self.fail.get(path) else None
            delay = self.slow[path].pop(0) if self.slow.get(path) else 0.0
            truncate = self.truncate.get(path, 0) > 0
            if truncate:
                self.truncate[path] -= 1
            sized = path not in self.unsized
        if delay:
            time.sleep(delay)
        if status is not None:
            return self._send(h, status, b"planned failure", "text/plain")
        if path in ("/index.php", "/safebooru/index.php"):
            return self._dapi(h, query, safebooru=path.startswith("/safebooru"))
        if path == "/posts.json":
            return self._danbooru_posts(h, query)
        if path == "/counts/posts.json":
            return self._send_json(h, {"counts": {"posts": len(self.matching(query.get("tags", "")))}})
        name = path.rsplit("/", 1)[-1]
        for p in self.posts:
            if path.startswith("/images/") and name == p.name:
                return self._send(h, 200, p.data, "image/png", truncate, sized)
            if path.startswith("/samples/") and name == f"sample_{p.md5}.jpg" and p.sample:
                return self._send(h, 200, p.sample, "image/jpeg", truncate)
            if path.startswith("/thumbnails/") and name == f"thumbnail_{p.md5}.jpg":
                return self._send(h, 200, make_image(p.id, "JPEG", (4, 4)), "image/jpeg")
        self._send(h, 404, b"not found", "text/plain")

    def _dapi(self, h, q: dict, safebooru: bool) -> None:
        if self.api_key and not safebooru and (q.get("api_key") != self.api_key or q.get("user_id") != self.user_id):
            return self._send(h, 401, b'"Unauthorized"', "application/json")
        limit, pid = int(q.get("limit", 100)), int(q.get("pid", 0))
        found = self.matching(q.get("tags", ""))
        if pid * limit > self.deep_window:
            page = []  # "Unable to search this deep": an empty answer
        else:
            page = found[pid * limit : (pid + 1) * limit]
        if safebooru:
            if q.get("json") != "1":
                xml = f'<?xml version="1.0" encoding="UTF-8"?><posts count="{len(found)}" offset="{pid * limit}"></posts>'
                return self._send(h, 200, xml.encode(), "text/xml")
            rows = []
            for p in page:
                d = self._gelbooru_json(p)
                d["hash"] = d.pop("md5")
                del d["file_url"], d["preview_url"], d["sample_url"]  # built from directory + image
                rows.append(d)
            return self._send_json(h, rows)
        body = {"@attributes": {"limit": limit, "offset": pid * limit, "count": len(found)}}
        if page:  # Gelbooru leaves "post" out of an empty answer
            body["post"] = [self._gelbooru_json(p) for p in page]
        self._send_json(h, body)

    def _danbooru_posts(self, h, q: dict) -> None:
        tags = q.get("tags", "")
        if not q.get("api_key") and len(tags.split()) > 2:
            return self._send_json(h, {"success": False, "message": "You cannot search for more than 2 tags at a time"}, 422)
        limit, page = int(q.get("limit", 20)), q.get("page", "1")
        found = self.matching(tags)
        if page.startswith("b"):
            found = [p for p in found if p.id < int(page[1:])][:limit]
        else:
            n = int(page) - 1
            found = found[n * limit : (n + 1) * limit]
        rows = [
            {
                "id": p.id, "md5": p.md5 if p.claimed_md5 is None else p.claimed_md5, "file_ext": p.ext, "image_width": p.width, "image_height": p.height,
                "tag_string": " ".join(p.tags), "rating": "g",
                "file_url": f"{self.url}/images/x/{p.name}",
                "large_file_url": f"{self.url}/samples/x/sample_{p.md5}.jpg" if p.sample else f"{self.url}/images/x/{p.name}",
                "preview_file_url": f"{self.url}/thumbnails/x/thumbnail_{p.md5}.jpg",
            }
            for p in found
        ]  # fmt: skip
        self._send_json(h, rows)

    @staticmethod
    def _send_json(h, obj, status: int = 200) -> None:
        FakeBooru._send(h, status, json.dumps(obj).encode(), "application/json")

    @staticmethod
    def _send(h, status: int, body: bytes, ctype: str, truncate: bool = False, sized: bool = True) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            if sized:
                h.send_header("Content-Length", str(len(body) + (1000 if truncate else 0)))
            else:
                h.close_connection = True
                h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(body[: len(body) // 2] if truncate else body)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass


@contextlib.contextmanager
def serve_text(body: str, redirect_to: str | None = None):
    """A loopback server that answers every GET with `body` as JSON, or with a redirect to
    `redirect_to` (itself, for a loop); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if redirect_to is not None:
                self.send_response(302)
                self.send_header("Location", redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            FakeBooru._send(self, 200, body.encode(), "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
