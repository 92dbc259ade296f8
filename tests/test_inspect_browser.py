"""End to end: the inspector page in a real headless Chromium (Debian's, driven by Playwright).

Loads the page from a real server on 127.0.0.1, clicks points and checks that
every image gets a heat map and a best-match marker that change with the next
click; switches descriptor settings (with the progress state) and the other
views. Screenshots go to ``test-artifacts/`` (``inspect.png`` is the
similarity view). Skipped only outside CI when no browser is installed; with
``CI`` set a missing browser fails the test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dinokit.features import Extractor
from dinokit.inspect import InspectorServer, InspectorSession

from .conftest import torch_threads

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("DINOKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed"
        sync_playwright = None
    if missing is None and not Path(CHROMIUM).is_file():
        missing = f"no Chromium at {CHROMIUM}"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI must run the browser test (apt-get install chromium; pip install playwright)")
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture(scope="module")
def server(data_dir, tiny_model):
    folder = data_dir / "pf-willow" / "car(G)"
    with torch_threads(1):
        ex = Extractor(tiny_model, stride=4, load_size=96, device="cpu")
        session = InspectorSession([folder / "Cars_006a.png", folder / "Cars_007a.png"], ex)
        session.compute()
        with InspectorServer(session) as srv:
            yield srv
        session.close()


@pytest.fixture()
def page(server, tmp_path):
    sync_playwright = _browser_or_skip()
    server.session.request(server.session.initial)  # each test starts from the first setting (cached)
    assert server.session.wait(30)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 760})
        try:
            pg = context.new_page()
            problems: list[str] = []
            foreign: list[str] = []
            pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            pg.on("pageerror", lambda e: problems.append(str(e)))

            def only_local(route):
                if route.request.url.startswith(server.url) or route.request.url.startswith("data:"):
                    route.continue_()
                else:
                    foreign.append(route.request.url)
                    route.abort()

            pg.route("**/*", only_local)
            pg.goto(server.url)
            pg.wait_for_selector('body[data-state="ready"]', timeout=20000)
            yield pg
            assert not problems, problems  # no script errors, no CSP violations
            assert not foreign, foreign  # nothing but this server was contacted
        finally:
            context.close()


OVERLAYS_LOADED = "() => [...document.querySelectorAll('img.overlay')].every((o) => o.complete && o.naturalWidth)"


def _shown(page, n: int) -> None:
    page.wait_for_function(f"() => document.body.dataset.shown === '{n}'", timeout=15000)


def _card_state(page, i: int) -> dict:
    return page.evaluate(
        """(i) => {
            const card = document.querySelector(`.card[data-index="${i}"]`);
            const ov = card.querySelector("img.overlay");
            const best = card.querySelectorAll(".marker.best");
            const query = card.querySelector(".marker.query");
            const r = ov.getBoundingClientRect();
            const base = card.querySelector("img.base").getBoundingClientRect();
            return {
                hidden: ov.hidden, src: ov.getAttribute("src") || "", natural: [ov.naturalWidth, ov.naturalHeight],
                complete: ov.complete, opacity: getComputedStyle(ov).opacity,
                box: [r.width, r.height], baseBox: [base.width, base.height],
                best: [...best].map((m) => [Number(m.dataset.x), Number(m.dataset.y)]),
                bestVisible: [...best].map((m) => m.getBoundingClientRect().width > 0),
                query: query ? [Number(query.dataset.x), Number(query.dataset.y)] : null,
                score: card.querySelector(".score").textContent,
            };
        }""", i)


def test_click_shows_heat_maps_and_best_matches(page, server):
    base0 = page.locator('.card[data-index="0"] img.base')
    box = base0.bounding_box()
    assert box["width"] > 200  # small images are scaled up to fill the card

    # first click, at 30% / 40% of image 0 (300 x 200 pixels)
    base0.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.4})
    _shown(page, 1)
    page.wait_for_function(OVERLAYS_LOADED)
    first = [_card_state(page, i) for i in range(2)]
    for st, resized in zip(first, [(144, 96), (128, 96)]):
        assert not st["hidden"] and st["src"].startswith("data:image/jpeg;base64,")
        assert st["natural"] == list(resized)  # one heat-map pixel per resized-image pixel
        assert st["box"] == pytest.approx(st["baseBox"], abs=1)  # the overlay covers the image exactly
        assert float(st["opacity"]) == pytest.approx(0.6)
        assert len(st["best"]) == 1 and st["bestVisible"] == [True]
        assert st["score"].startswith("best ")
    q = first[0]["query"]
    assert q == pytest.approx([90, 80], abs=0.6)
    assert first[1]["query"] is None
    # the query image's best match is the query's own patch (within one stride: 4 px at 96 -> ~12.5 px)
    assert abs(first[0]["best"][0][0] - 90) <= 13 and abs(first[0]["best"][0][1] - 80) <= 13

    # the opacity slider changes the overlay without a request
    page.evaluate("""() => { const s = document.getElementById('opacity'); s.value = '0.3';
                             s.dispatchEvent(new Event('input')); }""")
    assert float(_card_state(page, 1)["opacity"]) == pytest.approx(0.3)
    page.evaluate("""() => { const s = document.getElementById('opacity'); s.value = '0.6';
                             s.dispatchEvent(new Event('input')); }""")

    # a second click elsewhere (in image 1) changes every map and marker
    base1 = page.locator('.card[data-index="1"] img.base')
    box1 = base1.bounding_box()
    base1.click(position={"x": box1["width"] * 0.75, "y": box1["height"] * 0.7})
    _shown(page, 2)
    page.wait_for_function(OVERLAYS_LOADED)
    second = [_card_state(page, i) for i in range(2)]
    assert second[0]["query"] is None and second[1]["query"] == pytest.approx([225, 157.5], abs=0.6)
    for a, b in zip(first, second):
        assert b["src"] != a["src"] and not b["hidden"]
        assert len(b["best"]) == 1 and b["bestVisible"] == [True]
    assert second[1]["best"] != first[1]["best"]  # query image: its own patch, far from the last best match
    assert abs(second[1]["best"][0][0] - 225) <= 13 and abs(second[1]["best"][0][1] - 157.5) <= 13
    readout = page.locator("#readout").inner_text()
    assert "in image 2, patch" in readout and "Cars_007a.png\t1.000" in readout

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inspect.png"), full_page=True)


def test_settings_views_and_hover(page, server):
    base0 = page.locator('.card[data-index="0"] img.base')
    box = base0.bounding_box()
    base0.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
    _shown(page, 1)

    # recompute at another layer / stride: the progress state shows, then the maps follow the new grid
    page.evaluate("""() => { window.__states = [];
        new MutationObserver(() => window.__states.push(document.body.dataset.state))
            .observe(document.body, { attributes: true, attributeFilter: ["data-state"] }); }""")
    page.select_option("#layer", "9")
    page.check("#bin")  # the paper's correspondence setting: layer 9 keys, log-binned, stride 4
    page.click("#apply")
    page.wait_for_function("() => document.body.dataset.state === 'ready' && document.body.dataset.shown === '2'",
                           timeout=20000)
    assert "computing" in page.evaluate("window.__states")
    assert page.locator("#current-settings").inner_text() == "Shown: layer 9, key, log-binned, stride 4."
    assert "layer 9 key binned, stride 4" in page.locator("#readout").inner_text()
    assert server.session.status()["settings"] == {"layer": 9, "facet": "key", "bin": True, "stride": 4}

    # follow the mouse: moving over image 1 queries without clicking
    page.check("#hover")
    base1 = page.locator('.card[data-index="1"] img.base')
    b1 = base1.bounding_box()
    page.mouse.move(b1["x"] + b1["width"] * 0.2, b1["y"] + b1["height"] * 0.3)
    page.wait_for_function("() => document.querySelector('.card[data-index=\"1\"] .marker.query') !== null")

    # saliency view: one PNG overlay per image, no similarity markers
    page.click("text=Saliency")
    page.wait_for_function("() => [...document.querySelectorAll('img.overlay')].every((o) => !o.hidden && "
                           "o.getAttribute('src').startsWith('data:image/png'))")
    assert page.locator(".marker.best").count() == 0

    # PCA view
    page.click("text=PCA")
    page.wait_for_function("() => [...document.querySelectorAll('img.overlay')].every((o) => !o.hidden && "
                           "o.classList.contains('pixelated'))")
    assert "Explained variance" in page.locator("#pca-info").inner_text()

    # correspondences: numbered points of one colour in both images, joined by lines
    page.click("text=Matches")
    page.wait_for_function("() => document.querySelectorAll('.marker.pair').length > 0")
    n_a = page.locator('.card[data-index="0"] .marker.pair').count()
    n_b = page.locator('.card[data-index="1"] .marker.pair').count()
    assert n_a == n_b == page.locator("#links line").count() and 1 <= n_a <= 10
    assert "correspondences from" in page.locator("#corr-info").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "inspect-correspondences.png"), full_page=True)

    # a click goes back to the similarity view
    base0.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.25})
    page.wait_for_function("() => document.body.dataset.view === 'similarity' && "
                           "document.querySelectorAll('.marker.best').length === 2")
    assert page.locator(".marker.pair").count() == 0 and page.locator("#links line").count() == 0
