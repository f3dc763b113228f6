"""Browser tests: Debian's Chromium driven by Playwright against the standalone studio on loopback.

No browser is downloaded: Playwright (the Python package) launches the system's /usr/bin/chromium.
Without it, or without the playwright package, these tests are skipped with the reason, so a plain
`pytest` stays green on a machine that has neither (`./studio.sh test` installs Chromium in CI).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LORA_STUDIO_CHROMIUM", "/usr/bin/chromium")
# Chromium on a closed network: without the background-networking flags it keeps dialling Google's
# hosts (refused here, and slow to give up); no sandbox because CI runs as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1366, "height": 768}  # the smallest laptop screen the tab must work on
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def _skip_reason() -> str | None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set LORA_STUDIO_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; no browser download needed)"
    return None


# Module scope, not session: while Playwright's sync API is open, its event loop counts as running in
# this thread, so every later test that calls asyncio.run() (gradio's processing, the API client)
# would fail. Closing it after the browser module leaves the rest of the suite as it found it.
@pytest.fixture(scope="module")
def browser():
    reason = _skip_reason()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item.call_failed = outcome.get_result().failed


@pytest.fixture
def page(browser, request):
    """A 1366x768 page; when the test fails, a screenshot of it goes to test-artifacts/browser/."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        if getattr(request.node, "call_failed", False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/browser/ (git-ignored): screenshots of each step, kept after the run."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@dataclass
class Studio:
    url: str
    root: Path
    ctx: object  # the server's StudioContext (its jobs are the ones the page starts)


@pytest.fixture
def studio(tmp_path):
    """The standalone studio on a fresh root, served in this process on a free loopback port."""
    from lora_trainer.ui.context import StudioContext
    from tests.gradio_wire import served, studio_app

    root = tmp_path / "studio"
    ctx = StudioContext.for_root(root)
    with served(studio_app(ctx)) as base:
        try:
            yield Studio(f"{base}/", root, ctx)
        finally:
            for job in ctx.jobs.jobs():
                if not job.status.finished:
                    ctx.jobs.cancel(job.id)
