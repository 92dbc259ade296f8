"""The inspector's HTTP API: answers, heat-map shapes, validation, safety, background recomputation.

Most tests use Flask's test client on one session (tiny golden model, load
size 64, two PF-WILLOW images of different sizes); one class runs the real
werkzeug server on 127.0.0.1, and one test runs ``dinokit inspect`` in a
subprocess and stops it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinokit.errors import DinokitError
from dinokit.features import Extractor
from dinokit.inspect import InspectorServer, InspectorSession, NotReady, create_app
from dinokit.inspect.server import MAX_BODY_BYTES, MAX_QUERY_BYTES, is_loopback

LOAD = 64


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def images(data_dir: Path) -> list[Path]:
    folder = data_dir / "pf-willow" / "car(G)"
    paths = [folder / "Cars_006a.png", folder / "Cars_007a.png"]  # 300x200 and 300x225
    for p in paths:
        assert p.is_file(), p
    return paths


@pytest.fixture(scope="module")
def extractor(tiny_model) -> Extractor:
    return Extractor(tiny_model, stride=4, load_size=LOAD, device="cpu")


def _session(images, extractor, **kw) -> InspectorSession:
    s = InspectorSession(images, extractor, **kw)
    s.compute()
    return s


@pytest.fixture(scope="module")
def session(images, extractor):
    s = _session(images, extractor)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(session):
    return create_app(session).test_client()


def _decode(url: str) -> Image.Image:
    head, data = url.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


def _err(rv, code: int) -> str:
    assert rv.status_code == code, (rv.status_code, rv.data[:200])
    body = rv.get_json()
    assert body["status"] == code and body["error"]
    return body["error"]


# --- pages and images -------------------------------------------------------------
def test_page_and_static_files_are_served_with_safety_headers(client):
    rv = client.get("/")
    assert rv.status_code == 200 and rv.content_type.startswith("text/html")
    html = rv.data.decode()
    assert "/static/app.js" in html and "/static/style.css" in html
    assert "http://" not in html and "https://" not in html  # no CDN: everything comes from this server
    csp = rv.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert rv.headers["X-Content-Type-Options"] == "nosniff"
    js = client.get("/static/app.js")
    assert js.status_code == 200 and js.content_type.startswith("text/javascript")
    assert b"https://" not in js.data and b"http://" not in js.data.replace(b"http://www.w3.org/2000/svg", b"")
    assert client.get("/static/style.css").content_type.startswith("text/css")


@pytest.mark.parametrize("path", [
    "/static/server.py", "/static/../server.py", "/static/..%2fserver.py", "/static/%2e%2e/session.py",
    "/static/index.html/../../server.py", "/api/image/-1", "/api/image/2", "/api/image/abc", "/api/image/..%2f0",
    "/etc/passwd", "/api/nothing",
])
def test_no_request_path_reaches_the_file_system(client, path):
    rv = client.get(path)
    assert rv.status_code == 404, (path, rv.status_code)
    assert b"import" not in rv.data and b"root:" not in rv.data


def test_images_are_the_command_line_images(client, session, images):
    for i, p in enumerate(images):
        rv = client.get(f"/api/image/{i}")
        assert rv.status_code == 200 and rv.content_type == "image/jpeg"
        shown = Image.open(io.BytesIO(rv.data))
        with Image.open(p) as src:
            assert shown.size == src.size  # small images are shown at their size
            diff = np.abs(np.asarray(shown.convert("RGB"), np.int16) - np.asarray(src.convert("RGB"), np.int16))
            assert diff.mean() < 4  # the same picture (JPEG-encoded)


def test_info(client, session, images):
    info = client.get("/api/info").get_json()
    assert [im["name"] for im in info["images"]] == [p.name for p in images]
    assert [(im["width"], im["height"]) for im in info["images"]] == [(300, 200), (300, 225)]
    assert [tuple(im["resized"]) for im in info["images"]] == [(96, 64), (85, 64)]
    assert info["choices"]["layers"] == list(range(12))
    assert info["choices"]["strides"] == [1, 2, 4, 8]
    assert info["model"]["patch_size"] == 8
    assert info["initial"] == {"layer": 11, "facet": "key", "bin": False, "stride": 4}


# --- point queries ----------------------------------------------------------------
def test_query_heat_maps_shapes_and_best_matches(client, session, extractor, images):
    rv = client.get("/api/query?image=0&x=150&y=100&scores=1")
    assert rv.status_code == 200
    res = rv.get_json()
    assert res["version"] == session.status()["version"] and res["settings"]["layer"] == 11
    assert res["query"]["image"] == 0
    maps = res["maps"]
    assert len(maps) == 2
    feats = [extractor.extract(p, 11, "key") for p in images]
    descs = [torch.nn.functional.normalize(f.get()[0], dim=-1) for f in feats]
    q = descs[0][res["query"]["patch_index"]]
    for m, f, d, (w, h) in zip(maps, feats, descs, [(300, 200), (300, 225)]):
        g = f.geometry[0]
        rows, cols = g.grid
        assert m["grid"] == [rows, cols]
        assert m["size"] == list(g.resized_size)
        heat = _decode(m["heatmap"])
        assert heat.size == (g.resized_size[1], g.resized_size[0]) and heat.mode == "RGB"
        scores = np.array(m["scores"])
        assert scores.shape == (rows, cols)
        expected = (d @ q).reshape(rows, cols).numpy()
        np.testing.assert_allclose(scores, expected, atol=1e-4)
        assert m["vmin"] == pytest.approx(expected.min(), abs=1e-5)
        assert m["vmax"] == pytest.approx(expected.max(), abs=1e-5)
        best = int(np.argmax(expected))
        np.testing.assert_allclose(m["best_xy"], g.index_to_xy(best, original=True), atol=1e-6)
        assert m["best_score"] == pytest.approx(expected.max(), abs=1e-5)
        assert 0 <= m["best_xy"][0] <= w and 0 <= m["best_xy"][1] <= h
    # in the query image the best match is the query's own patch
    assert maps[0]["best_score"] == pytest.approx(1.0, abs=1e-5)
    assert maps[0]["best_xy"] == pytest.approx(res["query"]["patch_xy"])


def test_heat_map_colours_follow_the_scores(client):
    res = client.get("/api/query?image=1&x=40&y=60&scores=1&cmap=hot").get_json()
    for m in res["maps"]:
        heat = np.asarray(_decode(m["heatmap"]), dtype=np.float64).sum(-1)  # 'hot': brighter = more similar
        r_best, c_best = np.unravel_index(np.argmax(m["scores"]), np.shape(m["scores"]))
        r_low, c_low = np.unravel_index(np.argmin(m["scores"]), np.shape(m["scores"]))
        px = lambda r, c: heat[min(int(r * 4 + 4), heat.shape[0] - 1), min(int(c * 4 + 4), heat.shape[1] - 1)]
        assert px(r_best, c_best) > px(r_low, c_low) + 200


def test_joint_scale_shares_one_range(client):
    per_image = client.get("/api/query?image=0&x=10&y=10").get_json()["maps"]
    joint = client.get("/api/query?image=0&x=10&y=10&scale=joint").get_json()["maps"]
    assert joint[0]["vmin"] == joint[1]["vmin"] == pytest.approx(min(m["vmin"] for m in per_image))
    assert joint[0]["vmax"] == joint[1]["vmax"] == pytest.approx(max(m["vmax"] for m in per_image))


def test_another_point_gives_other_maps(client):
    a = client.get("/api/query?image=0&x=20&y=20").get_json()
    b = client.get("/api/query?image=0&x=280&y=180").get_json()
    assert a["query"]["patch_index"] != b["query"]["patch_index"]
    assert a["maps"][0]["best_xy"] != b["maps"][0]["best_xy"]
    assert a["maps"][1]["heatmap"] != b["maps"][1]["heatmap"]


def test_image_border_points_are_valid(client):
    for x, y in [(0, 0), (300, 200), (0, 200), (300, 0)]:
        assert client.get(f"/api/query?image=0&x={x}&y={y}").status_code == 200


@pytest.mark.parametrize("query, fragment", [
    ("image=0&x=10", "missing parameter y"),
    ("x=10&y=10", "missing parameter image"),
    ("image=2&x=10&y=10", "image must be between 0 and 1"),
    ("image=-1&x=10&y=10", "image must be between"),
    ("image=zero&x=10&y=10", "image must be an integer"),
    ("image=0.5&x=10&y=10", "image must be an integer"),
    ("image=0&x=301&y=10", "x must be between 0 and 300"),
    ("image=0&x=-0.5&y=10", "x must be between"),
    ("image=1&x=10&y=225.1", "y must be between 0 and 225"),
    ("image=0&x=nan&y=10", "finite"),
    ("image=0&x=inf&y=10", "finite"),
    ("image=0&x=1e400&y=10", "finite"),
    ("image=0&x=ten&y=10", "x must be a number"),
    ("image=0&x=10&y=10&cmap=rainbow", "cmap must be one of"),
    ("image=0&x=10&y=10&scale=log", "scale must be one of"),
    ("image=0&x=10&y=10&path=/etc/passwd", "unknown parameter"),
    ("image=0&image=1&x=10&y=10", "more than once"),
])
def test_invalid_queries_are_rejected(client, query, fragment):
    assert fragment in _err(client.get(f"/api/query?{query}"), 400)


def test_request_sizes_are_bounded(client):
    long = "a" * (MAX_QUERY_BYTES + 1)
    _err(client.get(f"/api/query?image=0&x=1&y=1&pad={long}"), 414)
    body = json.dumps({"layer": 3, "pad": "x" * MAX_BODY_BYTES})
    _err(client.post("/api/settings", data=body, content_type="application/json"), 413)


def test_foreign_host_headers_are_refused(client):
    _err(client.get("/api/info", headers={"Host": "attacker.example:8000"}), 403)
    for host in ("127.0.0.1:5000", "localhost", "[::1]:8080"):
        assert client.get("/api/info", headers={"Host": host}).status_code == 200


def test_colorbar(client):
    rv = client.get("/api/colorbar?cmap=viridis")
    assert rv.status_code == 200 and rv.content_type == "image/png"
    bar = np.asarray(Image.open(io.BytesIO(rv.data)).convert("RGB"))
    assert bar.shape[1] == 256 and not np.array_equal(bar[:, 0], bar[:, -1])
    _err(client.get("/api/colorbar?cmap=../../etc"), 400)


# --- other views ------------------------------------------------------------------
def test_saliency(client, session):
    res = client.get("/api/saliency").get_json()
    view = session.view()
    for m, g, sal in zip(res["maps"], view.geometries, view.saliency):
        assert m["grid"] == list(g.grid)
        assert _decode(m["heatmap"]).size == (g.resized_size[1], g.resized_size[0])
        assert float(sal.min()) == pytest.approx(0.0) and float(sal.max()) == pytest.approx(1.0)


def test_pca(client, session):
    res = client.get("/api/pca").get_json()
    assert res["components"] == 4 and res["show"] == "rgb"
    ratio = res["explained_variance_ratio"]
    assert len(ratio) == 4 and all(a >= b for a, b in zip(ratio, ratio[1:])) and 0 < sum(ratio) <= 1 + 1e-6
    for m, g in zip(res["maps"], session.view().geometries):
        pic = _decode(m["picture"])
        assert pic.size == (g.resized_size[1], g.resized_size[0]) and pic.mode == "RGB"
    one = client.get("/api/pca?components=5&show=2").get_json()
    assert _decode(one["maps"][0]["picture"]).mode == "L"
    assert "show must be one of" in _err(client.get("/api/pca?components=4&show=5"), 400)
    assert "components must be between" in _err(client.get("/api/pca?components=99"), 400)
    assert "show must be one of 1, 2" in _err(client.get("/api/pca?components=2&show=rgb"), 400)
    for k in (1, 2):  # 1..16 as advertised: with fewer than 3 the first component is shown
        few = client.get(f"/api/pca?components={k}").get_json()
        assert few["components"] == k and few["show"] == "1" and few["maps"]


def test_correspondences(client, session):
    res = client.get("/api/correspondences?a=0&b=1&num_pairs=5").get_json()
    assert res["a"] == 0 and res["b"] == 1
    assert 0 < len(res["pairs"]) <= 5 and res["num_best_buddies"] >= len(res["pairs"])
    view = session.view()
    da = torch.nn.functional.normalize(view.raw_descriptors(0), dim=-1)
    db = torch.nn.functional.normalize(view.raw_descriptors(1), dim=-1)
    ga, gb = view.geometries
    for p in res["pairs"]:
        assert 0 <= p["a"][0] <= 300 and 0 <= p["a"][1] <= 200
        assert 0 <= p["b"][0] <= 300 and 0 <= p["b"][1] <= 225
        assert p["color"].startswith("#") and len(p["color"]) == 7
        ia, ib = int(ga.xy_to_index(p["a"], original=True)), int(gb.xy_to_index(p["b"], original=True))
        sim = da @ db.T
        assert int(sim[ia].argmax()) == ib and int(sim[:, ib].argmax()) == ia  # best buddies
        assert p["similarity"] == pytest.approx(float(sim[ia, ib]), abs=1e-4)
    assert "two different images" in _err(client.get("/api/correspondences?a=1&b=1"), 400)
    assert "num_pairs must be between" in _err(client.get("/api/correspondences?num_pairs=0"), 400)
    assert "thresh must be between" in _err(client.get("/api/correspondences?thresh=1"), 400)


def test_raw_descriptors_are_the_extracted_ones(session, extractor, images):
    view = session.view()
    d = extractor.extract(images[1], 11, "key").get()[0]
    torch.testing.assert_close(view.raw_descriptors(1), d, rtol=1e-5, atol=1e-5)


# --- settings and background computation -----------------------------------------
@pytest.fixture()
def fresh(images, extractor):
    s = _session(images, extractor)
    yield s, create_app(s).test_client()
    s.close()


def _wait_ready(c, timeout: float = 30.0) -> dict:
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        st = c.get("/api/status").get_json()
        seen.append(st["state"])
        if st["state"] != "computing":
            return st | {"seen": seen}
        time.sleep(0.02)
    raise AssertionError("recomputation did not finish")


def test_settings_recompute_in_the_background(fresh):
    s, c = fresh
    v1 = c.get("/api/status").get_json()["version"]
    rv = c.post("/api/settings", json={"layer": 5, "facet": "value", "bin": True, "stride": 8})
    assert rv.status_code in (200, 202)
    st = rv.get_json()
    if rv.status_code == 202:
        assert st["state"] == "computing"
        assert st["target"] == {"layer": 5, "facet": "value", "bin": True, "stride": 8}
        assert st["progress"]["total"] == 2
    st = _wait_ready(c)
    assert st["state"] == "ready" and st["version"] > v1
    assert st["progress"] == {"done": 2, "total": 2}  # ready: every image done, not "0/2"
    assert st["settings"] == {"layer": 5, "facet": "value", "bin": True, "stride": 8}
    res = c.get("/api/query?image=1&x=150&y=100&scores=1").get_json()
    assert res["settings"]["stride"] == 8 and res["maps"][1]["grid"] == [8, 10]  # (64-8)//8+1, (85-8)//8+1
    assert np.array(res["maps"][1]["scores"]).shape == (8, 10)
    # the first setting is cached: switching back is immediate
    rv = c.post("/api/settings", json={"layer": 11, "facet": "key", "bin": False, "stride": 4})
    assert rv.status_code == 200 and rv.get_json()["version"] == v1
    # a partial body changes only what it names
    rv = c.post("/api/settings", json={"layer": 3})
    assert _wait_ready(c)["settings"] == {"layer": 3, "facet": "key", "bin": False, "stride": 4}


def test_log_binned_view_answers_as_the_explicit_descriptors(fresh, extractor, images):
    """Binned settings are held implicitly; queries, PCA and correspondences see the extractor's binned descriptors."""
    s, c = fresh
    s.compute(s.validate(layer=9, facet="key", bin=True, stride=8))
    view = s.view()
    assert view.index.binned is not None and view.index.matrix is None
    ex8 = Extractor(extractor.model, stride=8, load_size=LOAD, device="cpu")
    explicit = [ex8.extract(p, 9, "key", bin=True).get()[0] for p in images]
    torch.testing.assert_close(view.raw_descriptors(1), explicit[1], rtol=1e-4, atol=1e-4)
    res = c.get("/api/query?image=0&x=120&y=90&scores=1").get_json()
    g0 = view.geometries[0]
    q = explicit[0][int(g0.xy_to_index((120.0, 90.0), original=True))]
    for m, d in zip(res["maps"], explicit):
        expected = torch.nn.functional.cosine_similarity(q[None], d, dim=1).reshape(m["grid"])
        np.testing.assert_allclose(np.array(m["scores"]), expected.numpy(), atol=1e-4)
    pca = c.get("/api/pca").get_json()
    assert len(pca["maps"]) == 2 and pca["settings"]["bin"] is True
    corr = c.get("/api/correspondences?num_pairs=3&thresh=0").get_json()
    assert 0 < len(corr["pairs"]) <= 3


