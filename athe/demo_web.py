"""``athe demo serve``: serve the phone demo (a PWA in ``android_demo/web``) with one bundle.

The page runs the bundle's ``.tflite`` router and levels in the browser with LiteRT.js; this server
only hands out files. What it serves, and nothing else:

=============================  =====================================================================
``/``                          the app (``android_demo/web``: index.html, app.js, athe.js, sw.js, ...)
``/vendor/litertjs/core/``     ``@litertjs/core``'s ``dist/index.js`` (from ``node_modules``)
``/vendor/litertjs/wasm/``     LiteRT.js's WebAssembly runtimes
``/vendor/litertjs/wasm-utils/``  its one dependency
``/bundle/``                   ``manifest.json`` and the ``.tflite`` files the manifest lists
``/samples/``                  scikit-image's sample photos (``index.json`` lists them), if installed
=============================  =====================================================================

Every response carries ``Cross-Origin-Opener-Policy``/``Cross-Origin-Embedder-Policy`` so the
page is cross-origin isolated and LiteRT.js can use its threaded WebAssembly build.

Example::

    >>> server = DemoServer(bundle="bundles/athe-mini", host="127.0.0.1", port=8765)
    >>> server.serve_forever()       # http://127.0.0.1:8765/
"""

from __future__ import annotations

import json
import mimetypes
import ssl
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from athe.runtime.bundle import Bundle, BundleError

#: Where the web app lives in a source checkout (the repo root is two levels above this file).
DEFAULT_WEB_DIR = Path(__file__).resolve().parent.parent / "android_demo" / "web"
APP_FILES = ("index.html", "app.js", "athe.js", "sw.js", "style.css", "manifest.webmanifest")
INSTALL_HINT = "run 'npm ci --prefix android_demo/web' (or 'make demo-web')"


class DemoServerError(RuntimeError):
    """The demo cannot be served; the message says what is missing and how to fix it."""


def find_web_dir(web_dir: str | Path | None = None) -> Path:
    """The PWA folder with LiteRT.js installed in its ``node_modules``."""
    folder = Path(web_dir) if web_dir is not None else DEFAULT_WEB_DIR
    missing = [f for f in APP_FILES if not (folder / f).is_file()]
    if missing:
        raise DemoServerError(f"{str(folder)!r} is not the demo app (missing {', '.join(missing)}); "
                              "pass --web-dir pointing at android_demo/web of an ATHE checkout")
    core = folder / "node_modules" / "@litertjs" / "core"
    if not (core / "dist" / "index.js").is_file() or not (core / "wasm").is_dir():
        raise DemoServerError(f"LiteRT.js is not installed in {str(folder / 'node_modules')!r}: {INSTALL_HINT}")
    return folder


def sample_photos() -> dict[str, Path]:
    """scikit-image's shipped sample photos by name (empty without scikit-image)."""
    from athe.commands import demo_photos

    return {p.name: p for p in demo_photos()}


def _routes(web_dir: Path, bundle_dir: Path) -> dict[str, Path]:
    """Map of every servable URL path -> file. Nothing outside it is served."""
    nm = web_dir / "node_modules" / "@litertjs"
    routes: dict[str, Path] = {"/": web_dir / "index.html"}
    for f in web_dir.rglob("*"):
        rel = f.relative_to(web_dir)
        if f.is_file() and rel.parts[0] not in ("node_modules", "tests") and not rel.name.startswith("package"):
            routes["/" + rel.as_posix()] = f
    routes["/vendor/litertjs/core/index.js"] = nm / "core" / "dist" / "index.js"
    routes["/vendor/litertjs/wasm-utils/index.js"] = nm / "wasm-utils" / "dist" / "index.js"
    for f in (nm / "core" / "wasm").iterdir():
        routes[f"/vendor/litertjs/wasm/{f.name}"] = f
    bundle = Bundle.open(bundle_dir)
    routes["/bundle/manifest.json"] = bundle_dir / "manifest.json"
    owners = [lv.files for lv in bundle.manifest.levels] + [st.files for st in bundle.manifest.stages]
    if bundle.manifest.router is not None:
        owners.append(bundle.manifest.router.files)
    for files in owners:
        if "tflite" not in files:
            raise DemoServerError(f"bundle {str(bundle_dir)!r} has no .tflite files (the browser runs LiteRT): "
                                  f"re-run 'athe convert --format tflite,pte'")
        routes["/bundle/" + files["tflite"].path] = bundle_dir / files["tflite"].path
    return routes


class _Handler(SimpleHTTPRequestHandler):
    routes: dict[str, Path] = {}
    samples: dict[str, Path] = {}
    quiet = False

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def _body(self, data: bytes, ctype: str, head: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _serve(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/samples/index.json":
            return self._body(json.dumps(sorted(self.samples)).encode(), "application/json", head)
        if path.startswith("/samples/") and path[len("/samples/"):] in self.samples:
            f = self.samples[path[len("/samples/"):]]
        elif path in self.routes:
            f = self.routes[path]
        else:
            return self.send_error(HTTPStatus.NOT_FOUND, "not part of the demo")
        try:
            data = f.read_bytes()
        except OSError:
            return self.send_error(HTTPStatus.NOT_FOUND, f"{f.name} is missing on the server")
        self._body(data, _content_type(f), head)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        if not self.quiet:
            super().log_message(format, *args)


def _content_type(f: Path) -> str:
    special = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
               ".webmanifest": "application/manifest+json", ".json": "application/json",
               ".tflite": "application/octet-stream", ".css": "text/css", ".html": "text/html; charset=utf-8"}
    return special.get(f.suffix) or mimetypes.guess_type(f.name)[0] or "application/octet-stream"


class DemoServer:
    """An HTTP(S) server for the demo app and one bundle.

    Args:
        bundle: a converted bundle folder with ``.tflite`` files.
        host, port: where to listen (port 0 picks a free one; see ``url``).
        certfile, keyfile: serve HTTPS (phones need a secure context for a LAN address).
        web_dir: the app folder (default: ``android_demo/web`` of this checkout).
        quiet: do not log requests.
    """

    def __init__(self, bundle: str | Path, host: str = "127.0.0.1", port: int = 8765,
                 certfile: str | Path | None = None, keyfile: str | Path | None = None,
                 web_dir: str | Path | None = None, quiet: bool = False) -> None:
        web = find_web_dir(web_dir)
        try:
            routes = _routes(web, Path(bundle))
        except BundleError as exc:
            raise DemoServerError(str(exc)) from None
        handler = type("Handler", (_Handler,), {"routes": routes, "samples": sample_photos(), "quiet": quiet})
        try:
            self.httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise DemoServerError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None
        self.https = certfile is not None
        if self.https:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
            except (OSError, ssl.SSLError) as exc:
                self.httpd.server_close()
                raise DemoServerError(f"cannot load --https {certfile} {keyfile}: {exc}; pass a PEM certificate "
                                      "and its key") from None
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.host = host
        self.port = self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{'https' if self.https else 'http'}://{host}:{self.port}/"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> DemoServer:
        """Serve from a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join()
