"""The HTTP API on a FastAPI app (loopback TestClient): start a training job and follow it to the
end, errors as 400 with the fix, unknown jobs 404, cancel, --api-auth, and routes only with --api."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from lora_trainer.host.webui_api import PREFIX, parse_api_auth, register_routes

FAKE_WEBUI = Path(__file__).resolve().parent / "fake_webui"
FAST = {"resolution": 256, "min_bucket_reso": 256, "bucket_no_upscale": True, "optimizer": "AdamW", "optimizer_args": {},
        "mixed_precision": "no", "max_token_length": 75, "lr_scheduler": "constant", "lr_warmup_ratio": 0.0,
        "network_dim": 4, "network_alpha": 4.0, "max_train_epochs": 1, "train_batch_size": 2,
        "datasets": [{"path": "dataset", "repeats": 1}]}


@pytest.fixture
def studio(tmp_path):
    from lora_trainer.demo.dataset import make_demo_dataset
    from lora_trainer.host.standalone import StandaloneHost
    from lora_trainer.models.demo import write_demo_checkpoint
    from lora_trainer.project import create_project
    from lora_trainer.ui.context import StudioContext

    root = tmp_path / "studio"
    project = create_project(root, "alice")
    make_demo_dataset(project.dataset_dir, count=2, size=64)
    checkpoint = write_demo_checkpoint(tmp_path / "tiny.safetensors", "sd15", dtype="fp32")
    host = StandaloneHost(checkpoint, lora_dirs=[project.output_dir], device="cpu")
    ctx = StudioContext.for_root(root, host=host)
    return ctx, project


class Client:
    """Requests straight into the ASGI app through httpx (starlette's TestClient needs an older httpx)."""

    def __init__(self, app):
        self.app = app

    def _call(self, method, url, **kw):
        import asyncio

        import httpx

        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://studio") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(go())

    def get(self, url, **kw):
        return self._call("GET", url, **kw)

    def post(self, url, **kw):
        return self._call("POST", url, **kw)


def client(ctx, credentials=None):
    from fastapi import FastAPI

    app = FastAPI()
    register_routes(app, lambda: ctx, credentials)
    return Client(app)


def wait(c, job_id, timeout=60.0, **kw):
    end = time.time() + timeout
    while time.time() < end:
        job = c.get(f"{PREFIX}/jobs/{job_id}", **kw).json()["job"]
        if job["status"] in ("done", "error", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_train_through_the_api(studio):
    ctx, project = studio
    c = client(ctx)
    r = c.post(f"{PREFIX}/train", json={"project": "alice", "config": FAST})
    assert r.status_code == 200, r.text
    job = wait(c, r.json()["job"]["id"])
    assert job["status"] == "done", job
    assert job["kind"] == "train" and job["fraction"] == 1.0
    assert [Path(p).name for p in job["result"]["files"]] == ["alice-01.safetensors"]
    assert (project.output_dir / "alice-01.safetensors").is_file()
    listed = c.get(f"{PREFIX}/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]


def test_the_api_grid_lands_where_the_tabs_does(studio, tmp_path):
    import re

    ctx, project = studio
    c = client(ctx)
    assert wait(c, c.post(f"{PREFIX}/train", json={"project": "alice", "config": FAST}).json()["job"]["id"])["status"] == "done"
    settings = {"weights": [1.0], "seeds": [1], "steps": 2, "width": 64, "height": 64}
    r = c.post(f"{PREFIX}/grid", json={"project": "alice", "settings": settings})
    assert r.status_code == 200, r.text
    job = wait(c, r.json()["job"]["id"], timeout=120)
    assert job["status"] == "done", job
    png = Path(job["result"]["png"])
    assert png.parent == project.output_dir / "grids" and re.fullmatch(r"grid-\d{8}-\d{6}(-\d+)?\.png", png.name)
    r = c.post(f"{PREFIX}/grid", json={"project": "alice", "settings": settings, "out": str(tmp_path / "elsewhere.png")})
    assert r.status_code == 400 and "outside the folders LoRA Studio may use" in r.json()["error"]


def test_errors_say_what_to_fix(studio):
    ctx, _ = studio
    c = client(ctx)
    r = c.post(f"{PREFIX}/train", json={"project": "alice", "config": {"max_train_epoch": 3}})
    assert r.status_code == 400 and "max_train_epoch" in r.json()["error"]
    r = c.post(f"{PREFIX}/train", json={"project": "nobody"})
    assert r.status_code == 400 and r.json()["error"]
    r = c.post(f"{PREFIX}/train", json={"project": "alice", "epochs": 3})  # a field the route does not take
    assert r.status_code == 422
    assert c.get(f"{PREFIX}/jobs/nope").status_code == 404
    assert c.post(f"{PREFIX}/jobs/nope/cancel").status_code == 404
    r = c.post(f"{PREFIX}/caption", json={"project": "alice"})
    assert r.status_code == 400 and "CoCa" in r.json()["fix"]  # no WebUI BLIP in this context


def test_cancel_a_job(studio):
    ctx, _ = studio
    c = client(ctx)
    job_id = c.post(f"{PREFIX}/train", json={"project": "alice", "config": {**FAST, "max_train_epochs": 50}}).json()["job"]["id"]
    time.sleep(0.5)
    assert c.post(f"{PREFIX}/jobs/{job_id}/cancel").status_code == 200
    assert wait(c, job_id)["status"] == "cancelled"


def test_api_auth(studio):
    ctx, _ = studio
    assert parse_api_auth("u1:p1,u2:p:2") == {"u1": "p1", "u2": "p:2"}
    c = client(ctx, {"me": "secret"})
    assert c.get(f"{PREFIX}/jobs").status_code == 401
    assert c.get(f"{PREFIX}/jobs", auth=("me", "wrong")).status_code == 401
    assert c.get(f"{PREFIX}/jobs", auth=("me", "secret")).status_code == 200


def test_routes_only_with_api_flag(studio, monkeypatch):
    from fastapi import FastAPI

    from lora_trainer.host.webui_api import on_app_started

    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if n == "modules" or n.startswith("modules.")}
    monkeypatch.syspath_prepend(str(FAKE_WEBUI))
    try:
        from modules import shared

        ctx, _ = studio
        app = FastAPI()
        on_app_started(lambda: ctx)(None, app)
        assert not [r for r in app.routes if getattr(r, "path", "").startswith(PREFIX)]
        shared.cmd_opts.api, shared.cmd_opts.api_auth = True, "me:pw"
        on_app_started(lambda: ctx)(None, app)
        paths = sorted(r.path for r in app.routes if getattr(r, "path", "").startswith(PREFIX))
        assert paths == sorted(PREFIX + p for p in ("/train", "/tag", "/caption", "/grid", "/jobs", "/jobs/{job_id}",
                                                    "/jobs/{job_id}/cancel"))
    finally:
        for n in [n for n in sys.modules if n == "modules" or n.startswith("modules.")]:
            sys.modules.pop(n)
        sys.modules.update(saved)
