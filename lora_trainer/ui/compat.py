"""Every difference between gradio 3.41.2 (AUTOMATIC1111 1.10) and gradio 4.40 (Forge) lives here.

Features are detected, not versions compared: the UI code calls these helpers and never looks at
`gradio.__version__`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import StudioError


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _event_method() -> Callable:
    """The function behind `button.click(...)`: a class in gradio 3, methods on components in 4."""
    legacy = getattr(gr.events, "EventListenerMethod", None)  # gradio 3: events bound per instance
    return legacy.__call__ if legacy is not None else gr.Button.click


# gradio 4 renamed the JavaScript hook of events from `_js` to `js`.
_JS_KW = "js" if _accepts(_event_method(), "js") else "_js"

# `show_progress` value that hides gradio's own spinner (both versions know "hidden"): polls are silent.
QUIET = "hidden"


def on(event: Callable, fn: Callable | None, inputs=None, outputs=None, js: str | None = None, **kwargs: Any):
    """Bind an event (`button.click`, `dropdown.change`, ...) with an optional JavaScript hook."""
    if js is not None:
        kwargs[_JS_KW] = js
    return event(fn, inputs=inputs, outputs=outputs, **kwargs)


def enable_queue(blocks: gr.Blocks) -> gr.Blocks:
    """Turn on the queue so callbacks run in worker threads.

    gradio 3 counts workers (`concurrency_count`); gradio 4 limits each event separately
    (`default_concurrency_limit`). Our callbacks return at once (work runs in jobs), so a few suffice.
    """
    if _accepts(gr.Blocks.queue, "default_concurrency_limit"):
        return blocks.queue(default_concurrency_limit=4)
    return blocks.queue(concurrency_count=4)


def update(**kwargs: Any) -> Any:
    """`gr.update` exists in both versions (gradio 4 keeps it as an alias); one name for the UI."""
    return gr.update(**kwargs)


def mount(app: Any, blocks: gr.Blocks, path: str = "/", logins: list[tuple[str, str]] | None = None) -> Any:
    """Serve `blocks` from a FastAPI app (both versions support this entry point); with `logins`,
    gradio's own login page guards the page, its uploads and its queue."""
    if not logins:
        return gr.mount_gradio_app(app, blocks, path=path)
    if _accepts(gr.mount_gradio_app, "auth"):
        return gr.mount_gradio_app(app, blocks, path=path, auth=list(logins))
    blocks.auth, blocks.auth_message = list(logins), None  # gradio 3: the app it creates reads these
    return gr.mount_gradio_app(app, blocks, path=path)


def upload_root() -> Path:
    """Where gradio keeps uploaded files (both versions: $GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    import os
    import tempfile

    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def received_uploads(value: Any) -> list[Path]:
    """Paths of a `gr.File(file_count="multiple")` value, each a file the browser sent through
    gradio's upload route; a path the client merely named raises StudioError.

    A path inside gradio's temp folder proves nothing: it is also gradio's cache of every file the
    page has shown. gradio 4 lists its uploads proper in the Blocks' `upload_file_set`. gradio 3
    keeps no list, and copies any server path that a request names (`"is_file": true`) into the
    folder before the callback runs; the temp-file object it hands over keeps the named path as
    `orig_name`, which is told apart by where gradio 3 puts files: an upload in a folder named by a
    random 40-hex token, a cached copy in one named by the sha1 of its content.
    The sentence names the file, never the temp path.
    """
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    root = os.path.realpath(upload_root())
    received = _received_by_this_server()
    paths = []
    for item in items:
        path = Path(getattr(item, "name", item))
        named = getattr(item, "orig_name", None)  # gradio 3: the path the request named
        if received is not None:
            ok = os.path.realpath(path) in received
        else:
            ok = _under(path, root) and (named is None or _gradio3_upload(Path(named), root))
        if not ok:
            raise StudioError(f"{Path(named or path).name!r} was not uploaded through this page.",
                              "Upload the files again with the upload box.")
        paths.append(path)
    return paths


def _received_by_this_server() -> set[str] | None:
    """gradio 4: the real paths of the files its upload route received, as the Blocks running this
    event lists them; None where that list is not known (gradio 3, or outside an event)."""
    try:
        from gradio.context import LocalContext
    except ImportError:
        return None
    blocks = getattr(LocalContext, "blocks", None)
    blocks = blocks.get() if blocks is not None else None
    received = getattr(blocks, "upload_file_set", None)
    return None if received is None else {os.path.realpath(p) for p in received}


def _gradio3_upload(named: Path, root: str) -> bool:
    """gradio 3: whether the path a request named is a file its upload route wrote (not a cached
    copy); a bare file name means the request carried the bytes themselves."""
    if not named.is_absolute():
        return len(named.parts) == 1
    folder = named.parent.name
    if not (_under(named, root) and len(folder) == 40 and all(c in "0123456789abcdef" for c in folder)):
        return False
    try:
        return folder != _sha1_of(named)
    except OSError:
        return False


def _sha1_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _under(path: Path, root: str) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([real, root]) == root
