"""How the library reports progress: it calls a `Progress` with (what is being done, items done, items in all);
the CLI draws the bars (`cli.app.progress_bars`). The library itself never draws or prints."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
