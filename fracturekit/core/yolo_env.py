"""Import Ultralytics safely: offline-proof, with all allowed CPU cores, settings kept out of $HOME.

Every module that needs Ultralytics calls `load_ultralytics()` instead of `import ultralytics`, so the
environment is set before Ultralytics reads it at import time:
- `YOLO_OFFLINE=1` skips its DNS probes, telemetry and PyPI update checks (hospital networks are
  air-gapped; a silent network would otherwise cost seconds to minutes per call).
- A local TTF (matplotlib's DejaVuSans) is placed where Ultralytics looks for `Arial.ttf`, so the font
  check that runs on every train/val never downloads.
- Ultralytics defaults to cores - 1 torch threads (one thread on a 2-core machine); we use all cores
  the user allows (`--threads`, default all), measured ~1.4-1.6x faster on 2 cores.
- `YOLO_AUTOINSTALL=false`: `check_requirements` never runs pip/uv (it would try on a missing extra).
- Ultralytics writes label caches (`*.cache`) into the dataset folder, outside the run folder the user
  named; they are not written (the labels are re-scanned instead: 1.0 s for FracAtlas' 2,857 detect train films).
- Its first import on a machine prints "Creating new Ultralytics Settings ... View Ultralytics Settings with
  'yolo settings'": that file is fracturekit's own (YOLO_CONFIG_DIR), which a user's `yolo settings` does not
  read, so the banner is dropped; the file is still written.
- The CUDA AMP check downloads yolo26n.pt; without that file cached and without network it is replaced
  by the same GPU blacklist and AMP stays on (what Ultralytics does offline, minus the download attempt).
Weight downloads are decided by `network_available()` in the caller, never attempted blindly.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from pathlib import Path
from types import ModuleType
from typing import Any

_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def default_config_dir() -> Path:
    """Where Ultralytics' settings.json and fonts live: a fracturekit cache, not the user's outputs."""
    base = os.environ.get("FRACTUREKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "fracturekit"
    )
    return Path(base) / "ultralytics"


def cpu_threads(requested: int | None = None) -> int:
    """Torch CPU threads to use: the request, else every core this process may run on."""
    if requested and requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _install_fonts(config_dir: Path) -> None:
    """Copy a font that ships with matplotlib to the names Ultralytics would download."""
    target_dir = config_dir / "Ultralytics"
    target_dir.mkdir(parents=True, exist_ok=True)
    missing = [n for n in _FONTS if not (target_dir / n).exists()]
    if not missing:
        return
    import matplotlib

    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in missing:
        shutil.copyfile(src, target_dir / name)


def load_ultralytics(threads: int | None = None, *, apply_threads: bool = True) -> ModuleType:
    """Set the offline-safe environment, import Ultralytics and apply the thread count; return it.

    `apply_threads=False` is for modules that call this at import time: they need the environment, and
    must not reset a count a caller such as `train(threads=1)` has just applied.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    config_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir())))
    n = cpu_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    _install_fonts(config_dir)

    import torch

    banner = _NewSettingsBanner()
    logging.getLogger("ultralytics").addFilter(banner)  # a logger's filters outlive Ultralytics' set_logging
    try:
        import ultralytics
        from ultralytics.utils import SETTINGS, torch_utils
    finally:
        logging.getLogger("ultralytics").removeFilter(banner)

    # settings.json: no telemetry (sync), no hub; `update` writes only when a value changes.
    # Only keys this Ultralytics version has: `update` raises KeyError on unknown ones (8.4 has no "hub").
    off = {k: False for k in ("sync", "hub") if SETTINGS.get(k)}
    if off:
        SETTINGS.update(off)
    if apply_threads:
        torch_utils.NUM_THREADS = n  # read by select_device() -> torch.set_num_threads()
        torch.set_num_threads(n)
    _guard_amp_check()
    _skip_label_caches()
    return ultralytics


class _NewSettingsBanner(logging.Filter):
    """Drops the one message Ultralytics logs when it creates its settings file (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Creating new Ultralytics Settings")


def _no_cache_file(prefix: str, path: Path, x: dict[str, Any], version: str) -> None:
    """Stand-in for Ultralytics' `save_dataset_cache_file`: keep the cache in memory, write no file."""
    x["version"] = version  # the caller reads it back, as after a real save


def _skip_label_caches() -> None:
    """Make the dataset classes call `_no_cache_file` (they import save_dataset_cache_file by name)."""
    from ultralytics.data import dataset

    dataset.save_dataset_cache_file = _no_cache_file


# GPUs on which Ultralytics' check_amp disables AMP (copied from ultralytics.utils.checks.check_amp, which
# cannot be asked for this part alone: it needs a downloaded model first).
_AMP_BAD_GPUS = re.compile(
    r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)", re.IGNORECASE
)


def offline_safe_check_amp(model: Any) -> bool:
    """Ultralytics' AMP check when its model is cached or downloadable, else the GPU blacklist alone."""
    import torch
    from ultralytics.utils import LOGGER, WEIGHTS_DIR, checks

    device = next(model.parameters()).device
    if device.type != "cuda" or (WEIGHTS_DIR / "yolo26n.pt").is_file() or network_available():
        return checks.check_amp(model)
    gpu = torch.cuda.get_device_name(device)
    if _AMP_BAD_GPUS.search(gpu):
        LOGGER.warning(f"AMP: disabled on {gpu} (known NaN/zero-mAP issues with mixed precision).")
        return False
    LOGGER.warning("AMP: check skipped offline (yolo26n.pt not cached); AMP stays on. Set amp: false if losses go NaN.")
    return True


def _guard_amp_check() -> None:
    """Make the trainer call `offline_safe_check_amp` (it imports check_amp by name)."""
    from ultralytics.engine import trainer

    trainer.check_amp = offline_safe_check_amp


def network_available(host: str = "github.com", port: int = 443, timeout: float = 2.0) -> bool:
    """True when the weights host answers a TCP connect within `timeout` seconds.

    `FRACTUREKIT_OFFLINE=1` forces False without touching the network (tests, air-gapped sites).
    """
    if os.environ.get("FRACTUREKIT_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
