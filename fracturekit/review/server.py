"""The review page's web server: FastAPI routes over `ReviewData`, served by uvicorn on a socket bound first.

Only the films of PATH can be read through it (any other path: 403); off the loopback address every request
needs the token (query `token=`, header `X-Token`, or the cookie the first tokened request sets).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from importlib import resources
from typing import Any

from fracturekit.core.errors import UserError
from fracturekit.review.data import ReviewData
from fracturekit.review.decisions import DECISIONS, DecisionLog

COOKIE = "fracturekit_review_token"
STATIC = ("index.html", "review.js", "review.css")  # everything the page loads: no CDN, no build step
_BROWSER_IMAGES = {".jpg", ".jpeg", ".png"}  # prepare writes films as these; others (DICOM, 16-bit TIFF) are decoded


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or a UserError saying why not (a port in use, an unknown address)."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror:
        raise UserError(f"--host {host}: not an address of this machine; use 127.0.0.1 or an address it has.") from None
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.bind(info[4])
        sock.listen(64)
    except OSError as exc:
        sock.close()
        if exc.errno == 98:  # EADDRINUSE
            raise UserError(f"--port {port}: {host}:{port} is in use; pick another port with --port.") from None
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}).") from None
    return sock


def create_app(data: ReviewData, log: DecisionLog, reviewer: str, token: str | None = None) -> Any:
    """The FastAPI app of one review session."""
    from fastapi import Body, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    static = resources.files("fracturekit.review") / "static"
    by_source = {f.source: k for k, f in data.films.items()}

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        if token is None:
            return await call_next(request)
        given = request.query_params.get("token") or request.headers.get("x-token") or request.cookies.get(COOKIE)
        if not secrets.compare_digest((given or "").encode(), token.encode()):
            return PlainTextResponse("forbidden: this review server needs its token (?token=...)", status_code=403)
        response = await call_next(request)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/")
    def index() -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html")

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(404)
        kind = {"js": "text/javascript", "css": "text/css", "html": "text/html"}[name.rsplit(".", 1)[1]]
        return Response((static / name).read_bytes(), media_type=kind)

    @app.get("/api/data")
    def review_data() -> JSONResponse:
        decisions: dict[str, list[dict[str, str]]] = {}
        for row in log.rows():
            key = by_source.get(row["path"])
            if key is not None:
                decisions.setdefault(key, []).append(row)
        body = {**data.to_json(), "reviewer": reviewer, "decisions": decisions, "decisions_file": str(log.path)}
        return JSONResponse(body)

    @app.get("/api/image")
    def image(path: str) -> Response:
        key = data.key(path)
        if key is None:
            raise HTTPException(403, "not a film of the reviewed folder")
        file = data.films[key].file
        if file.suffix.lower() in _BROWSER_IMAGES:
            return FileResponse(file)
        import cv2

        from fracturekit.data.imageio import read_image

        ok, png = cv2.imencode(".png", read_image(file).pixels)
        return Response(png.tobytes(), media_type="image/png")

    @app.post("/api/decision")
    def decide(body: dict[str, str] = Body(...)) -> JSONResponse:
        key = data.key(body.get("path", ""))
        if key is None:
            raise HTTPException(403, "not a film of the reviewed folder")
        if body.get("decision") not in DECISIONS:
            raise HTTPException(400, f"decision must be one of {', '.join(DECISIONS)}")
        row = log.append(data.films[key].source, body["decision"], reviewer, body.get("note", "")[:2000])
        return JSONResponse({"film": key, **row})

    return app


def serve(app: Any, sock: socket.socket) -> None:
    """Serve `app` on the already-bound `sock` until interrupted (Ctrl-C)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
