"""The phone demo (android_demo/web) end to end in Debian's Chromium, driven by playwright-core.

A converted tiny bundle (3 levels, a router and the 3-stage exit chain s1 -> s2 -> s3) is served
by ``athe demo serve``; the page classifies scikit-image's sample photos with LiteRT.js under
every policy (``exit``, ``exit:<stage>``, ``router``, ``fixed:<level>``) and every answer is
compared with the Python LiteRT runtime: the preprocessed input, the exit or level taken, the
logits (<= 1e-4), the gate and router scores. The tiny checkpoint has no exit gates, so s1 gets
a logistic gate over the softmax features and the CLS token (seeded weights) and the exit
thresholds, like the router's, are set from the Python scores so that the photos take every
exit and every level. The dispatcher is also timed with and without DevTools CPU throttling.
Then the server is stopped and the page must reload and classify from the service worker's cache.

``athe demo serve`` does not route a bundle's ``stage-*.tflite`` files yet
(``athe/demo_web.py``), so the server is started through ``android_demo/web/tests/serve_stages.py``,
which adds those routes.

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
#: Gate scores are computed from the stage outputs, which the two LiteRT builds give to ~1e-6.
GATE_TOL = 1e-4
#: DevTools CPU throttling for the phone-like latency figure (Lighthouse's mobile default).
THROTTLE = 4


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


def _split(scores: list[float], counts: range) -> float:
    """A threshold between sorted ``scores`` (high to low) that lets ``k`` of them pass, ``k`` in
    ``counts``, at the widest gap (so float differences between runtimes cannot flip a decision)."""
    ranked = sorted(scores, reverse=True)
    k = max((k for k in counts if 0 < k < len(ranked)), key=lambda k: ranked[k - 1] - ranked[k])
    return (ranked[k - 1] + ranked[k]) / 2.0


@pytest.fixture(scope="module")
def demo_bundle(web_ready, converted_bundle, tmp_path_factory):
    """The tiny bundle's .tflite files with thresholds set so the photos take every branch: every
    level under the router, every exit under the exit chain (s1 with a logistic CLS gate)."""
    from athe.runtime.bundle import Bundle
    from athe.runtime.dispatcher import Dispatcher

    out = tmp_path_factory.mktemp("web") / "bundle"
    out.mkdir()
    manifest = json.loads((converted_bundle / "manifest.json").read_text())
    for owner in [*manifest["levels"], *manifest["stages"], manifest["router"]]:
        owner["files"] = {"tflite": owner["files"]["tflite"]}
        shutil.copy(converted_bundle / owner["files"]["tflite"]["path"], out)
    disp = Dispatcher(Bundle.open(converted_bundle, formats=["tflite"]), backend="litert", threads=1, policy="router")
    scores = [disp.predict(p).router_scores for p in demo_photos()]
    simple = sorted((s["simple"] for s in scores), reverse=True)
    th_simple = simple[len(simple) // 2]  # about half the photos pass the cheap level
    rest = sorted(s["complex"] for s in scores if s["simple"] < th_simple)
    th_complex = rest[-1] if len(rest) >= 2 and rest[-1] > rest[0] else 1.0  # 1.0: (almost) never
    manifest["router"]["thresholds"] = {"simple": th_simple, "complex": th_complex}
    # s1: a logistic gate on max_prob, margin, entropy and the CLS token (48 values), seeded weights
    s1, s2 = manifest["stages"][0], manifest["stages"][1]
    dim = _embed_dim(converted_bundle, s1)
    rng = np.random.default_rng(17)
    s1["gate"] = {"kind": "logistic", "features": ["max_prob", "margin", "entropy", "cls"],
                  "mean": [0.0] * (3 + dim), "std": [1.0] * (3 + dim),
                  "weights": [float(w) for w in rng.normal(0, 0.4, 3 + dim)], "bias": 0.0, "auroc": None}
    s1["threshold"], s2["threshold"] = 1.0, 1.0
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    chain = Dispatcher(Bundle.open(out), backend="litert", threads=1, policy="exit")
    gates = [chain.predict(p).gate_scores for p in demo_photos()]
    assert all(set(g) == {"s1", "s2"} for g in gates), gates  # nothing scored exactly 1.0
    th_s1 = _split([g["s1"] for g in gates], range(1, 3))
    th_s2 = _split([g["s2"] for g in gates if g["s1"] < th_s1], range(1, 10))
    s1["threshold"], s2["threshold"] = th_s1, th_s2
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def _embed_dim(bundle: Path, stage: dict) -> int:
    """Width of a stage's tokens (its CLS token), read from the .tflite's output shapes."""
    from athe.runtime.backends import load_backend

    model = load_backend("litert", threads=1).load(bundle / stage["files"]["tflite"]["path"])
    tokens = model.output_shapes[stage["outputs"].index("tokens")]
    assert tokens[1] == stage["tokens"], (tokens, stage["tokens"])  # the manifest's token count is the output's
    return int(tokens[-1])


@pytest.fixture(scope="module")
def e2e(demo_bundle, tmp_path_factory):
    """Run android_demo/web/tests/e2e.mjs once; return (results, python reference, png photos, out dir)."""
    from athe.runtime.bundle import Bundle
    from athe.runtime.dispatcher import Dispatcher
    from athe.runtime.preprocess import Preprocessor

    out = Path(os.environ.get("ATHE_E2E_OUT") or tmp_path_factory.mktemp("e2e"))
    out.mkdir(parents=True, exist_ok=True)
    bundle = Bundle.open(demo_bundle)
    pre = Preprocessor(bundle.input)
    photos = demo_photos()
    policies = ["exit", *(f"exit:{n}" for n in bundle.manifest.stage_names), "router",
                *(f"fixed:{n}" for n in bundle.level_names)]
    ref = {}
    for policy in policies:
        disp = Dispatcher(bundle, backend="litert", threads=1, policy=policy)
        for p in photos:
            pred = disp.predict(p)
            ref[(p.name, policy)] = {"level": pred.level, "exit": pred.exit,
                                     "logits": np.asarray(pred.logits, dtype=np.float64),
                                     "scores": pred.router_scores, "gates": pred.gate_scores,
                                     "input": pre(p).reshape(-1)}
    png = [p for p in photos if p.suffix == ".png"][:2]
    config = {
        "server": [sys.executable, str(WEB / "tests" / "serve_stages.py"), "--bundle", str(demo_bundle),
                   "--port", "0", "--quiet"],
        "chromium": CHROMIUM, "out": str(out), "samples": [p.name for p in photos], "policies": policies,
        "tensors": [ref[(p.name, "router")]["input"].tolist() for p in png],
        "vectors": json.loads(VECTORS.read_text()),
        "timing": {"loops": 3, "rate": THROTTLE, "policies": ["exit", f"fixed:{bundle.level_names[-1]}"]},
    }
    (out / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(["node", str(WEB / "tests" / "e2e.mjs"), str(out / "config.json")], cwd=WEB,
                          capture_output=True, text=True, timeout=900)
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
    """Per photo and policy: the exit or level taken, the logits (<= 1e-4), the gate and router scores."""
    results, ref, png, _ = e2e
    assert len(results["samples"]) == len(ref)
    assert {s["policy"] for s in results["samples"]} == {policy for _, policy in ref}
    for s in results["samples"]:
        r = ref[(s["name"], s["policy"])]
        where = f"{s['name']} {s['policy']}"
        x = np.asarray(s["input"], dtype=np.float32)
        if s["name"].endswith(".png"):  # lossless: decode + Pillow-exact resize must agree bit for bit
            np.testing.assert_allclose(x, r["input"], atol=1e-6, err_msg=f"{where}: preprocessing differs")
        if np.abs(x - r["input"]).max() <= 1e-6:
            diff = np.abs(np.asarray(s["logits"]) - r["logits"]).max()
            assert diff <= LOGIT_TOL, f"{where}: logits differ by {diff:.2e}"
            assert s["level"] == r["level"], f"{where}: browser answered with {s['level']}, Python {r['level']}"
            assert s["exit"] == r["exit"], f"{where}: browser exit {s['exit']}, Python {r['exit']}"
            assert set(s["gateScores"]) == set(r["gates"]), f"{where}: gates asked {s['gateScores']} vs {r['gates']}"
            for name, score in s["gateScores"].items():
                assert abs(score - r["gates"][name]) <= GATE_TOL, f"{where}: gate {name} {score} vs {r['gates'][name]}"
            for name, score in s["routerScores"].items():
                assert abs(score - r["scores"][name]) <= 1e-5, f"{where}: router score {name}"
        if s["exit"] is not None:  # the stages that ran: the chain up to the exit, each timed
            stages = ["s1", "s2", "s3"]
            assert list(s["stageMs"]) == stages[:stages.index(s["exit"]) + 1], (where, s["stageMs"])
            assert all(ms >= 0 for ms in s["stageMs"].values()), (where, s["stageMs"])


def test_exit_chain_takes_every_exit(e2e):
    """The thresholds make the photos leave at s1, at s2 and at the end; the browser agrees with Python."""
    results, ref, *_ = e2e
    taken = [s["exit"] for s in results["samples"] if s["policy"] == "exit"]
    assert set(taken) == {"s1", "s2", "s3"}, taken
    assert taken == [ref[(s["name"], "exit")]["exit"] for s in results["samples"] if s["policy"] == "exit"]
    for s in results["samples"]:
        if s["policy"].startswith("exit:"):
            assert s["exit"] == s["policy"][5:] and s["gateScores"] == {}, s
        if s["policy"] == "exit":  # a gate for every stage before the exit, each against its threshold
            stages = ["s1", "s2", "s3"]
            asked = stages[:stages.index(s["exit"]) + (0 if s["exit"] == "s3" else 1)]
            assert list(s["gateScores"]) == asked, s["gateScores"]
            for name, score in s["gateScores"].items():
                passed = score >= s["exitThresholds"][name]
                assert passed == (name == s["exit"]), (name, score, s["exitThresholds"])


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
            assert got["level"] == r["level"] and got["exit"] == r["exit"], (p.name, policy, got["level"], r["level"])


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
    assert s["policy"] == "exit"  # the bundle's default policy, with every stage artifact from the cache
    online = next(o for o in results["samples"] if o["name"] == s["name"] and o["policy"] == "exit")
    assert s["exit"] == online["exit"]
    np.testing.assert_allclose(s["logits"], online["logits"], atol=1e-6)


def test_page_shows_the_exit_gates_and_the_early_share(e2e):
    """The screen after the default policy: exit badge, a gate row per stage (score vs threshold),
    per-stage latency rows, and the running share of images that exited early."""
    results, *_ = e2e
    page = results["page"]
    assert page["policy"] == "exit" and page["policyOptions"][:4] == ["exit", "exit:s1", "exit:s2", "exit:s3"]
    assert page["answeredBy"] == "exit" and page["badge"] in ("s1", "s2", "s3") and page["gatesShown"]
    assert [row[0] for row in page["gates"]] == ["s1", "s2", "s3"]
    for row in page["gates"][:["s1", "s2", "s3"].index(page["badge"]) + (page["badge"] != "s3")]:
        assert ("✓ exit" in row[2]) == (row[0] == page["badge"]), row
    assert page["gates"][2][2] in ("always answers", "not run")
    steps = [row[0] for row in page["timings"]]
    assert steps[:3] == ["decode", "preprocess", "gates"] and "stage s1" in steps and steps[-1] == "total", steps
    samples = results["samples"]
    exits = [s for s in samples if s["exit"] is not None] + [None]  # + the screenshot's own image
    assert page["state"]["exits"] == len(exits)
    early = sum(1 for s in samples if s["exit"] not in (None, "s3")) + (page["badge"] != "s3")
    assert page["state"]["early"] == early
    assert page["earlyShare"].startswith(f"exited early: {early} of {len(exits)} images"), page["earlyShare"]


def test_cpu_throttled_latency_reported(e2e):
    """Dispatcher latency in the browser unthrottled and at 4x DevTools CPU throttling (a mid-range
    phone's factor), per policy; written to latency.json and printed."""
    results, _, _, out = e2e
    lat = results["latency"]
    assert lat["rate"] == THROTTLE
    lines = [f"browser latency, median ms over {lat['loops']} x {lat['photos']} photos, {lat['threads']} wasm "
             f"thread(s): unthrottled vs {lat['rate']}x CPU throttling (Emulation.setCPUThrottlingRate)"]
    for policy, free in lat["unthrottled"].items():
        slow = lat["throttled"][policy]
        assert free["runs"] == slow["runs"] == lat["loops"] * lat["photos"]
        assert free["total"] > 0 and slow["total"] > 0
        assert set(free["stageMs"]) == set(slow["stageMs"]) and free["answers"] == slow["answers"]
        stages = ", ".join(f"{k} {free['stageMs'][k]:.2f}/{slow['stageMs'][k]:.2f}" for k in free["stageMs"])
        lines.append(f"  {policy:14s} total {free['total']:.2f} / {slow['total']:.2f}  infer {free['infer']:.2f} / "
                     f"{slow['infer']:.2f}  ({stages}; answers {free['answers']})")
    (out / "latency.json").write_text(json.dumps(lat, indent=1))
    print("\n".join(lines))


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
            if case["exact"]:  # the whole message, word for word
                assert out["error"] == case["error"], (case["name"], out["error"], case["error"])
        elif "tflite" not in case["expected"]["formats"]:  # the browser can only run .tflite
            assert not out["ok"] and "no .tflite file" in out["error"], (case["name"], out)
        else:
            want = case["expected"]
            assert out["ok"], (case["name"], out)
            assert out["levelNames"] == want["level_names"]
            assert out["labels"] == want["labels"]
            assert out["thresholds"] == (want["thresholds"] if want["has_router"] else None)
            assert out["schemaVersion"] == want["schema_version"] == 2
            assert out["stageNames"] == want["stage_names"] and out["defaultPolicy"] == want["default_policy"]
            assert out["exitThresholds"] == want["exit_thresholds"], case["name"]
            for st, ws in zip(out["stages"], want["stages"], strict=True):
                assert {k: st[k] for k in ("name", "inputs", "outputs", "tokens", "token_selection", "threshold")} == \
                    {k: ws[k] for k in ("name", "inputs", "outputs", "tokens", "token_selection", "threshold")}
                assert (st["gate"] is None) == (ws["gate"] is None)
                if st["gate"] is not None:
                    assert {k: st["gate"][k] for k in ("kind", "features", "mean", "std", "weights", "bias")} == \
                        {k: ws["gate"][k] for k in ("kind", "features", "mean", "std", "weights", "bias")}
    for case, out in zip(vectors["manifest_edits"], got["manifestEdits"], strict=True):
        if "error" in case:
            assert not out["ok"] and case["error_contains"] in out["error"], (case["name"], out)
            if case["exact_js"]:  # word for word (unless JSON.parse loses how Python prints a value)
                assert out["error"] == case["error"], (case["name"], out["error"], case["error"])
        else:
            assert out["ok"] and out["value"] == {"levelNames": case["expected"]["level_names"],
                                                  "stageNames": case["expected"]["stage_names"]}, (case["name"], out)
    for case, out in zip(vectors["gate_score"], got["gateScore"], strict=True):
        if "error_contains" in case:
            assert not out["ok"] and case["error_contains"] in out["error"], (case["name"], out)
            continue
        assert out["ok"], (case["name"], out)
        assert abs(out["value"]["score"] - case["score"]) <= 1e-12, (case["name"], out["value"]["score"], case["score"])
        np.testing.assert_allclose(out["value"]["features"], case["features"], atol=1e-12, err_msg=case["name"])
        if case["gate"]["kind"] == "max_softmax":  # no dot product: the same double, bit for bit
            assert out["value"]["score"] == case["score"], case["name"]
    assert got["exitDecisions"] == [c["expected"] for c in vectors["exit_decisions"]]
    for case, out in zip(vectors["chains"], got["chains"], strict=True):
        want = case["expected"]
        assert out["ok"], (case["name"], out)
        assert (out["exit"], out["ran"], out["feeds"], out["label"]) == \
            (want["exit"], want["ran"], want["feeds"], want["label"]), case["name"]
        assert list(out["gateScores"]) == list(want["gate_scores"]), case["name"]
        for name, score in want["gate_scores"].items():
            assert abs(out["gateScores"][name] - score) <= 1e-12, (case["name"], name)
        np.testing.assert_array_equal(np.float32(out["logits"]), np.float32(want["logits"]), err_msg=case["name"])
        assert abs(out["probability"] - want["probability"]) <= 1e-12, case["name"]
    for case, out in zip(vectors["policies"], got["policies"], strict=True):
        if "error_contains" in case:
            assert not out["ok"] and case["error_contains"] in out["error"], (case["name"], out)
        elif not case["expected"]["phone"]:  # random / oracle: evaluation policies, refused on the phone
            assert not out["ok"] and "not available on the phone" in out["error"], (case["name"], out)
        else:
            assert out["ok"] and out["value"] == {k: case["expected"][k] for k in ("kind", "stage", "level")}, \
                (case["name"], out)


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
