"""The inspector's web server: a Flask app over an :class:`InspectorSession`, and a way to run it.

:func:`create_app` builds the app; :class:`InspectorServer` runs it on a
werkzeug server bound to 127.0.0.1 (a free port unless one is given), in the
foreground (:meth:`~InspectorServer.serve_forever`, stops on Ctrl-C) or in a
thread (:meth:`~InspectorServer.start` / :meth:`~InspectorServer.stop`).

Safety: images are addressed by their number only and the page's three
files are read into memory when the app is built, so no part of a request
ever reaches the file system; every parameter is parsed and range-checked
(bad input gets a 4xx JSON answer); query strings and bodies are small and
bounded; when bound to a loopback address only loopback ``Host`` headers
are served (a DNS-rebinding page cannot read the images) and POSTs must be
JSON (a cross-site form cannot change settings).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import warnings
from importlib import resources
from typing import Any, Optional, Sequence, Union

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from ..errors import DinokitError
from ..settings import CorrespondenceSettings, InspectorSettings
from .render import colorbar_png
from .session import InspectorSession, NotReady

__all__ = ["create_app", "InspectorServer", "serve_inspector", "is_loopback", "MAX_BODY_BYTES", "MAX_QUERY_BYTES"]

MAX_BODY_BYTES = 4096
MAX_QUERY_BYTES = 1024
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BadParameter(DinokitError):
    """A request parameter is missing, malformed or out of range (answered with 400)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _load_static() -> dict[str, bytes]:
    root = resources.files(__package__) / "static"
    return {name: (root / name).read_bytes() for name in ("index.html", *STATIC_FILES)}