def test_a_later_request_replaces_a_pending_one(fresh):
    s, c = fresh
    c.post("/api/settings", json={"layer": 2})
    c.post("/api/settings", json={"layer": 7, "stride": 8})
    st = _wait_ready(c)
    assert st["settings"] == {"layer": 7, "facet": "key", "bin": False, "stride": 8}
    assert st["error"] is None


def test_cache_is_bounded(images, extractor):
    s = _session(images, extractor, cache_size=2)
    try:
        for layer in (1, 2, 3):
            s.compute(s.validate(layer=layer, facet="key", bin=False, stride=8))
        cached = s.status()["cached"]
        assert len(cached) == 2 and cached[-1]["layer"] == 3 and s.view().settings.layer == 3
    finally:
        s.close()


@pytest.mark.parametrize("body, fragment", [
    ({"layer": 12}, "does not exist"),
    ({"layer": "5"}, "layer must be an integer"),
    ({"layer": True}, "layer must be an integer"),
    ({"facet": "attn"}, "unknown facet"),
    ({"bin": "yes"}, "bin must be true or false"),
    ({"stride": 3}, "must divide the patch size"),
    ({"stride": 0}, "must divide"),
    ({"stride": 4.0}, "stride must be an integer"),
    ({"model": "/etc/passwd"}, "unknown setting"),
    ([1, 2], "JSON object"),
])
def test_invalid_settings_are_rejected(client, body, fragment):
    assert fragment in _err(client.post("/api/settings", json=body), 400)


