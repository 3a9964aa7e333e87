"""``athe demo serve`` that also serves the bundle's stage artifacts (a test shim).

``athe.demo_web._routes`` serves ``manifest.json`` and the ``.tflite`` files of the levels and the
router only; a schema-2 bundle's ``stage-*.tflite`` files are not routed, so the PWA cannot load
its exit chain from it. Until ``athe/demo_web.py`` routes ``bundle.manifest.stages`` too, the
end-to-end test and ``measure.mjs`` start the server through this file, which adds the missing
routes (and changes nothing once the server routes them itself)::

    python android_demo/web/tests/serve_stages.py --bundle DIR --port 0 --quiet
"""

from __future__ import annotations

import sys
from pathlib import Path

import athe.demo_web as demo_web
from athe.runtime.bundle import Bundle

_routes = demo_web._routes


def _routes_with_stages(web_dir: Path, bundle_dir: Path) -> dict[str, Path]:
    routes = _routes(web_dir, bundle_dir)
    for st in Bundle.open(bundle_dir).manifest.stages:
        if "tflite" in st.files:
            routes.setdefault("/bundle/" + st.files["tflite"].path, Path(bundle_dir) / st.files["tflite"].path)
    return routes


demo_web._routes = _routes_with_stages

if __name__ == "__main__":
    from athe.cli import cli

    cli(["demo", "serve", *sys.argv[1:]])
