"""The phone demo (android_demo/web) end to end in Debian's Chromium, driven by playwright-core.

A converted tiny bundle is served by ``athe demo serve``; the page classifies scikit-image's sample
photos with LiteRT.js and every answer is compared with the Python LiteRT backend: the
preprocessed input, the logits (<= 1e-4), the router scores and the level chosen. Thresholds are
set from the Python router scores so that the photos take all three dispatch branches. Then the
server is stopped and the page must reload and classify from the service worker's cache.

Needs node, ``npm ci --prefix android_demo/web`` and ``apt-get install chromium`` (``.ci/run``
installs them and sets ``ATHE_REQUIRE_WEB=1``, which turns a missing piece into a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from athe.commands import demo_photos

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "android_demo" / "web"
VECTORS = ROOT / "android_demo" / "vectors" / "vectors.json"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LOGIT_TOL = 1e-4


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs)"
    if not (WEB / "node_modules" / "playwright-core").is_dir() or not (WEB / "node_modules" / "@litertjs" / "core").is_dir():
        return "npm packages missing: npm ci --prefix android_demo/web"
    if CHROMIUM is None:
        return "chromium is not installed (apt-get install chromium)"
    if len(demo_photos()) < 4:
        return "scikit-image's sample photos are missing (pip install scikit-image)"
    return None


@pytest.fixture(scope="module")
def web_ready():
    reason = _missing()
    if reason:
        if os.environ.get("ATHE_REQUIRE_WEB") == "1":
            pytest.fail(f"ATHE_REQUIRE_WEB=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def demo_bundle(web_ready, converted_bundle, tmp_path_factory):
    """The tiny bundle's .tflite files with thresholds set so the photos take every branch."""
    from athe.runtime.bundle import Bundle
    from athe.runtime.dispatcher import Dispatcher

    out = tmp_path_factory.mktemp("web") / "bundle"
    out.mkdir()
    manifest = json.loads((converted_bundle / "manifest.json").read_text())
    for owner in [*manifest["levels"], manifest["router"]]:
        owner["files"] = {"tflite": owner["files"]["tflite"]}
        shutil.copy(converted_bundle / owner["files"]["tflite"]["path"], out)
    disp = Dispatcher(Bundle.open(converted_bundle, formats=["tflite"]), backend="litert", threads=1)
    scores = [disp.predict(p).router_scores for p in demo_photos()]
    simple = sorted((s["simple"] for s in scores), reverse=True)
    th_simple = simple[len(simple) // 2]  # about half the photos pass the cheap level
    rest = sorted(s["complex"] for s in scores if s["simple"] < th_simple)
    th_complex = rest[-1] if len(rest) >= 2 and rest[-1] > rest[0] else 2.0
    manifest["router"]["thresholds"] = {"simple": th_simple, "complex": th_complex}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


@pytest.fixture(scope="module")
def e2e(demo_bundle, tmp_path_factory):
    """Run android_demo/web/tests/e2e.mjs once; return (results, python reference, out dir)."""
    from athe.runtime.bundle import Bundle
    from athe.runtime.dispatcher import Dispatcher
    from athe.runtime.preprocess import Preprocessor

    out = Path(os.environ.get("ATHE_E2E_OUT") or tmp_path_factory.mktemp("e2e"))
    out.mkdir(parents=True, exist_ok=True)
    bundle = Bundle.open(demo_bundle)
    pre = Preprocessor(bundle.input)
    photos = demo_photos()
    ref = {}
    for policy in ["router", *(f"fixed:{n}" for n in bundle.level_names)]:
        disp = Dispatcher(bundle, backend="litert", threads=1, policy=policy)
        for p in photos:
            pred = disp.predict(p)
            ref[(p.name, policy)] = {"level": pred.level, "logits": np.asarray(pred.logits, dtype=np.float64),
                                     "scores": pred.router_scores, "input": pre(p).reshape(-1)}
    png = [p for p in photos if p.suffix == ".png"][:2]
    config = {
        "server": [sys.executable, "-m", "athe", "demo", "serve", "--bundle", str(demo_bundle), "--port", "0", "--quiet"],
        "chromium": CHROMIUM, "out": str(out), "samples": [p.name for p in photos],
        "tensors": [ref[(p.name, "router")]["input"].tolist() for p in png],
        "vectors": json.loads(VECTORS.read_text()),
    }
    (out / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(["node", str(WEB / "tests" / "e2e.mjs"), str(out / "config.json")], cwd=WEB,
                          capture_output=True, text=True, timeout=600)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    assert proc.returncode == 0, f"e2e.mjs failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{results.get('fatal')}"
    return results, ref, png, out


def test_page_loads_isolated_and_installable(e2e):
    results, *_ = e2e
    first = results["first"]
    assert first["ready"] and first["error"] is None
    assert first["isolated"], "COOP/COEP headers must make the page cross-origin isolated (threaded wasm)"
    assert first["controlled"], "the service worker must control the page"
    assert results["installability"] == [], results["installability"]
    assert results["manifestErrors"] == [], results["manifestErrors"]
    assert results["errors"] == [], results["errors"]


def test_browser_matches_python_litert(e2e):
    results, ref, png, _ = e2e
    assert len(results["samples"]) == len(ref)
    for s in results["samples"]:
        r = ref[(s["name"], s["policy"])]
        where = f"{s['name']} {s['policy']}"
        x = np.asarray(s["input"], dtype=np.float32)
        if s["name"].endswith(".png"):  # lossless: decode + Pillow-exact resize must agree bit for bit
            np.testing.assert_allclose(x, r["input"], atol=1e-6, err_msg=f"{where}: preprocessing differs")
        if np.abs(x - r["input"]).max() <= 1e-6:
            diff = np.abs(np.asarray(s["logits"]) - r["logits"]).max()
            assert diff <= LOGIT_TOL, f"{where}: logits differ by {diff:.2e}"
            assert s["level"] == r["level"], f"{where}: browser chose {s['level']}, Python {r['level']}"
        for name, score in s["routerScores"].items():
            if np.abs(x - r["input"]).max() <= 1e-6:
                assert abs(score - r["scores"][name]) <= 1e-5, f"{where}: router score {name}"


def test_jpeg_decoding_close_to_pillow(e2e):
    """Browsers and Pillow both use libjpeg-turbo; a JPEG's input may differ by a few levels at most."""
    results, ref, *_ = e2e
    jpegs = [s for s in results["samples"] if s["name"].endswith(".jpg") and s["policy"] == "router"]
    assert jpegs, "need a JPEG sample (rocket.jpg ships with scikit-image)"
    for s in jpegs:
        x = np.asarray(s["input"], dtype=np.float32)
        step = 1 / 255 / 0.2435  # one uint8 level in normalised units (largest 1/std)
        assert np.abs(x - ref[(s["name"], "router")]["input"]).max() <= 3 * step + 1e-6


def test_tensor_path_matches_python(e2e):
    results, ref, png, _ = e2e
    assert len(results["tensors"]) == len(png)
    for p, row in zip(png, results["tensors"], strict=True):
        for policy, got in row.items():
            r = ref[(p.name, policy)]
            diff = np.abs(np.asarray(got["logits"]) - r["logits"]).max()
            assert diff <= LOGIT_TOL, f"{p.name} {policy}: {diff:.2e}"
            assert got["level"] == r["level"]


def test_router_takes_every_branch(e2e):
    results, ref, *_ = e2e
    chosen = {s["level"] for s in results["samples"] if s["policy"] == "router"}
    assert {"simple", "dense"} <= chosen | {"complex"} and len(chosen) >= 2, chosen
    assert chosen == {r["level"] for (_, policy), r in ref.items() if policy == "router"}


def test_reload_works_offline(e2e):
    results, ref, *_ = e2e
    assert results["offlineProbe"] == "served", "with the server stopped the service worker must answer"
    assert results["offline"]["ready"] and results["offline"]["error"] is None, results.get("offline")
    (s,) = results["offlineSamples"]
    online = next(o for o in results["samples"] if o["name"] == s["name"] and o["policy"] == "router")
    np.testing.assert_allclose(s["logits"], online["logits"], atol=1e-6)


def test_screenshots_saved(e2e):
    *_, out = e2e
    for name in ("online.png", "offline.png"):
        from PIL import Image

        img = Image.open(out / name)
        assert img.width >= 400 and img.height >= 800, img.size
        # not a blank page: the header's brand colour and the text are both there
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50


def test_shared_vectors_in_browser(e2e):
    """athe.js agrees with Python (and so with android_demo/core) on the shared vectors."""
    results, *_ = e2e
    vectors = json.loads(VECTORS.read_text())
    got = results["vectors"]
    for case, out in zip(vectors["preprocess"], got["preprocess"], strict=True):
        assert out["resized"] == case["resized_rgb"], f"resize differs: {case['name']}"
        np.testing.assert_allclose(out["tensor"], case["expected"], atol=1e-6, err_msg=case["name"])
    assert got["chooseLevel"] == [c["expected"] for c in vectors["choose_level"]]
    for case, out in zip(vectors["softmax_top1"], got["softmaxTop1"], strict=True):
        assert out["index"] == case["label"] and abs(out["probability"] - case["probability"]) <= 1e-9, case["name"]
    for case, out in zip(vectors["manifests"], got["manifests"], strict=True):
        if "error_contains" in case:
            assert not out["ok"] and case["error_contains"] in out["error"], (case["name"], out)
        elif "tflite" not in case["expected"]["formats"]:  # the browser can only run .tflite
            assert not out["ok"] and "no .tflite file" in out["error"], (case["name"], out)
        else:
            assert out["ok"], (case["name"], out)
            assert out["levelNames"] == case["expected"]["level_names"]
            assert out["labels"] == case["expected"]["labels"]
            assert out["thresholds"] == (case["expected"]["thresholds"] if case["expected"]["has_router"] else None)


def test_serve_refuses_bad_bundle(tmp_path, web_ready):
    from click.testing import CliRunner

    from athe.cli import cli

    r = CliRunner().invoke(cli, ["demo", "serve", "--bundle", str(tmp_path / "nope"), "--port", "0"])
    assert r.exit_code != 0 and "not found" in r.output and "athe convert" in r.output, r.output


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_serve_https_headers_and_nothing_else(tmp_path, web_ready, converted_bundle):
    """HTTPS with a PEM pair, COOP/COEP on every response, and only the demo's own files."""
    import ssl
    import urllib.error
    import urllib.request

    from athe.demo_web import DemoServer

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    server = DemoServer(converted_bundle, port=0, certfile=cert, keyfile=key, quiet=True).start()
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    try:
        assert server.url.startswith("https://")

        def get(path):
            return urllib.request.urlopen(server.url.rstrip("/") + path, context=ctx, timeout=10)

        with get("/bundle/manifest.json") as r:
            assert r.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert r.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert json.loads(r.read())["variant"] == "tiny-test"
        with get("/vendor/litertjs/wasm/litert_wasm_internal.wasm") as r:
            assert r.headers["Content-Type"] == "application/wasm"
        with get("/manifest.webmanifest") as r:
            assert r.headers["Content-Type"] == "application/manifest+json"
        for path in ("/bundle/simple.pte", "/bundle/simple.pt2", "/package.json", "/../pyproject.toml",
                     "/node_modules/@litertjs/core/package.json", "/tests/e2e.mjs"):
            with pytest.raises(urllib.error.HTTPError) as err:
                get(path)
            assert err.value.code == 404, path
    finally:
        server.stop()
