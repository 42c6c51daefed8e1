"""The explorer's JSON API, in process (FastAPI's TestClient): every endpoint and every bad input.

Oracles: the model run directly with torch (softmax top-k, forward hooks for activations), the
CLI's own ``convlens shape --json`` output for the arithmetic, hand-made corrupt files for uploads.
"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from convlens.serve import Explorer, create_app, is_loopback  # noqa: E402
from convlens.serve.state import ActivationCache, ImageStore, JobRunner  # noqa: E402


@pytest.fixture(scope="module")
def explorer(lite0):
    ex = Explorer(lite0)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def client(explorer):
    return TestClient(create_app(explorer))


@pytest.fixture(scope="module")
def chelsea_id(client):
    return next(im["id"] for im in client.get("/api/images").json() if im["name"] == "chelsea")


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _error(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


# ---------------------------------------------------------------- status and images
def test_status_contract(client):
    s = client.get("/api/status").json()
    assert {"model", "device", "cache_bytes", "cache_limit_bytes"} <= set(s)
    assert s["model"] == "efficientnet_lite0" and s["device"] == "cpu" and s["pretrained"] is True
    assert s["cache_limit_bytes"] == 512 * 1024 * 1024 and 0 <= s["cache_bytes"] <= s["cache_limit_bytes"]


def test_images_are_server_side_ids(client):
    ims = client.get("/api/images").json()
    assert {"chelsea", "coffee"} <= {im["name"] for im in ims}
    for im in ims:
        assert {"id", "name"} <= set(im) and re.fullmatch(r"[0-9a-f]{12}", im["id"])
    assert len({im["id"] for im in ims}) == len(ims)


def test_page_and_static_files_are_served_with_a_strict_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and "convlens explorer" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for path in ("/static/app.js", "/static/app.css"):
        assert client.get(path).status_code == 200
    # no file outside the package's static folder is reachable
    for bad in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static//etc/passwd"):
        assert client.get(bad).status_code == 404


# ---------------------------------------------------------------- predict
def test_predict_equals_a_direct_softmax(client, chelsea_id, lite0, chelsea):
    top = client.get(f"/api/images/{chelsea_id}/predict").json()
    assert [set(t) for t in top] == [{"class", "label", "prob"}] * 5
    with torch.no_grad():
        p = lite0.model(lite0.preprocess([chelsea])).softmax(-1)[0]
    vals, idx = p.topk(5)
    assert [t["class"] for t in top] == idx.tolist()
    np.testing.assert_allclose([t["prob"] for t in top], vals.numpy(), atol=1e-6)
    assert top[0]["label"] == "Egyptian cat"
    assert len(client.get(f"/api/images/{chelsea_id}/predict", params={"topk": 2}).json()) == 2
    _error(client.get(f"/api/images/{chelsea_id}/predict", params={"topk": 0}), 400)
    _error(client.get(f"/api/images/{chelsea_id}/predict", params={"topk": "x"}), 422)


@pytest.mark.parametrize(
    "bad",
    [
        "ffffffffffff",  # well-formed but unknown
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",  # URL-encoded traversal
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",  # an absolute path
        "chelsea",  # a name is not an id
        "C%3A%5Cwindows",
    ],
)
def test_unknown_and_traversal_ids_are_404(client, bad):
    for what in ("predict", "image", "activations?layer=conv_stem", "cam", "unit?layer=conv_stem&c=0&i=0&j=0"):
        r = client.get(f"/api/images/{bad}/{what}")
        assert r.status_code == 404, (bad, what, r.text)
        assert "error" in r.json()


def test_image_png_is_the_model_view(client, chelsea_id, lite0, chelsea):
    r = client.get(f"/api/images/{chelsea_id}/image")
    assert r.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(r.content)))
    np.testing.assert_array_equal(got, lite0.preprocess.resize_image(chelsea))
    orig = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{chelsea_id}/image?view=original").content)))
    np.testing.assert_array_equal(orig, chelsea)
    _error(client.get(f"/api/images/{chelsea_id}/image?view=../x"), 400)


# ---------------------------------------------------------------- uploads
def test_upload_valid_image_then_predict(client, coffee, lite0):
    r = client.post("/api/images", files={"file": ("../../my coffee.png", _png_bytes(coffee), "image/png")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "my coffee.png" and re.fullmatch(r"[0-9a-f]{12}", body["id"])
    assert body["id"] in {im["id"] for im in client.get("/api/images").json()}
    top = client.get(f"/api/images/{body['id']}/predict").json()
    assert top[0]["label"] == "espresso"


@pytest.mark.parametrize(
    "name,payload,status,needle",
    [
        ("notes.txt", b"this is not an image at all", 400, "not an image"),
        ("empty.png", b"", 400, "empty"),
        ("trunc.png", None, 400, "truncated"),
        ("junk.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, 400, ""),
    ],
)
def test_bad_uploads_are_one_json_error_and_the_server_keeps_serving(client, name, payload, status, needle, chelsea):
    if payload is None:
        payload = _png_bytes(chelsea)[:5000]  # a PNG cut short
    msg = _error(client.post("/api/images", files={"file": (name, payload, "application/octet-stream")}), status)
    assert needle in msg
    assert "convlens-serve-" not in msg  # the server's temp path is not leaked
    assert client.get("/api/status").status_code == 200


def test_upload_caps_size_and_pixels(lite0, chelsea):
    ex = Explorer(lite0, bundled=False, upload_bytes=10_000, max_pixels=100 * 100)
    try:
        c = TestClient(create_app(ex))
        assert "upload limit" in _error(c.post("/api/images", files={"file": ("big.png", _png_bytes(chelsea))}), 413)
        small = _png_bytes(np.zeros((120, 120, 3), np.uint8))  # under the byte cap, over the pixel cap
        assert len(small) < 10_000
        assert "max_pixels" in _error(c.post("/api/images", files={"file": ("wide.png", small)}), 400)
        _error(c.post("/api/images"), 422)  # no file field
        assert c.get("/api/images").json() == []
        assert list(ex.tmp.iterdir()) == []  # nothing left in the temp folder
    finally:
        ex.close()
    assert not ex.tmp.exists()


# ---------------------------------------------------------------- arithmetic
@pytest.mark.parametrize(
    "params",
    [
        {"input": "128x128x32", "kernel": "3", "stride": "2", "filters": "16"},
        {"input": "128x128x32", "kernel": "3", "stride": "2", "filters": "16", "padding": "same", "convention": "tf"},
        {"input": "7x9x3", "kernel": "3x5", "stride": "2x1", "padding": "1,2", "dilation": "2", "filters": "4"},
        {"input": "13x13x8", "kernel": "3", "stride": "2", "op": "maxpool", "ceil_mode": "true"},
        {
            "input": "63x63x8",
            "kernel": "3",
            "stride": "2",
            "filters": "4",
            "op": "convtranspose",
            "output_padding": "1",
        },
        {"input": "7x7x3", "op": "upsample", "scale": "2"},
    ],
)
def test_shape_equals_the_cli_json(client, capsys, params):
    from convlens.cli import main

    argv = ["shape", "--json"]
    for k, v in params.items():
        if k == "ceil_mode":
            argv.append("--ceil-mode")
        else:
            argv += [f"--{k.replace('_', '-')}", v]
    assert main(argv) == 0
    cli = json.loads(capsys.readouterr().out)
    api = client.get("/api/shape", params=params).json()
    assert api == cli


def test_shape_course_answer_63_vs_64(client):
    q = {"input": "128x128x3", "kernel": 3, "stride": 2, "filters": 1}
    assert client.get("/api/shape", params=q).json()["output"][:2] == [63, 63]
    assert client.get("/api/shape", params={**q, "convention": "tf", "padding": "same"}).json()["output"][:2] == [
        64,
        64,
    ]


@pytest.mark.parametrize(
    "params,status",
    [
        ({"input": "128x128", "kernel": "3", "filters": "1"}, 400),
        ({"input": "128x128x3", "kernel": "x", "filters": "1"}, 400),
        ({"input": "8x8x3", "kernel": "9", "filters": "1"}, 400),  # kernel larger than the input
        ({"input": "8x8x3", "kernel": "3"}, 400),  # conv without filters
        ({"input": "8x8x3", "kernel": "3", "filters": "1", "op": "fft"}, 400),
        ({"input": "8x8x3", "kernel": "3", "filters": "1", "ceil_mode": "true"}, 400),
        ({"kernel": "3", "filters": "1"}, 422),  # input missing
        ({"input": "8x8x3", "kernel": "3", "filters": "one"}, 422),
    ],
)
def test_shape_bad_parameters(client, params, status):
    _error(client.get("/api/shape", params=params), status)


# ---------------------------------------------------------------- activations and the cache
def test_activations_equal_a_forward_hook_and_are_sorted(client, chelsea_id, lite0, chelsea):
    layer = "blocks.1.0.conv_pw"
    got = {}
    module = dict(lite0.model.named_modules())[layer]
    h = module.register_forward_hook(lambda m, i, o: got.setdefault("a", o.detach().clone()))
    try:
        with torch.no_grad():
            lite0.model(lite0.preprocess([chelsea]))
    finally:
        h.remove()
    ref = got["a"][0]  # (C, H, W)
    r = client.get(f"/api/images/{chelsea_id}/activations", params={"layer": layer, "limit": 4, "offset": 2}).json()
    assert r["shape"] == list(ref.shape) and r["output_shape"] == [ref.shape[1], ref.shape[2], ref.shape[0]]
    order = torch.argsort(ref.mean((1, 2)), descending=True, stable=True).tolist()
    assert [c["channel"] for c in r["channels"]] == order
    assert [m["channel"] for m in r["maps"]] == order[2:6]
    for m in r["maps"]:
        data = np.frombuffer(base64.b64decode(m["data"]), "<f4").reshape(ref.shape[1:])
        np.testing.assert_allclose(data, ref[m["channel"]].numpy(), atol=1e-5)
    assert r["min"] == pytest.approx(float(ref.min()), abs=1e-5) and r["max"] == pytest.approx(
        float(ref.max()), abs=1e-5
    )
    status = client.get("/api/status").json()
    assert status["cache_bytes"] > 0 and status["cached_images"] >= 1


def test_activation_errors(client, chelsea_id):
    _error(client.get(f"/api/images/{chelsea_id}/activations", params={"layer": "no.such.layer"}), 404)
    _error(client.get(f"/api/images/{chelsea_id}/activations", params={"layer": "classifier"}), 404)  # no map
    _error(client.get(f"/api/images/{chelsea_id}/activations", params={"layer": "conv_stem", "offset": -1}), 400)
    _error(client.get(f"/api/images/{chelsea_id}/activations", params={"layer": "conv_stem", "limit": 0}), 400)
    _error(client.get(f"/api/images/{chelsea_id}/activations"), 422)


def test_layers_lists_the_summary_and_the_map_layers(client):
    d = client.get("/api/layers").json()
    assert d["total_params"] == 4652008
    names = {r["name"] for r in d["layers"]}
    assert "conv_stem" in d["map_layers"] and set(d["map_layers"]) <= names | {n.split("#")[0] for n in d["map_layers"]}
    assert "classifier" not in d["map_layers"]
    _error(client.get("/api/layers", params={"depth": 0}), 400)


def test_cache_is_lru_and_capped(lite0):
    ex = Explorer(lite0, cache_bytes=150 * 1024 * 1024)  # room for one full capture of lite0 (~131 MB)
    try:
        c = TestClient(create_app(ex))
        ids = [im["id"] for im in c.get("/api/images").json()[:2]]
        for i in ids:
            assert c.get(f"/api/images/{i}/activations", params={"layer": "conv_stem"}).status_code == 200
        s = c.get("/api/status").json()
        assert 0 < s["cache_bytes"] <= s["cache_limit_bytes"] == 150 * 1024 * 1024
        assert ex.cache.keys() == [ids[1]]  # the first image was evicted
    finally:
        ex.close()


def test_activation_cache_unit():
    cache = ActivationCache(limit_bytes=100)
    cache.put("a", {"x": torch.zeros(10)})  # 40 bytes
    cache.put("b", {"x": torch.zeros(10)})
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", {"x": torch.zeros(10)})  # 120 > 100: b (least recent) goes
    assert cache.keys() == ["a", "c"] and cache.bytes == 80
    cache.put("huge", {"x": torch.zeros(100)})  # larger than the cap: not kept, nothing evicted
    assert cache.keys() == ["a", "c"]


def test_image_store_ignores_anything_but_ids():
    s = ImageStore()
    s.add_bundled(["chelsea"])
    (only,) = s.list()
    assert s.get(only.id) is only
    for bad in ("../" + only.id, only.id.upper(), only.id + "/", "", None, "/etc/passwd"):
        assert s.get(bad) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- CAM
def test_cam_target_and_errors(client, chelsea_id, lite0, chelsea):
    r = client.get(f"/api/images/{chelsea_id}/cam", params={"method": "gradcam", "target": 282}).json()
    assert r["target"] == 282 and r["label"] == "tiger cat" and r["layer"] == "bn2" and r["method"] == "gradcam"
    with torch.no_grad():
        p = lite0.model(lite0.preprocess([chelsea])).softmax(-1)[0, 282]
    assert r["score"] == pytest.approx(float(p), abs=1e-5)
    assert r["heatmap"].startswith("data:image/png;base64,")
    heat = Image.open(io.BytesIO(base64.b64decode(r["heatmap"].split(",", 1)[1])))
    assert heat.size == (224, 224)
    top1 = client.get(f"/api/images/{chelsea_id}/cam").json()
    assert top1["target"] == 285 and "metrics" not in top1
    _error(client.get(f"/api/images/{chelsea_id}/cam", params={"method": "magic"}), 400)
    _error(client.get(f"/api/images/{chelsea_id}/cam", params={"target": 1000}), 400)
    _error(client.get(f"/api/images/{chelsea_id}/cam", params={"target": -1}), 400)
    _error(client.get(f"/api/images/{chelsea_id}/cam", params={"layer": "nope"}), 404)
    assert client.get("/api/methods").json()[0] == "gradcam"


@pytest.mark.slow
def test_cam_metrics_on_request(client, chelsea_id):
    r = client.get(f"/api/images/{chelsea_id}/cam", params={"metrics": "true"}).json()
    assert set(r["metrics"]) == {"deletion_auc", "insertion_auc", "drop_percent", "increase"}
    assert 0 <= r["metrics"]["deletion_auc"] <= 1 and 0 <= r["metrics"]["insertion_auc"] <= 1


# ---------------------------------------------------------------- unit, featvis jobs
def test_unit_bad_positions(client, chelsea_id):
    _error(client.get(f"/api/images/{chelsea_id}/unit", params={"layer": "nope", "c": 0, "i": 0, "j": 0}), 404)
    for c, i, j in [(32, 0, 0), (0, 112, 0), (0, 0, -1)]:
        _error(client.get(f"/api/images/{chelsea_id}/unit", params={"layer": "conv_stem", "c": c, "i": i, "j": j}), 400)
    _error(client.get(f"/api/images/{chelsea_id}/unit", params={"layer": "conv_stem", "c": 0, "i": 0}), 422)


@pytest.mark.slow
def test_featvis_job_runs_bounded_and_cancels(client):
    r = client.post("/api/featvis", params={"layer": "blocks.0", "channel": 3, "steps": 2, "size": 32})
    assert r.status_code == 202
    job = r.json()
    explorer = client.app.state.explorer
    done = explorer.jobs.wait(job["id"], timeout=120)
    assert done.status == "done", done.error
    j = client.get(f"/api/jobs/{job['id']}").json()
    assert j["status"] == "done" and j["result"].startswith("data:image/png;base64,") and j["done"] == j["total"] == 2
    # the same request again is the cached job
    assert (
        client.post("/api/featvis", params={"layer": "blocks.0", "channel": 3, "steps": 2, "size": 32}).json()["id"]
        == job["id"]
    )
    # a long job stops when cancelled
    long = client.post("/api/featvis", params={"layer": "blocks.0", "channel": 5, "steps": 256, "size": 64}).json()
    client.delete(f"/api/jobs/{long['id']}")
    end = explorer.jobs.wait(long["id"], timeout=120)
    assert end.status == "cancelled" and end.done < 256
    _error(client.post("/api/featvis", params={"layer": "blocks.0", "channel": 0, "steps": 100000}), 400)
    _error(client.post("/api/featvis", params={"layer": "blocks.0", "channel": 10**6}), 400)
    _error(client.post("/api/featvis", params={"layer": "nope", "channel": 0}), 404)
    _error(client.get("/api/jobs/nope"), 404)
    _error(client.delete("/api/jobs/nope"), 404)


def test_job_runner_bounds_the_queue():
    import threading

    gate = threading.Event()
    r = JobRunner(max_queued=1)
    try:
        first = r.submit("t", {}, key="1", fn=lambda job: gate.wait(10))
        while r.get(first.id).status == "queued":
            pass
        r.submit("t", {}, key="2", fn=lambda job: 2)
        with pytest.raises(Exception, match="already waiting"):
            r.submit("t", {}, key="3", fn=lambda job: 3)
    finally:
        gate.set()
        r.close()


def test_unknown_api_paths_are_json_404(client):
    for path in ("/api/nope", "/api/images/x/y/z", "/nope"):
        assert "error" in client.get(path).json()
        assert client.get(path).status_code == 404


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10") and not is_loopback("example.com")


def test_unit_equals_the_cli_json_and_the_grid_value(client, chelsea_id, chelsea, tmp_path, capsys):
    from convlens.cli import main

    Image.fromarray(chelsea).save(tmp_path / "chelsea.png")  # lossless: the same pixels as the bundled image
    layer, (c, i, j) = "blocks.1.0.conv_pw", (17, 5, 9)
    api = client.get(f"/api/images/{chelsea_id}/unit", params={"layer": layer, "c": c, "i": i, "j": j}).json()
    assert main(["unit", str(tmp_path / "chelsea.png"), "--layer", layer, "--at", f"{c},{i},{j}", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert set(api) == set(cli) and api["at"] == [c, i, j] and api["rf_box"] == cli["rf_box"]
    assert api["total"] == pytest.approx(cli["total"], abs=1e-6) and api["erf"]["r50"] == pytest.approx(
        cli["erf"]["r50"]
    )
    assert api["erf"]["support_box"] == cli["erf"]["support_box"]
    assert [t["channel"] for t in api["terms"]] == [t["channel"] for t in cli["terms"]]
    # the traced total is the activation the grid shows at that cell (hook-captured, an independent path)
    grid = client.get(f"/api/images/{chelsea_id}/activations", params={"layer": layer, "limit": 256}).json()
    cell = next(m for m in grid["maps"] if m["channel"] == c)
    value = np.frombuffer(base64.b64decode(cell["data"]), "<f4").reshape(grid["shape"][1:])[i, j]
    assert abs(api["total"] - float(value)) < 1e-4 and api["abs_error"] < 1e-4
    erf = client.get(f"/api/images/{chelsea_id}/erf", params={"layer": layer, "c": c, "i": i, "j": j}).json()
    assert erf["heatmap"].startswith("data:image/png;base64,") and erf["zero_gradient"] is False


def test_graph_equals_the_cli_json_and_draws_svg(client, capsys):
    from xml.etree import ElementTree

    from convlens.cli import main

    api = client.get("/api/graph", params={"depth": 2}).json()
    assert main(["graph", "--depth", "2", "--json"]) == 0
    assert api == json.loads(capsys.readouterr().out)
    r = client.get("/api/graph.svg", params={"depth": 2})
    assert r.headers["content-type"].startswith("image/svg+xml")
    root = ElementTree.fromstring(r.text)  # valid XML
    nodes = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if "node" in (g.get("class") or "").split()]
    assert len(nodes) == len(api["nodes"])
    _error(client.get("/api/graph", params={"depth": 0}), 400)


def test_top_patches_job_finds_the_largest_activations(client, lite0):
    layer, channel = "blocks.2.0.conv_pw", 5
    job = client.post("/api/top-patches", params={"layer": layer, "channel": channel, "k": 3}).json()
    done = client.app.state.explorer.jobs.wait(job["id"], timeout=300)
    assert done.status == "done", done.error
    patches = client.get(f"/api/jobs/{job['id']}").json()["result"]
    # brute force: every image of the set through a forward hook, every position of the channel
    ex = client.app.state.explorer
    module = dict(lite0.model.named_modules())[layer]
    values = []
    for e in ex.images.list():
        got: dict = {}
        h = module.register_forward_hook(lambda m, i, o, got=got: got.setdefault("a", o.detach()))
        try:
            with torch.no_grad():
                lite0.model(lite0.preprocess([e.array]))
        finally:
            h.remove()
        values += [(float(v), e.id) for v in got["a"][0, channel].flatten()]
    best = sorted(values, key=lambda t: -t[0])[:3]
    np.testing.assert_allclose([p["value"] for p in patches], [v for v, _ in best], rtol=1e-5, atol=1e-5)
    assert [p["image"] for p in patches] == [i for _, i in best]
    assert all(p["crop"].startswith("data:image/png;base64,") and len(p["box"]) == 4 for p in patches)
    _error(client.post("/api/top-patches", params={"layer": layer, "channel": 10**5}), 400)
    _error(client.post("/api/top-patches", params={"layer": layer, "channel": 0, "k": 0}), 400)


def test_a_capture_larger_than_the_cache_is_served_layer_by_layer(lite0, chelsea):
    ex = Explorer(lite0, cache_bytes=10 * 1024 * 1024)  # far below one full capture (~131 MB)
    try:
        c = TestClient(create_app(ex))
        cid = next(im["id"] for im in c.get("/api/images").json() if im["name"] == "chelsea")
        r = c.get(f"/api/images/{cid}/activations", params={"layer": "blocks.6", "limit": 1}).json()
        got = {}
        h = dict(lite0.model.named_modules())["blocks.6"].register_forward_hook(lambda m, i, o: got.setdefault("a", o))
        try:
            with torch.no_grad():
                lite0.model(lite0.preprocess([chelsea]))
        finally:
            h.remove()
        ref = got["a"][0, r["maps"][0]["channel"]].numpy()
        np.testing.assert_allclose(
            np.frombuffer(base64.b64decode(r["maps"][0]["data"]), "<f4").reshape(ref.shape), ref, atol=1e-5
        )
        assert c.get("/api/status").json()["cache_bytes"] == 0
    finally:
        ex.close()


@pytest.mark.timeout(300)  # with the model lock held by the job, the predict below would wait for the whole job
def test_a_long_job_does_not_block_interactive_requests(client, chelsea_id):
    import time

    job = client.post("/api/featvis", params={"layer": "blocks.5", "channel": 7, "steps": 256, "size": 224}).json()
    ex = client.app.state.explorer
    t0 = time.monotonic()
    while ex.jobs.get(job["id"]).status == "queued" and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    assert ex.jobs.get(job["id"]).status == "running"
    assert client.get(f"/api/images/{chelsea_id}/predict").status_code == 200  # served while the job runs
    assert ex.jobs.get(job["id"]).status == "running"
    client.delete(f"/api/jobs/{job['id']}")
    assert ex.jobs.wait(job["id"], timeout=120).status == "cancelled"


def test_an_unexpected_failure_is_a_json_500_and_the_server_keeps_serving(lite0, monkeypatch):
    import importlib

    core = importlib.import_module(
        "convlens.inspect.predict"
    )  # the module (the package exports a function of that name)
    ex = Explorer(lite0)
    try:
        c = TestClient(create_app(ex), raise_server_exceptions=False)
        cid = c.get("/api/images").json()[0]["id"]

        def broken(*a, **k):
            raise RuntimeError("boom")

        monkeypatch.setattr(core, "predict", broken)
        r = c.get(f"/api/images/{cid}/predict")
        assert r.status_code == 500 and r.json() == {"error": "internal error (RuntimeError: boom)"}
        assert c.get("/api/status").status_code == 200
    finally:
        ex.close()


def test_images_folder_is_offered_by_id_and_a_bad_file_is_a_400(lite0, chelsea, tmp_path):
    from convlens.errors import InputError

    (tmp_path / "sub").mkdir()
    Image.fromarray(chelsea).save(tmp_path / "sub" / "cat.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (tmp_path / ".hidden.png").write_bytes(_png_bytes(chelsea))  # hidden files are skipped (convlens.io)
    ex = Explorer(lite0, bundled=False, images_dir=tmp_path)
    try:
        c = TestClient(create_app(ex))
        ims = {im["name"]: im for im in c.get("/api/images").json()}
        assert set(ims) == {"broken.jpg", "sub/cat.png"} and all(im["source"] == "folder" for im in ims.values())
        assert c.get(f"/api/images/{ims['sub/cat.png']['id']}/predict").json()[0]["label"] == "Egyptian cat"
        assert "corrupt" in _error(c.get(f"/api/images/{ims['broken.jpg']['id']}/predict"), 400)
    finally:
        ex.close()
    with pytest.raises(InputError, match="not a folder"):
        Explorer(lite0, images_dir=tmp_path / "nope")


# ---------------------------------------------------------------- a module used several times
class _ReusedPool(torch.nn.Module):
    """A user's model whose one pooling module runs at two resolutions (call 0: 32x32 -> 16x16, call 1: 16 -> 8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 5, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def test_reused_module_layers_are_the_listed_calls():
    """'pool' is listed (shape, RF) as its first call and 'pool#1' as its second: every endpoint must use that
    call. Before, a plain 'pool' captured the LAST call (8x8 maps under a 16x16 row). Oracle: the model run
    step by step with torch."""
    from convlens.models import Preprocess
    from convlens.models.registry import bundle_from_module

    net = _ReusedPool()
    b = bundle_from_module(net, "reused", "file", preprocess=Preprocess(size=32, resize="squash"))
    ex = Explorer(b, bundled=False)
    try:
        c = TestClient(create_app(ex))
        rgb = (np.arange(40 * 48 * 3) % 251).astype(np.uint8).reshape(40, 48, 3)
        iid = c.post("/api/images", files={"file": ("r.png", _png_bytes(rgb), "image/png")}).json()["id"]
        x = b.preprocess([rgb])
        with torch.no_grad():
            p0 = net.pool(torch.relu(net.conv1(x)))
            p1 = net.pool(torch.relu(net.conv2(p0)))
        for layer, want in (("pool", p0), ("pool#1", p1)):
            r = c.get(f"/api/images/{iid}/activations", params={"layer": layer, "limit": 256})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["shape"] == list(want.shape[1:]), (layer, body["shape"])
            for m in body["maps"]:
                got = np.frombuffer(base64.b64decode(m["data"]), np.float32).reshape(want.shape[2:])
                np.testing.assert_allclose(got, want[0, m["channel"]].numpy(), rtol=1e-5, atol=1e-6)
            u = c.get(f"/api/images/{iid}/unit", params={"layer": layer, "c": 1, "i": 3, "j": 5})
            assert u.status_code == 200, u.text
            assert u.json()["value"] == pytest.approx(float(want[0, 1, 3, 5]), abs=1e-6)
        # the first call's unit at a position only the 16x16 map has
        assert c.get(f"/api/images/{iid}/unit", params={"layer": "pool", "c": 0, "i": 12, "j": 12}).status_code == 200
        # CAM reads a module's last call: 'pool#1' is accepted, a stale call index is a clear 404
        assert c.get(f"/api/images/{iid}/cam", params={"layer": "pool#1"}).json()["layer"] == "pool"
        assert "last call" in _error(c.get(f"/api/images/{iid}/cam", params={"layer": "pool#0"}), 404)
    finally:
        ex.close()


