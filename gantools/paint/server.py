"""The paint server: the page and a small JSON API, on the standard library's `http.server`.

Nothing is read from disk: the page is one string held in memory (`page.PAGE`), so no path a
request names can reach a file. Every request is validated before any model work, and answered
with JSON; a bad one gets a 4xx status and `{"error": "<one-line reason>"}`, and a failure inside
the model work a 500 with the same shape. No request can stop the server.

Routes (the session id travels in the `X-Paint-Session` header):

    GET  /                the page
    GET  /api/studio      model, layer, image size and the palette
    POST /api/session     {"seed": 3}? -> a new session and its state
    POST /api/sample      {"seed": 3} -> a new generated image (clears the history)
    POST /api/apply       {"concept", "action": "add"|"remove", "strength": 0..1, "mask": "0101..."}
    POST /api/undo, /api/redo
    POST /api/upload      the image file's bytes (?name=photo.png) -> inverted, then painted
    GET  /api/progress    the running upload's progress

Bound to 127.0.0.1, the server also checks the Host header (a page elsewhere that resolves its own
name to 127.0.0.1 cannot talk to it), and JSON requests must say `Content-Type: application/json`
and uploads carry the session header, which a cross-site page cannot send without the server's leave.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import tempfile
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import torch

from ..utils import GantoolsError
from .page import PAGE, SECURITY_POLICY
from .session import PaintSession, PaintState, SessionStore, sample_state
from .studio import ACTIONS, PaintStudio

SESSION_HEADER = "X-Paint-Session"
MAX_JSON_BYTES = 64 * 1024  # plus the mask: one character per pixel
MAX_SEED = 2 ** 31 - 1
MAX_DRAIN_BYTES = 64 * 1024 * 1024  # a refused body up to this size is read (and dropped) before the answer


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def one_line(text: str) -> str:
    """A message on one line (the reason a response gives)."""
    return " ".join(str(text).split()) or "error"


def parse_mask(mask: Any, size: int) -> torch.Tensor:
    """The brushed region (size x size bool) from its wire form: one '0' or '1' per pixel, row by row."""
    if not isinstance(mask, str):
        raise RequestError(400, "malformed mask: give a string of '0' and '1', one per pixel, row by row")
    if len(mask) != size * size:
        raise RequestError(400, f"the mask has {len(mask)} pixels: it must have {size} x {size} = {size * size}")
    if mask.strip("01"):
        raise RequestError(400, "malformed mask: only '0' and '1' may appear, one per pixel")
    region = torch.frombuffer(bytearray(mask.encode("ascii")), dtype=torch.uint8).view(size, size) == ord("1")
    if not bool(region.any()):
        raise RequestError(400, "the mask selects no pixels: brush over the image first")
    return region.clone()


def read_upload(data: bytes, nc: int, size: int, max_pixels: int) -> torch.Tensor:
    """An uploaded image file as the model sees it (uint8 nc x size x size: resized, centre-cropped)."""
    from PIL import Image, UnidentifiedImageError

    from ..data import read_image, resize_center_crop

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only: the size comes before any decoding
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RequestError(415, "the upload is not an image this server can read (PNG, JPEG, WebP, BMP, TIFF)") from None
    if width * height > max_pixels:
        raise RequestError(413, f"the image is {width} x {height} pixels: at most {max_pixels:,} pixels are accepted")
    fd, name = tempfile.mkstemp(prefix="gantools-paint-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        image = read_image(name, nc)  # the one image loader: modes, alpha, 16-bit
    except GantoolsError:
        raise RequestError(415, "the upload is not an image this server can read (PNG, JPEG, WebP, BMP, TIFF)") from None
    finally:
        Path(name).unlink(missing_ok=True)
    return resize_center_crop(image, size)


class PaintServer(ThreadingHTTPServer):
    """The paint server for one studio (`serve_forever()` to run it, `shutdown()` from another thread).

    Args:
        studio: the model side.
        address: (host, port); port 0 takes a free port (see `url`).
        start: the state new sessions start from (default: the sample of seed 0).
        on_error: called with a traceback for each request that failed inside the server (500s).
    """

    daemon_threads = True  # a request still running does not keep the process alive at exit

    def __init__(self, studio: PaintStudio, address: tuple[str, int] = ("127.0.0.1", 0),
                 start: PaintState | None = None, on_error: Callable[[str], None] | None = None) -> None:
        self.studio = studio
        self.sessions = SessionStore(studio, start if start is not None else sample_state(studio, 0))
        self.on_error = on_error
        if ":" in address[0]:  # an IPv6 address
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, PaintHandler)

    @property
    def url(self) -> str:
        """The page's address."""
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    @property
    def loopback(self) -> bool:
        """Bound to this machine only (127.0.0.1, ::1)."""
        try:
            return ipaddress.ip_address(self.server_address[0]).is_loopback
        except ValueError:
            return False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A broken connection, outside any handler's own error handling: never print, never stop.
        if self.on_error is not None:
            self.on_error(traceback.format_exc())

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread (tests, scripts); stop with `shutdown()` then `server_close()`."""
        thread = threading.Thread(target=self.serve_forever, name="gantools-paint", daemon=True)
        thread.start()
        return thread


def make_server(studio: PaintStudio, host: str = "127.0.0.1", port: int = 0, start: PaintState | None = None,
                on_error: Callable[[str], None] | None = None) -> PaintServer:
    """A `PaintServer` bound to host:port (port 0: a free port); it starts serving on `serve_forever()`."""
    if not 0 <= int(port) <= 65535:
        raise GantoolsError(f"port must be between 0 and 65535, got {port}")
    try:
        return PaintServer(studio, (host, int(port)), start, on_error)
    except OSError as e:
        raise GantoolsError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


class PaintHandler(BaseHTTPRequestHandler):
    """Answers one request: the page, or a JSON call."""

    server: PaintServer
    server_version = "gantools-paint"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # library code does not print; failures go to the server's on_error

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        try:
            self._check_host()
            path = urlsplit(self.path).path
            routes = GET_ROUTES if method == "GET" else POST_ROUTES if method == "POST" else {}
            route = routes.get(path)
            if route is None:
                other = POST_ROUTES if method == "GET" else GET_ROUTES
                if path in other:
                    raise RequestError(405, f"{path} takes {'POST' if method == 'GET' else 'GET'}, not {method}")
                raise RequestError(404, f"nothing at {path[:80]}: the page is at /")
            route(self)
        except RequestError as e:
            self._json({"error": one_line(str(e))}, e.status)
        except KeyError:
            self._json({"error": "unknown session: reload the page (the server restarted, or dropped the session)"},
                       404)
        except GantoolsError as e:
            self._json({"error": one_line(str(e))}, 400)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away
        except Exception as e:  # noqa: BLE001 - a failing request must never stop the server
            if self.server.on_error is not None:
                self.server.on_error(traceback.format_exc())
            self._json({"error": one_line(f"internal error ({type(e).__name__}): {e}")}, 500)

    # -----------------------------------------------------------------------------------------
    # Reading requests

    def _check_host(self) -> None:
        if not self.server.loopback:
            return
        host = (self.headers.get("Host") or "").strip().lower()
        name = re.sub(r":\d+$", "", host).strip("[]")
        if name not in ("127.0.0.1", "localhost", "::1"):
            raise RequestError(400, f"unexpected Host {host[:80]!r}: open the page at {self.server.url}")

    def _length(self, limit: int) -> int:
        text = self.headers.get("Content-Length")
        if text is None or not text.strip().isdigit():
            raise RequestError(411, "the request needs a Content-Length")
        length = int(text)
        if length > limit:
            self.close_connection = True
            if length <= MAX_DRAIN_BYTES:  # read it away, so that the client sees the answer, not a reset
                for start in range(0, length, 1 << 20):
                    self.rfile.read(min(1 << 20, length - start))
            raise RequestError(413, f"the request body is {length:,} bytes: at most {limit:,} are accepted")
        return length

    def _json_body(self) -> dict[str, Any]:
        if (self.headers.get("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            raise RequestError(415, "send JSON (Content-Type: application/json)")
        size = self.server.studio.size
        length = self._length(MAX_JSON_BYTES + size * size)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(400, f"malformed JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "malformed request: send a JSON object")
        return body

    def _session(self) -> PaintSession:
        sid = self.headers.get(SESSION_HEADER)
        if not sid:
            raise RequestError(400, f"no session: send the {SESSION_HEADER} header (reload the page)")
        return self.server.sessions.get(sid)

    # -----------------------------------------------------------------------------------------
    # Writing responses

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode("utf-8"), "application/json; charset=utf-8")

    # -----------------------------------------------------------------------------------------
    # Routes

    def page(self) -> None:
        """GET /: the page (with its security policy as a header too)."""
        self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8",
                   {"Content-Security-Policy": SECURITY_POLICY, "X-Frame-Options": "DENY"})

    def favicon(self) -> None:
        """GET /favicon.ico: nothing (the page names an inline icon)."""
        self._send(204, b"", "image/x-icon")

    def studio(self) -> None:
        """GET /api/studio: model, layer, size and palette."""
        self._json(self.server.studio.describe())

    def progress(self) -> None:
        """GET /api/progress: the session's running upload."""
        self._json(self._session().job)

    def new_session(self) -> None:
        """POST /api/session: a new session (on the start image, or the sample of `seed`)."""
        body = self._json_body()
        session = self.server.sessions.create()
        if body.get("seed") is not None:
            session.new_sample(_seed(body))
        self._json(session.view())

    def sample(self) -> None:
        """POST /api/sample: the sample of `seed`, with a fresh history."""
        body = self._json_body()
        session = self._session()
        session.new_sample(_seed(body))
        self._json(session.view())

    def apply(self) -> None:
        """POST /api/apply: add or remove a concept inside the brushed mask."""
        body = self._json_body()
        session = self._session()
        studio = self.server.studio
        concept, action, strength = body.get("concept"), body.get("action"), body.get("strength", 1.0)
        if body.get("layer") not in (None, studio.layer):
            raise RequestError(400, f"unknown layer {str(body['layer'])[:40]!r}: this studio paints {studio.layer}")
        if not isinstance(concept, str) or concept not in studio.concepts:
            raise RequestError(400, f"unknown concept {str(concept)[:40]!r}: the palette has "
                                    f"{', '.join(studio.concepts)}")
        if action not in ACTIONS:
            raise RequestError(400, f"unknown action {str(action)[:40]!r}: use add or remove")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise RequestError(400, f"strength must be a number between 0 and 1, got {str(strength)[:40]}")
        region = parse_mask(body.get("mask"), studio.size)
        session.apply(region, concept, action, float(strength))
        self._json(session.view())

    def undo(self) -> None:
        """POST /api/undo: back one edit."""
        self._json_body()
        session = self._session()
        session.undo()
        self._json(session.view())

    def redo(self) -> None:
        """POST /api/redo: forward one edit."""
        self._json_body()
        session = self._session()
        session.redo()
        self._json(session.view())

    def upload(self) -> None:
        """POST /api/upload: an image file's bytes, inverted layer-wise; the history starts again."""
        session = self._session()
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not (kind.startswith("image/") or kind == "application/octet-stream"):
            raise RequestError(415, "upload an image file (Content-Type image/...)")
        studio = self.server.studio
        length = self._length(studio.settings.max_upload_bytes)
        if length == 0:
            raise RequestError(400, "the upload is empty")
        data = self.rfile.read(length)
        image = read_upload(data, studio.nc, studio.size, studio.settings.max_upload_pixels)
        name = parse_qs(urlsplit(self.path).query).get("name", ["image"])[0]
        stem = Path(name.replace("\\", "/")).stem[:60] or "image"
        session.load_image(image, stem)
        self._json(session.view())


def _seed(body: dict[str, Any]) -> int:
    seed = body.get("seed", 0)
    if isinstance(seed, str) and seed.strip().isdigit():
        seed = int(seed.strip())
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise RequestError(400, f"seed must be a whole number from 0 to {MAX_SEED}, got {str(seed)[:40]}")
    return seed


GET_ROUTES: dict[str, Callable[[PaintHandler], None]] = {
    "/": PaintHandler.page, "/index.html": PaintHandler.page, "/favicon.ico": PaintHandler.favicon,
    "/api/studio": PaintHandler.studio, "/api/progress": PaintHandler.progress,
}
POST_ROUTES: dict[str, Callable[[PaintHandler], None]] = {
    "/api/session": PaintHandler.new_session, "/api/sample": PaintHandler.sample, "/api/apply": PaintHandler.apply,
    "/api/undo": PaintHandler.undo, "/api/redo": PaintHandler.redo, "/api/upload": PaintHandler.upload,
}
