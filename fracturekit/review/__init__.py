"""`fracturekit review PATH`: a local web page to look at films and record a decision per film.

PATH is a prepared dataset (its label issues and duplicate clusters), an `evaluate` folder (its cases) or a
`predict` folder (its predictions). Decisions (keys 1, 0, x, b, n) are appended at once to
`PATH/review/decisions.csv`, which `prepare SOURCE --corrections` applies. Modules: `data` (what each kind of
PATH shows), `decisions` (decisions.csv), `server` (FastAPI + uvicorn) and `static/` (the page: HTML, JS, CSS).
"""

from __future__ import annotations

import getpass
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fracturekit.core.errors import UserError
from fracturekit.core.paths import user_path


@dataclass
class ReviewSession:
    """A review server ready to run: the app, its bound socket, the address to open, where decisions go."""

    app: Any
    sock: socket.socket
    url: str
    decisions: Path
    n_films: int
    lists: dict[str, int]

    def serve(self) -> None:
        """Serve until interrupted."""
        from fracturekit.review.server import serve

        serve(self.app, self.sock)


def review(
    path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    reviewer: str | None = None,
) -> ReviewSession:
    """Load PATH and bind host:port; `.serve()` on the result runs the page.

    A host other than the loopback address exposes the films to the network: it needs a `token`, which every
    request must then carry (the URL returned holds it).
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("fracturekit review needs FastAPI and uvicorn: pip install 'fracturekit[review]'.") from None
    from fracturekit.review.data import load
    from fracturekit.review.decisions import DecisionLog
    from fracturekit.review.server import create_app, is_loopback, open_socket

    path = user_path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder; pass a prepared dataset, an evaluate folder or a predict folder.")
    if not is_loopback(host) and not token:
        example = secrets.token_urlsafe(16)
        raise UserError(f"--host {host} serves the films beyond this machine: add a --token, e.g. --token {example}.")
    data = load(path)
    log = DecisionLog(path / "review" / "decisions.csv")
    if log.path.is_file():
        from fracturekit.review.decisions import read

        read(log.path)  # a damaged log is named now, not on the first reload
    app = create_app(data, log, reviewer or getpass.getuser(), token)
    sock = open_socket(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")
    lists = {name: len(v["rows"]) for name, v in data.lists.items()}
    return ReviewSession(app, sock, url, log.path, len(data.films), lists)
