"""Where cv's fold jobs run: locally (in turn, or in worker processes, one per slot) or as Ray tasks.

Both take the same jobs and call `on_done` with each fold's record as it finishes.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from fracturekit.core.errors import UserError
from fracturekit.cv.fold_job import FoldJob, run_fold

EXECUTORS = ("local", "ray")


def run_local(
    jobs: list[FoldJob], parallel: int, on_done: Callable[[dict[str, Any]], None], gpus: Sequence[str] = ()
) -> None:
    """Run the jobs in this process one after another, or in `parallel` worker processes (one per slot).

    gpus: CUDA device ids; slot s then trains on gpus[s % len(gpus)].
    """
    if parallel <= 1:
        for job in jobs:
            on_done(run_fold(job))
        return
    queue = deque(jobs)
    lock = threading.Lock()
    failed: list[BaseException] = []

    def slot(s: int) -> None:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            while True:
                with lock:
                    if failed or not queue:
                        return
                    job = queue.popleft()
                job = replace(job, slot=s, device=gpus[s % len(gpus)] if gpus else job.device)
                try:
                    result = pool.submit(run_fold, job).result()
                except BaseException as exc:
                    with lock:
                        failed.append(exc)
                    return
                with lock:
                    on_done(result)

    with ThreadPoolExecutor(parallel) as threads:
        list(threads.map(slot, range(parallel)))
    if failed:
        raise failed[0]


def check_ray_address(timeout: float) -> None:
    """Refuse, within `timeout` seconds, a RAY_ADDRESS where nothing answers, or a local Ray that cannot start.

    `ray.init` retries such an address for minutes, printing `Failed to connect to GCS` every few seconds and
    ignoring SIGTERM meanwhile; one TCP connection to the address (host:port or ray://host:port) tells first.
    A local Ray instance talks over 127.0.0.1: with the loopback interface down (a network namespace, a
    container without `lo`) the same retries follow, so a connection to a socket of our own tells first.
    """
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address == "auto":
        return
    if not address or address == "local":
        try:
            with socket.create_server(("127.0.0.1", 0)) as server:
                socket.create_connection(server.getsockname()[:2], timeout=timeout).close()
        except OSError as exc:
            raise UserError(
                f"--executor ray: Ray cannot start here, this machine's loopback network 127.0.0.1 does not answer "
                f"({exc.strerror or type(exc).__name__}); bring it up (`ip link set lo up`) or use --executor local."
            ) from None
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        why = "not host:port" if isinstance(exc, ValueError) else (exc.strerror or type(exc).__name__)
        raise UserError(
            f"RAY_ADDRESS {address}: no Ray cluster answers there within {timeout:g} s ({why}); start it "
            "(`ray start --head`), fix the address, or unset RAY_ADDRESS to run Ray on this machine."
        ) from None


def run_ray(
    jobs: list[FoldJob], parallel: int, on_done: Callable[[dict[str, Any]], None], gpus: Sequence[str] = ()
) -> None:
    """Each job a Ray task (one GPU each when `gpus` is not empty), at most `parallel` at a time.

    Connects to the cluster in RAY_ADDRESS (`cross_validate` checks first that it answers), else starts a
    local Ray instance. Data and project paths must be on storage that every Ray node sees under the same path.
    A fold whose Ray worker dies (killed, out of memory) stops the cv with one sentence instead of Ray's three
    silent retries; SIGTERM stops it like Ctrl-C. Either way `ray.shutdown()` stops the Ray processes started
    here, and the folds finished so far are kept: the same command again resumes.
    """
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'fracturekit[ray]'.") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report
    env = {k: v for k, v in os.environ.items() if k.startswith(("YOLO_", "FRACTUREKIT_", "MPLCONFIGDIR"))}
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    finished = 0
    where = Path(jobs[0].run).parent if jobs else Path()
    stop = threading.Event()
    on_term = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():  # Ray's own handler aborts with a stack dump
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # raised inside ray.wait, an error would be garbled
    try:
        _check_ray_fits(ray, max((j.threads or 1) for j in jobs), bool(gpus))
        remote = ray.remote(run_fold)
        pending: dict[Any, None] = {}
        queue = deque(jobs)
        slots = deque(range(parallel))
        slot_of: dict[Any, int] = {}
        fold_of: dict[Any, int] = {}
        while queue or pending:
            while queue and slots:
                job = replace(queue.popleft(), slot=slots.popleft())
                if gpus:  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU: inside the task it is device 0
                    job = replace(job, device="0")
                ref = remote.options(num_cpus=job.threads or 1, num_gpus=1 if gpus else 0, max_retries=0).remote(job)
                pending[ref] = None
                slot_of[ref] = job.slot
                fold_of[ref] = job.fold
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # a SIGTERM is seen within a second
            if stop.is_set():
                raise UserError(f"cv stopped by SIGTERM; {_kept(finished, where)}")
            for ref in done:
                del pending[ref]
                slots.append(slot_of.pop(ref))
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, UserError):  # one sentence, not Ray's remote traceback
                        raise exc.cause from None
                    raise
                except ray.exceptions.RayError as exc:  # the worker process or its node died, not the fold's code
                    why = f"fold {fold_of[ref]}: its Ray worker died ({type(exc).__name__})"
                    raise UserError(f"{why}; {_kept(finished, where)}") from None
                on_done(result)
                finished += 1
    finally:
        signal.signal(signal.SIGTERM, on_term)
        if started:
            ray.shutdown()


def _kept(finished: int, cv_dir: Path) -> str:
    folds = "fold" if finished == 1 else "folds"
    return f"{finished} finished {folds} kept in {cv_dir}: run the same command again to continue."


def _check_ray_fits(ray: Any, cpus: int, gpu: bool) -> None:
    """Refuse a fold that no Ray node can hold (Ray would leave it pending forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((int(r.get("CPU", 0)) for r in nodes), default=0)
    if cpus > most_cpus:
        raise UserError(
            f"each fold asks Ray for {cpus} CPUs but its largest node has {most_cpus}; pass --threads {most_cpus}."
        )
    if gpu and not any(r.get("GPU", 0) >= 1 for r in nodes):
        raise UserError("each fold asks Ray for a GPU but no Ray node has one; pass --device cpu.")