def test_settings_must_be_json(client):
    _err(client.post("/api/settings", data="layer=3"), 415)
    _err(client.post("/api/settings", data="{not json", content_type="application/json"), 400)
    _err(client.get("/api/settings"), 405)


def test_strides_are_limited_by_the_patch_budget(images, extractor):
    s = InspectorSession(images, extractor, max_patches=2000)
    assert s.strides() == [2, 4, 8]  # stride 1 gives 57 x 89 = 5073 patches
    with pytest.raises(DinokitError, match="at most 2000"):
        s.validate(layer=0, facet="key", bin=False, stride=1)


def test_not_ready_before_the_first_computation(images, extractor):
    s = InspectorSession(images, extractor)
    try:
        c = create_app(s).test_client()
        assert c.get("/api/status").get_json()["state"] == "empty"
        rv = c.get("/api/query?image=0&x=5&y=5")
        _err(rv, 503)
        assert rv.headers["Retry-After"] == "1"
        with pytest.raises(NotReady):
            s.view()
        s.request(s.initial)
        assert s.wait(30)
        assert c.get("/api/query?image=0&x=5&y=5").status_code == 200
    finally:
        s.close()


def test_bad_images_are_refused(tmp_path, extractor):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DinokitError, match="bad.png"):
        InspectorSession([bad], extractor)
    with pytest.raises(DinokitError, match="at least one image"):
        InspectorSession([], extractor)