class _Args:
    """Typed access to a request's query string; unknown names and bad values raise :class:`BadParameter`."""

    def __init__(self, allowed: Sequence[str]) -> None:
        extra = sorted(set(request.args) - set(allowed))
        if extra:
            takes = ", ".join(allowed) or "none"
            raise BadParameter(f"unknown parameter(s) {', '.join(extra)}; this endpoint takes {takes}")
        for key in request.args:
            if len(request.args.getlist(key)) > 1:
                raise BadParameter(f"parameter {key} given more than once")

    def _raw(self, name: str, default: Any) -> Any:
        value = request.args.get(name)
        if value is None:
            if default is _REQUIRED:
                raise BadParameter(f"missing parameter {name}")
            return default
        return value

    def int(self, name: str, default: Any = None, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return raw
        try:
            value = int(raw)
        except ValueError:
            raise BadParameter(f"{name} must be an integer, got {raw[:20]!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise BadParameter(f"{name} must be between {lo} and {hi}, got {value}")
        return value

    def float(self, name: str, default: Any = None, lo: Optional[float] = None, hi: Optional[float] = None) -> float:
        raw = self._raw(name, default)
        if not isinstance(raw, str):
            return raw
        try:
            value = float(raw)
        except ValueError:
            raise BadParameter(f"{name} must be a number, got {raw[:20]!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise BadParameter(f"{name} must be a finite number, got {raw[:20]!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise BadParameter(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
        return value

    def choice(self, name: str, choices: Sequence[str], default: Any = None) -> str:
        raw = self._raw(name, default)
        if raw not in choices:
            raise BadParameter(f"{name} must be one of {', '.join(choices)}, got {str(raw)[:20]!r}")
        return raw


_REQUIRED = object()


def create_app(session: InspectorSession, *, allowed_hosts: Union[Sequence[str], str, None] = None) -> Flask:
    """The inspector's Flask app over ``session``.

    ``allowed_hosts`` are the host names (without port) accepted in the
    ``Host`` header: default the loopback names; ``"*"`` accepts any (for a
    server deliberately bound to another address).
    """
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["dinokit_inspector"] = session
    static = _load_static()
    hosts = None if allowed_hosts == "*" else {h.lower().strip("[]") for h in (allowed_hosts or LOOPBACK_NAMES)}

    @app.before_request
    def _guard() -> Optional[Response]:
        if len(request.query_string) > MAX_QUERY_BYTES:
            return _error(414, f"query string longer than {MAX_QUERY_BYTES} bytes")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _error(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        if hosts is not None:
            name = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
            if name.lower().strip("[]") not in hosts:
                return _error(403, f"host {request.host[:64]!r} is not served (open the page through 127.0.0.1)")
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        if "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(NotReady)
    def _not_ready(exc: NotReady) -> Response:
        resp = _error(503, str(exc))
        resp.headers["Retry-After"] = "1"
        return resp

    @app.errorhandler(DinokitError)
    def _bad_input(exc: DinokitError) -> Response:
        return _error(400, str(exc))

    _page_routes(app, static)
    _api_routes(app, session)
    _analysis_routes(app, session)
    return app


def _page_routes(app: Flask, static: dict) -> None:
    """The page itself, its static files and the favicon."""
    @app.get("/")
    def index() -> Response:
        return Response(static["index.html"], mimetype="text/html", content_type="text/html; charset=utf-8")

    @app.get("/static/<name>")
    def static_file(name: str) -> Response:
        if name not in STATIC_FILES:  # a fixed set held in memory: the name never reaches the file system
            return _error(404, "no such file")
        return Response(static[name], content_type=STATIC_FILES[name])

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)


def _api_routes(app: Flask, session: InspectorSession) -> None:
    """The JSON API over ``session``: what it holds, its images and its descriptor settings."""
    info = session.info()
    n_images = len(session.images)

    @app.get("/api/info")
    def api_info() -> Response:
        _Args([])
        return jsonify(info)

    @app.get("/api/image/<int:i>")
    def api_image(i: int) -> Response:
        _Args([])
        if not 0 <= i < n_images:
            return _error(404, f"image {i} does not exist ({n_images} image(s) are open)")
        resp = Response(session.images[i].display, content_type="image/jpeg")
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp

    @app.get("/api/colorbar")
    def api_colorbar() -> Response:
        a = _Args(["cmap"])
        cmap = a.choice("cmap", info["choices"]["colormaps"], "jet")
        resp = Response(colorbar_png(cmap), content_type="image/png")
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp

    @app.get("/api/status")
    def api_status() -> Response:
        _Args([])
        return jsonify(session.status())

    @app.post("/api/settings")
    def api_settings() -> Response:
        if not request.is_json:
            return _error(415, "send the settings as JSON (Content-Type: application/json)")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadParameter("the body must be a JSON object with layer, facet, bin and stride")
        extra = sorted(set(body) - {"layer", "facet", "bin", "stride"})
        if extra:
            raise BadParameter(f"unknown setting(s) {', '.join(map(str, extra))[:80]}")
        cur = session.status()["settings"] or session.initial.to_dict()
        merged = {k: body.get(k, cur[k]) for k in ("layer", "facet", "bin", "stride")}
        settings = session.validate(**merged)
        status = session.request(settings)
        return jsonify(status), (200 if status["state"] == "ready" else 202)


def _analysis_routes(app: Flask, session: InspectorSession) -> None:
    """Queries over the current descriptors: similarity, saliency, PCA, correspondences."""
    info = session.info()
    n_images = len(session.images)
    paper = CorrespondenceSettings()

    @app.get("/api/query")
    def api_query() -> Response:
        a = _Args(["image", "x", "y", "cmap", "scale", "scores"])
        image = a.int("image", _REQUIRED, 0, n_images - 1)
        w, h = info["images"][image]["width"], info["images"][image]["height"]
        x = a.float("x", _REQUIRED, 0.0, float(w))
        y = a.float("y", _REQUIRED, 0.0, float(h))
        cmap = a.choice("cmap", info["choices"]["colormaps"], "jet")
        scale = a.choice("scale", info["choices"]["scales"], "image")
        scores = a.choice("scores", ["0", "1"], "0") == "1"
        return jsonify(session.query(image, x, y, cmap=cmap, scale=scale, scores=scores))

    @app.get("/api/saliency")
    def api_saliency() -> Response:
        a = _Args(["cmap"])
        return jsonify(session.saliency(cmap=a.choice("cmap", info["choices"]["colormaps"], "jet")))

    @app.get("/api/pca")
    def api_pca() -> Response:
        a = _Args(["components", "show"])
        k = a.int("components", 4, 1, 16)
        shows = (["rgb"] if k >= 3 else []) + [str(i) for i in range(1, k + 1)]
        show = a.choice("show", shows, shows[0])  # 1 or 2 components: the first component, not an RGB
        return jsonify(session.pca(components=k, show=show))

    @app.get("/api/correspondences")
    def api_correspondences() -> Response:
        if n_images < 2:
            raise BadParameter("correspondences need at least two images")
        a = _Args(["a", "b", "num_pairs", "thresh"])
        ia = a.int("a", 0, 0, n_images - 1)
        ib = a.int("b", 1, 0, n_images - 1)
        k = a.int("num_pairs", paper.num_pairs, 1, 100)
        t = a.float("thresh", paper.thresh, 0.0, 0.99)
        return jsonify(session.correspondences(ia, ib, num_pairs=k, thresh=t))


def _error(code: int, message: str) -> Response:
    resp = jsonify({"error": message, "status": code})
    resp.status_code = code
    return resp


class _Handler(WSGIRequestHandler):
    """Registers its connection with the server (so a stop can close it) and logs only when asked."""

    server: "_Server"

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if self.server.log_requests:  # off by default: hovering sends many requests
            super().log_request(code, size)


class _Server(ThreadedWSGIServer):
    """A threaded werkzeug server whose request threads are joined when it closes.

    Werkzeug's request threads are daemons; one still running when the
    interpreter exits (a kept-alive browser connection, a click being
    answered) can abort the process while it holds native state. Here they
    are ordinary threads, and closing first shuts down every open
    connection, so the threads end at once and are joined.
    """

    daemon_threads = False
    block_on_close = True

    def __init__(self, host: str, port: int, app: Flask, log_requests: bool) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.log_requests = log_requests
        super().__init__(host, port, app, handler=_Handler)

    def server_close(self) -> None:
        with self.connections_lock:
            open_connections = list(self.connections)
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        super().server_close()  # closes the listening socket, then joins the request threads


class InspectorServer:
    """Serve an :class:`InspectorSession` over HTTP.

    Args:
        session: the session to serve.
        host: address to bind; a loopback address (default ``127.0.0.1``).
            Any other address exposes the images to the network and needs
            ``allow_remote=True`` (a warning is issued).
        port: TCP port; ``0`` picks a free one (see :attr:`port`).
        log_requests: log every request to stderr.
    """

    def __init__(
        self,
        session: InspectorSession,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        log_requests: bool = False,
    ) -> None:
        if not 0 <= port <= 65535:
            raise DinokitError(f"port must be between 0 and 65535, got {port}")
        remote = not is_loopback(host)
        if remote and not allow_remote:
            raise DinokitError(f"{host} is not a loopback address; serving to the network needs allow_remote=True")
        if remote:
            warnings.warn(f"the inspector listens on {host}: anyone who can reach this address sees the images",
                          RuntimeWarning, stacklevel=2)
        self.session = session
        self.app = create_app(session, allowed_hosts="*" if remote else (*LOOPBACK_NAMES, host))
        try:
            self._server = _Server(host, port, self.app, log_requests)
        except OSError as exc:
            raise DinokitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._thread: Optional[threading.Thread] = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        host = self.host
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C (or :meth:`stop` from another thread), then close every connection."""
        try:
            self._server.serve_forever()  # werkzeug's: returns on Ctrl-C, closing the server
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def start(self) -> "InspectorServer":
        """Serve in a daemon thread; returns at once."""
        if self._thread is not None:
            raise DinokitError("the server is already running")
        self._thread = threading.Thread(target=self._server.serve_forever, name="dinokit-inspect-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and wait for the serving thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "InspectorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_inspector(
    images: Sequence[Any],
    model: Any = None,
    weights: Any = None,
    settings: Optional[InspectorSettings] = None,
    *,
    extractor: Any = None,
    device: Any = None,
    dtype: Any = None,
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = False,
    log_requests: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> int:
    """Compute descriptors of ``images`` once and serve the inspector until Ctrl-C (the ``dinokit inspect`` command).

    ``settings`` (:class:`~dinokit.settings.InspectorSettings`, plus
    ``overrides``) give the initial descriptors; ``extractor`` (an
    :class:`~dinokit.features.Extractor`) replaces ``model``/``weights`` and
    is used at the settings' stride and load size. The URL is printed on
    stdout once the server listens; a ``host`` that is not a loopback address
    is allowed with a warning on stderr. Returns 0 after a clean stop.
    """
    from ..features.extractor import extractor_for_settings

    st = InspectorSettings.resolve(settings, **overrides)
    extractor, st = extractor_for_settings(extractor if extractor is not None else model, st,
                                           st.explicit(settings, overrides), weights, device=device, dtype=dtype,
                                           progress=progress)
    session = InspectorSession(images, extractor, st)
    try:
        session.compute(progress=progress)
        remote = not is_loopback(host)
        if remote:
            print(f"dinokit: warning: listening on {host}: anyone who can reach this address can see the images "
                  "and use this machine's processor", file=sys.stderr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # said on stderr just above
            server = InspectorServer(session, host, port, allow_remote=remote, log_requests=log_requests)
        if progress:
            print(f"dinokit inspect: {len(images)} image(s) at the URL below (Ctrl-C to stop)", file=sys.stderr)
        print(server.url, flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        server.serve_forever()
    finally:
        # the background computation stops after its current image; wait for it so that no thread is
        # still in native code when the interpreter exits
        if progress and session.status()["state"] == "computing":
            print("dinokit inspect: stopping after the image being computed...", file=sys.stderr, flush=True)
        session.close()
    if progress:
        print("dinokit inspect: stopped", file=sys.stderr)
    return 0
