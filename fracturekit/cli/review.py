"""`fracturekit review`: a thin layer over `fracturekit.review.review`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracturekit.cli.app import app, out_console, user_errors


@app.command()
@user_errors
def review(
    path: Annotated[Path, typer.Argument(help="A prepared dataset, an evaluate folder or a predict folder.")],
    port: Annotated[int, typer.Option("--port", help="TCP port to serve on (0: any free port).")] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; other than 127.0.0.1 it needs --token.")
    ] = "127.0.0.1",
    token: Annotated[str | None, typer.Option("--token", help="Secret every request must carry.")] = None,
    reviewer: Annotated[
        str | None, typer.Option("--reviewer", help="Name written with each decision (default: the login name).")
    ] = None,
) -> None:
    """Page through label issues, duplicate clusters or cases in a browser; keys 1/0/x/b/n record decisions."""
    from fracturekit.review import review as start

    session = start(path, host=host, port=port, token=token, reviewer=reviewer)
    lists = ", ".join(f"{n} {name}" for name, n in session.lists.items())
    out_console.print(f"review {session.n_films} films ({lists}) at {session.url}", highlight=False, soft_wrap=True)
    out_console.print(f"decisions go to {session.decisions}; Ctrl-C stops the server", highlight=False, soft_wrap=True)
    session.serve()