# --- the real server ---------------------------------------------------------------
def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers, r.read()


@pytest.fixture(scope="module")
def server(session):
    with InspectorServer(session) as srv:  # 127.0.0.1, a free port, in a thread
        yield srv


class TestRealServer:
    def test_binds_loopback_on_a_free_port(self, server):
        assert server.host == "127.0.0.1" and server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/"

    def test_page_and_query_over_http(self, server):
        status, headers, body = _get(server.url)
        assert status == 200 and b"dinokit" in body
        status, headers, body = _get(server.url + "api/query?image=1&x=100&y=50")
        assert status == 200 and headers["Content-Type"] == "application/json"
        res = json.loads(body)
        assert [m["size"] for m in res["maps"]] == [[64, 96], [64, 85]]

    def test_errors_over_http(self, server):
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(server.url + "api/query?image=0&x=-5&y=1")
        assert e.value.code == 400 and "x must be between" in json.loads(e.value.read())["error"]
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(server.url + "static/%2e%2e/server.py")
        assert e.value.code == 404
        req = urllib.request.Request(server.url + "api/settings", data=b"layer=1", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 415

    def test_concurrent_clicks(self, server):
        from concurrent.futures import ThreadPoolExecutor

        urls = [server.url + f"api/query?image={i % 2}&x={10 + 7 * i}&y={20 + 3 * i}" for i in range(12)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda u: json.loads(_get(u)[2]), urls))
        for i, r in enumerate(results):
            assert r["query"]["xy"] == [10 + 7 * i, 20 + 3 * i] and len(r["maps"]) == 2


