"""The standalone studio: the very same tab as a plain Gradio app.

The WebUI adds every `javascript/*.js` of an extension and its `style.css` to the page head; we do
the same with a small ASGI middleware that inserts them into the HTML page, so the tab behaves the
same in both places (and our JS must not rely on the WebUI's own script.js).
"""

from __future__ import annotations

import html
from pathlib import Path

from ..logins import ServeAccess
from .app import build_tab
from .compat import enable_queue, mount
from .context import StudioContext

EXTENSION_DIR = Path(__file__).resolve().parents[2]  # the repository / extension folder


def page_head_assets(ext_dir: Path = EXTENSION_DIR) -> str:
    """The <script> and <style> tags the WebUI would add for this extension."""
    parts = []
    for js in sorted((ext_dir / "javascript").glob("*.js")):
        parts.append(f"<script>\n{js.read_text('utf-8')}\n</script>")
    css = ext_dir / "style.css"
    if css.exists():
        parts.append(f"<style>\n{css.read_text('utf-8')}\n</style>")
    return "\n".join(parts)


class InjectHead:
    """ASGI middleware: put `assets` before `</head>` of HTML pages."""

    def __init__(self, app, assets: str):
        self.app = app
        self.assets = assets.encode("utf-8")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in ("/", ""):
            return await self.app(scope, receive, send)
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = b"".join(chunks)
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                is_html = any(k.lower() == b"content-type" and b"text/html" in v for k, v in headers)
                if is_html and b"</head>" in body:
                    body = body.replace(b"</head>", self.assets + b"\n</head>", 1)
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, capture)


def create_app(ctx: StudioContext, logins: tuple[tuple[str, str], ...] = ()):
    """A FastAPI app serving the tab at / (used by `serve` and by the tests); with `logins`, only
    after signing in."""
    import gradio as gr
    from fastapi import FastAPI

    # Built before the page, as the WebUI does: a Blocks made inside another one is rendered into it
    # at once, so building it inside and calling .render() put the whole tab on the page twice.
    tab = build_tab(ctx)
    with gr.Blocks(analytics_enabled=False, title="LoRA Studio", css=None) as page:
        gr.HTML(f'<h2 class="ls-title">LoRA Studio <span class="ls-root">{html.escape(str(ctx.root))}</span></h2>')
        tab.render()
    enable_queue(page)
    app = FastAPI()
    app = mount(app, page, path="/", logins=list(logins))
    app.add_middleware(InjectHead, assets=page_head_assets())
    return app


def serve(ctx: StudioContext, port: int = 7860, access: ServeAccess = ServeAccess()) -> None:
    """Serve until interrupted. Without --listen only this computer can open the studio."""
    import uvicorn

    if access.warning():
        print(access.warning(), flush=True)
    where = "localhost" if not access.listen else access.host
    signin = f", sign in as {', '.join(u for u, _ in access.logins)}" if access.logins else ""
    print(f"LoRA Studio: open http://{where}:{port}/ (projects in {ctx.root}{signin})", flush=True)
    uvicorn.run(create_app(ctx, access.logins), host=access.host, port=port, log_level="warning")