class _TinyAttention(torch.nn.Module):
    """Patch embedding (a 4x4 map of 8 channels) -> tokens -> one softmax-attention layer (2 heads)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Conv2d(3, 8, 8, stride=8)
        self.tokens = torch.nn.Identity()
        self.qkv = torch.nn.Linear(8, 24)
        self.softmax = torch.nn.Softmax(dim=-1)
        self.block = torch.nn.Linear(8, 8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens(self.embed(x).flatten(2).transpose(1, 2))  # (N, 16, 8)
        q, k, v = self.qkv(t).reshape(t.shape[0], t.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        a = self.softmax(q @ k.transpose(-2, -1))  # (N, 2, 16, 16): attention weights, no map of the image
        t = self.block((a @ v).transpose(1, 2).reshape(t.shape) + t)
        return self.fc(t.mean(1))


def test_map_layers_follow_the_layout_rule_tokens_in_attention_weights_out():
    """The activation grid offers what convlens.layers calls a map: patch tokens (N, 16, 8) on their 4x4 grid,
    never the (N, heads, T, T) attention weights (before, a 4-D attention tensor was offered as a 16x16 map
    of 2 'channels' and token layers were missing). Oracle: the tokens reshaped to the grid by hand."""
    from convlens.models import Preprocess
    from convlens.models.registry import bundle_from_module

    net = _TinyAttention()
    b = bundle_from_module(net, "tinyattn", "file", preprocess=Preprocess(size=32, resize="squash"))
    ex = Explorer(b, bundled=False)
    try:
        c = TestClient(create_app(ex))
        maps = c.get("/api/layers").json()["map_layers"]
        assert "softmax" not in maps and {"embed", "tokens", "block"} <= set(maps), maps
        rgb = (np.arange(32 * 32 * 3) % 253).astype(np.uint8).reshape(32, 32, 3)
        iid = c.post("/api/images", files={"file": ("t.png", _png_bytes(rgb), "image/png")}).json()["id"]
        with torch.no_grad():
            want = net.embed(b.preprocess([rgb]))  # the tokens, as a (1, 8, 4, 4) map
        body = c.get(f"/api/images/{iid}/activations", params={"layer": "tokens", "limit": 8}).json()
        assert body["shape"] == [8, 4, 4] and len(body["maps"]) == 8
        for m in body["maps"]:
            got = np.frombuffer(base64.b64decode(m["data"]), np.float32).reshape(4, 4)
            np.testing.assert_allclose(got, want[0, m["channel"]].numpy(), rtol=1e-5, atol=1e-6)
        assert "no spatial output map" in _error(
            c.get(f"/api/images/{iid}/activations", params={"layer": "softmax"}), 404
        )
    finally:
        ex.close()


def test_uploads_with_the_same_bytes_but_another_shape_are_two_images():
    """A 4x6 and a 6x4 black image have the same pixel bytes; before, the second upload replaced the first."""
    s = ImageStore()
    a = s.add_array("wide", np.zeros((4, 6, 3), np.uint8))
    b = s.add_array("tall", np.zeros((6, 4, 3), np.uint8))
    assert a.id != b.id and s.get(a.id).array.shape == (4, 6, 3) and s.get(b.id).array.shape == (6, 4, 3)
    assert s.add_array("again", np.zeros((4, 6, 3), np.uint8)).id == a.id  # the same image twice is one entry
