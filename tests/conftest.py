"""Shared test fixtures: offline environment, a network guard, tiny phantom datasets and runs.

Tiny data is generated here (torchgeo style), never downloaded; real data is used only where
`../shared/data` exists, otherwise those tests skip with the reason.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports Ultralytics: no network, settings and fonts in a throwaway folder, removed at exit.
os.environ["FRACTUREKIT_OFFLINE"] = "1"
os.environ["YOLO_OFFLINE"] = "1"
_SCRATCH = Path(tempfile.mkdtemp(prefix="fk-tests-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
for _var, _name in (("YOLO_CONFIG_DIR", "ultralytics"), ("MPLCONFIGDIR", "matplotlib")):
    if _var not in os.environ:
        (_SCRATCH / _name).mkdir()
        os.environ[_var] = str(_SCRATCH / _name)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """Path of a real dataset under ../shared/data, or skip the test saying it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is absent (see ../shared/data/README.md)")
    return path


class NetworkAttempt(AssertionError):
    """Raised when code under test tries to reach anything but this machine."""


@contextlib.contextmanager
def network_guard() -> Iterator[list[str]]:
    """Fail on any non-loopback connect or DNS lookup inside the block; yields the list of attempts made."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def is_local(host: object) -> bool:
        return str(host) in ("localhost", "::1", "") or str(host).startswith("127.")

    def guarded_connect(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if self.family == socket.AF_UNIX or is_local(host):
            return real_connect(self, address)
        attempts.append(f"connect {address}")
        raise NetworkAttempt(f"network connection attempted: {address}")

    def guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host is None or is_local(host):
            return real_getaddrinfo(host, *args, **kwargs)
        attempts.append(f"dns {host}")
        raise NetworkAttempt(f"DNS lookup attempted: {host}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
        yield attempts
    assert not attempts, f"network was attempted: {attempts}"


@pytest.fixture
def no_network() -> Iterator[list[str]]:
    """The network guard around one test."""
    with network_guard() as attempts:
        yield attempts


@pytest.fixture(scope="session")
def phantom_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw COCO phantom dataset: 60 films of 64 px, about half fractured, with metadata.csv."""
    from fracturekit.data.phantoms import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("raw") / "phantoms", n=60, seed=1, size=64, fmt="coco")


@pytest.fixture(scope="session")
def prepared_phantoms(phantom_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`phantom_coco` prepared by fracturekit (cls/, det/, manifest.csv), split 0.6/0.2/0.2."""
    from fracturekit.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "phantoms"
    prepare(phantom_coco, out, split=(0.6, 0.2, 0.2), seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_runs(prepared_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-epoch classify and detect runs on the prepared phantoms (imgsz 64, CPU): task -> run dir."""
    from fracturekit.train import train

    project = tmp_path_factory.mktemp("runs")
    return {
        task: train(
            task=task,
            data=prepared_phantoms,
            project=str(project),
            name="tiny",
            epochs=1,
            imgsz=64,
            batch=8,
            device="cpu",
            model="n",
        ).root
        for task in ("classify", "detect")
    }