def test_server_stops_and_frees_the_port(session):
    srv = InspectorServer(session).start()
    url = srv.url
    assert _get(url + "api/status")[0] == 200
    srv.stop()
    with pytest.raises(urllib.error.URLError):
        _get(url + "api/status")


def test_stop_closes_kept_alive_connections_and_joins_request_threads(session):
    import http.client
    import threading

    srv = InspectorServer(session).start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/api/status")  # HTTP/1.1: the connection stays open, its thread waits for more
    assert conn.getresponse().read()
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 5
    assert not [t for t in threading.enumerate() if "process_request" in t.name]
    conn.close()


def test_remote_addresses_need_an_explicit_opt_in(session):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.5.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.com")
    with pytest.raises(DinokitError, match="not a loopback address"):
        InspectorServer(session, host="0.0.0.0")
    with pytest.warns(RuntimeWarning, match="anyone who can reach"):
        srv = InspectorServer(session, host="0.0.0.0", allow_remote=True)
    srv.stop()
    with pytest.raises(DinokitError, match="port must be"):
        InspectorServer(session, port=70000)


def test_cli_serves_until_ctrl_c(images, tiny_weights, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    # Python leaves SIGINT ignored when the test runner was started with it ignored (a background job);
    # restore the usual Ctrl-C behaviour before running the command's main().
    boot = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from dinokit.cli import main; sys.exit(main())")
    cmd = [sys.executable, "-c", boot, "inspect", *map(str, images), "--weights", str(tiny_weights),
           "--load-size", "64", "--stride", "8", "--layer", "4", "--device", "cpu", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), (url, proc.poll())
        st = json.loads(_get(url + "api/status")[2])
        assert st["state"] == "ready" and st["settings"] == {"layer": 4, "facet": "key", "bin": False, "stride": 8}
        assert json.loads(_get(url + "api/query?image=0&x=3&y=4")[2])["maps"][0]["grid"] == [8, 12]
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
        assert code == 0, proc.stderr.read()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(urllib.error.URLError):
        _get(url + "api/status")


def test_cli_reports_bad_input(tiny_weights, tmp_path):
    from dinokit.cli import main

    assert main(["inspect", str(tmp_path / "missing.png"), "--weights", str(tiny_weights)]) == 2
