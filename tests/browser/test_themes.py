"""style.css in gradio's light and dark themes: every message and hint of ours is readable.

The demo project (pictures with captions, the tiny model, a training setup) on a fresh root; each
sub-tab is shown in both themes (`?__theme=dark` is gradio's switch, also in the WebUI), a
screenshot of each goes to test-artifacts/browser/, and the text of every element styled by
style.css (`.ls-*`) must stand out from what is behind it (WCAG contrast ratio of at least 3).
"""

from __future__ import annotations

import pytest

from lora_trainer.cli.demo import ensure_demo_project

from .test_flow import open_tab

pytestmark = pytest.mark.gradio3  # also run in A1111's gradio 3.41.2

# For each visible element with a class starting "ls-" and text of its own: its colour, the first
# opaque background behind it, and the ratio of their relative luminances (WCAG 2).
CONTRASTS = """() => {
    const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = el => {
        for (let x = el; x; x = x.parentElement) {
            const c = rgb(getComputedStyle(x).backgroundColor);
            if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
        }
        return rgb(getComputedStyle(document.body).backgroundColor);
    };
    const out = [];
    for (const el of document.querySelectorAll("[class*='ls-']")) {
        const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
        if (!own || el.offsetParent === null) continue;
        const fg = rgb(getComputedStyle(el).color), bg = background(el);
        const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
        out.push({cls: el.className, text: el.textContent.trim().slice(0, 60), ratio: (a + 0.05) / (b + 0.05)});
    }
    return out;
}"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_readable_in_both_themes(page, studio, artifacts, theme):
    ensure_demo_project(studio.root)
    page.goto(f"{studio.url}?__theme={theme}")
    page.locator("#lora_studio_tabs").wait_for()
    page.locator("#lora_studio_refresh").click()  # the demo was made after the tab was built
    page.wait_for_function("() => document.querySelector('#lora_studio_project input').value === 'demo'")
    checked = []
    for tab in ("Dataset", "Train", "Compare"):
        open_tab(page, tab)
        page.wait_for_timeout(2500)  # train.js fills the form and the run view on first show
        page.screenshot(path=str(artifacts / f"theme-{theme}-{tab.lower()}.png"), full_page=True)
        found = page.evaluate(CONTRASTS)
        checked += found
        poor = [f for f in found if f["ratio"] < 3]
        assert not poor, f"{theme} theme, {tab} tab: text hard to read: {poor}"
    assert len(checked) >= 3, checked  # the overview, the step preview, hints: there is text to judge
    print(f"{theme}: {len(checked)} styled texts, lowest contrast {min(c['ratio'] for c in checked):.1f}")
