"""Talk to a running gradio app as a browser, or a hostile client, does: over HTTP, no gradio_client.

`served(app)` runs a FastAPI app on a loopback port in a thread. `Wire` uploads files through
gradio's `/upload` route and calls an event by the elem_id of the component that triggers it,
in gradio 3's queue protocol (a websocket) or gradio 4's (join, then server-sent events). The
file values are built by hand, so a test can name any server path in them, as an attacker would.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import httpx

GRADIO_4 = int(gr.__version__.split(".")[0]) >= 4


def studio_app(ctx, **kwargs):
    """The standalone studio's app for `ctx`, built as `serve` builds it.

    gradio 4 makes its queue's lock when the Blocks is made, from the thread's event loop; after
    any asyncio.run() in this thread (another test's) there is none, the lock is None, and every
    event fails. A program builds its Blocks before any asyncio.run; a test gives it a loop.
    """
    import asyncio

    from lora_trainer.ui.standalone import create_app

    asyncio.set_event_loop(asyncio.new_event_loop())
    return create_app(ctx, **kwargs)


@contextlib.contextmanager
def served(app, start_timeout: float = 60) -> Iterator[str]:
    """The base URL of `app` served on 127.0.0.1 (a free port) until the block ends."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + start_timeout
        while not server.started:
            assert thread.is_alive() and time.time() < deadline, "the server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


class Wire:
    def __init__(self, base: str, login: tuple[str, str] | None = None):
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30)
        if login:  # gradio's login form; its cookie then opens every route
            r = self.http.post("/login", data={"username": login[0], "password": login[1]})
            r.raise_for_status()
        r = self.http.get("/config")
        r.raise_for_status()
        self.config = r.json()

    def upload(self, path: Path) -> str:
        """Send a file as the upload box does; the server's path of the received copy."""
        with open(path, "rb") as f:
            r = self.http.post("/upload", files={"files": (path.name, f)})
        r.raise_for_status()
        return r.json()[0]

    @staticmethod
    def file_value(server_path: str, name: str) -> dict:
        """One file of a File component's value, naming `server_path` (uploaded or not)."""
        if GRADIO_4:
            return {"path": server_path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}
        return {"name": server_path, "orig_name": name, "data": None, "is_file": True}

    def fn_index(self, elem_id: str, trigger: str = "click") -> int:
        ids = {c["id"] for c in self.config["components"] if c.get("props", {}).get("elem_id") == elem_id}
        for i, dep in enumerate(self.config["dependencies"]):
            if GRADIO_4:
                hit = any(t[0] in ids and t[1] == trigger for t in dep["targets"])
            else:
                hit = dep.get("trigger") == trigger and any(t in ids for t in dep["targets"])
            if hit:
                return i
        raise AssertionError(f"no {trigger} event on {elem_id}")

    def call(self, elem_id: str, data: list, trigger: str = "click") -> list:
        """Run the event and return its output values (or raise with the server's error)."""
        index, session = self.fn_index(elem_id, trigger), uuid.uuid4().hex
        output = self._call4(index, data, session) if GRADIO_4 else self._call3(index, data, session)
        if not output.get("data") and output.get("error") is not None:
            raise RuntimeError(f"gradio refused the call: {output.get('error')}")
        return output["data"]

    def _call4(self, index: int, data: list, session: str) -> dict:
        r = self.http.post("/queue/join", json={"data": data, "fn_index": index, "session_hash": session,
                                                "event_data": None, "trigger_id": None})
        r.raise_for_status()
        with self.http.stream("GET", "/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return msg.get("output") or {"error": msg.get("error") or "failed"}
        raise AssertionError("the event stream ended without a result")

    def _call3(self, index: int, data: list, session: str) -> dict:
        from websockets.sync.client import connect

        cookies = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        headers = {"Cookie": cookies} if cookies else None
        with connect(self.base.replace("http", "ws", 1) + "/queue/join", open_timeout=30, additional_headers=headers) as ws:
            while True:
                msg = json.loads(ws.recv(timeout=60))
                if msg["msg"] == "send_hash":
                    ws.send(json.dumps({"fn_index": index, "session_hash": session}))
                elif msg["msg"] == "send_data":
                    ws.send(json.dumps({"data": data, "event_data": None, "fn_index": index, "session_hash": session}))
                elif msg["msg"] == "process_completed":
                    return msg.get("output") or {"error": "failed"}
