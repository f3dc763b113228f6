"""Every difference between gradio 3.41.2 (AUTOMATIC1111 1.10) and gradio 4.40 (Forge) lives here.

Features are detected, not versions compared: the UI code calls these helpers and never looks at
`gradio.__version__`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr


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


def mount(app: Any, blocks: gr.Blocks, path: str = "/") -> Any:
    """Serve `blocks` from a FastAPI app (both versions support this entry point)."""
    return gr.mount_gradio_app(app, blocks, path=path)


def upload_root() -> Path:
    """Where gradio keeps uploaded files (both versions: $GRADIO_TEMP_DIR, else <tmp>/gradio)."""
    import os
    import tempfile

    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def uploaded_paths(value: Any) -> list[Path]:
    """Paths of a `gr.File(file_count="multiple")` value: gradio 3 passes temp-file objects
    (their `.name` is the path), gradio 4 passes path strings; None when nothing was uploaded."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    return [Path(getattr(v, "name", v)) for v in items]
