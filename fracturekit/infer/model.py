"""A model loaded for inference, one way for every command: a run folder or weights file -> `Model`.

Backends: PyTorch (`.pt`), ONNX (`.onnx`, an onnxruntime CPU session with all allowed cores as
intra-op threads; `.int8.onnx` is the static int8 export) and OpenVINO (an Ultralytics
`*_openvino_model/` folder; bf16 on CPUs with BF16, int8 when exported with NNCF). Our own sessions
are used rather than AutoBackend so that a dynamic-shape export gets rectangular batches and the
thread count is ours; outputs then go through the same NMS, so the backends agree to their precision.
Given a run folder, `load_model` uses the fastest export whose accuracy check passed (`choose_weights`).
The device is resolved once, by `options.inference_device`.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fracturekit.errors import UserError
from fracturekit.layout import RunDir
from fracturekit.options import check_task, inference_device
from fracturekit.paths import user_path
from fracturekit.yolo_env import cpu_threads, load_ultralytics


@dataclass
class Model:
    """A loaded detector or classifier (PyTorch or ONNX) with what inference needs to know about it."""

    task: str  # "detect" | "classify"
    backend: str  # "torch" | "onnx" | "openvino"
    weights: Path
    names: dict[int, str]
    imgsz: int
    stride: int
    fixed_shape: tuple[int, int] | None  # (h, w) of a static-shape ONNX input
    fixed_batch: int | None  # the batch size a static-shape ONNX input requires
    run: RunDir | None
    net: Any  # torch nn.Module, onnxruntime.InferenceSession or a list of OpenVINO InferRequests (one per stream)
    metrics: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # torch device of a PyTorch model; ONNX and OpenVINO always run on CPU
    precision: str = "float32"  # what the arithmetic runs in: float32, int8, bf16 (OpenVINO's choice), fp16
    chosen: str = ""  # why these weights were used when a run folder was given (choose_weights)

    @property
    def label(self) -> str:
        """E.g. 'OpenVINO int8 (best_int8_openvino_model)': which model and path predict used."""
        kind = {"torch": "PyTorch", "onnx": "ONNX Runtime", "openvino": "OpenVINO"}[self.backend]
        return f"{kind} {self.precision} ({self.weights.name})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run a float32 (B, 3, H, W) batch in 0..1; returns the raw head output as numpy."""
        if self.backend == "torch":
            import torch

            with torch.inference_mode():
                t = torch.from_numpy(x).to(self.device)
                y = self.net(t.half() if self.precision == "fp16" else t)
            return (y[0] if isinstance(y, (list, tuple)) else y).float().cpu().numpy()
        if self.backend == "openvino":
            return self._run_openvino(x)
        fb = self.fixed_batch
        if fb is None or fb == len(x):
            return self._run(x)
        # static batch: run full chunks, the last one zero-padded
        return np.concatenate([self._run(_padded(c, fb))[: len(c)] for c in _chunks(x, fb)])

    @property
    def parallel(self) -> int:
        """Films one forward call runs at once without slowing each: one (static) batch per OpenVINO stream,
        else 1."""
        return len(self.net) * (self.fixed_batch or 1) if self.backend == "openvino" else 1

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.net.run(None, {self.net.get_inputs()[0].name: x})[0]

    def _run_openvino(self, x: np.ndarray) -> np.ndarray:
        """Each film (each static batch) on its own infer request, one request per stream running at once.

        Why not one request over the batch: with OpenVINO's THROUGHPUT hint two single-thread streams ran
        an int8 YOLOv8n-det at 640x512 at 63.4 img/s on 2 cores, one two-thread LATENCY request at 44.2
        (bench/predict_bench.py's model, same run). Films are independent, so the numbers do not depend on
        how they are batched. Outputs are copied: a request reuses its buffer.
        """
        fb = self.fixed_batch or 1
        chunks = list(_chunks(x, fb))
        outs: list[np.ndarray] = []
        for k in range(0, len(chunks), len(self.net)):
            running = list(zip(self.net, chunks[k : k + len(self.net)], strict=False))  # the last group may be short
            for req, chunk in running:
                req.start_async({0: _padded(chunk, fb)})
            for req, chunk in running:
                req.wait()
                outs.append(req.get_output_tensor(0).data[: len(chunk)].copy())
        return np.concatenate(outs)


def _chunks(x: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """`x` in consecutive slices of `size` along the batch axis (the last one may be shorter)."""
    return (x[i : i + size] for i in range(0, len(x), size))


def _padded(chunk: np.ndarray, size: int) -> np.ndarray:
    """`chunk` zero-padded along the batch axis to the `size` a static-shape model requires."""
    if len(chunk) == size:
        return chunk
    return np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])


def resolve_weights(path: str | Path) -> tuple[Path, RunDir | None]:
    """A weights file and the run it belongs to (None for a loose file); a run folder means its best.pt."""
    p = user_path(path)
    if _is_openvino(p):
        return p, (RunDir(p.parent.parent) if p.parent.name == "weights" else None)
    if p.is_dir():
        run = RunDir.find(p)
        if not run.best.is_file():
            raise UserError(f"{run.best}: missing; the run has no best weights, train it to completion first.")
        return run.best, run
    if not p.is_file():
        raise UserError(f"{p}: no such weights file or run folder; pass a `fracturekit train` run or a .pt/.onnx.")
    run = RunDir(p.parent.parent) if p.parent.name == "weights" else None
    return p, run


def _is_openvino(p: Path) -> bool:
    """An Ultralytics OpenVINO export: a `*_openvino_model` folder holding the .xml and metadata.yaml."""
    return p.is_dir() and (p / "metadata.yaml").is_file() and any(p.glob("*.xml"))


# Exports of a run's best.pt, as `fracturekit export` names them: backend name -> path under weights/.
EXPORTS = {
    "openvino-int8": "best_int8_openvino_model",
    "openvino": "best_openvino_model",
    "onnx-int8": "best.int8.onnx",
    "onnx": "best.onnx",
}
BACKENDS = ("auto", "torch", *EXPORTS)


def check_path(export_path: Path) -> Path:
    """The sidecar JSON holding an export's accuracy (and speed) check against float32."""
    return export_path.parent / f"{export_path.name}.check.json"


def _fallback_rank(name: str) -> int:
    """Order for exports measured on another kind of CPU (lower = preferred).

    From bench/ figures: on a VNNI/BF16 CPU OpenVINO int8 ran 3x and bf16 2x onnxruntime float32 and
    onnxruntime int8 1.2x; on AVX2 alone int8 ran 0.84x float32 (bench/int8_probe.py), so float32 first.
    """
    from fracturekit.device import cpu_info

    cpu = cpu_info()
    order = list(EXPORTS) if cpu.vnni and cpu.bf16 else ["onnx", "openvino", "onnx-int8", "openvino-int8"]
    return order.index(name)


def choose_weights(run: RunDir, backend: str = "auto") -> tuple[Path, str]:
    """The weights of `run` to predict with, and a sentence saying why.

    `auto`: among the run's exports whose sidecar check passed (no metric lost more than the allowed
    0.01 against float32), the one measured fastest on this kind of CPU (same model name and flags);
    exports measured elsewhere are ranked by `_fallback_rank`; none passed: best.pt (PyTorch).
    A named backend takes that export, even one that failed its check (with a note saying so).
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend}: unknown; use one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        return run.best, "PyTorch float32, as asked (--backend torch)"
    weights = run.best.parent
    if backend != "auto":
        target = weights / EXPORTS[backend]
        if not target.exists():
            fmt = "openvino" if backend.startswith("openvino") else "onnx"
            flag = " --int8" if backend.endswith("int8") else ""
            raise UserError(f"{target}: missing; run `fracturekit export {run.root} --format {fmt}{flag}` first.")
        check = _read_check(check_path(target))
        why = f"{backend}, as asked (--backend {backend})"
        if check and not check.get("passed"):
            why += f"; WARNING: it failed its accuracy check ({check.get('summary', '')})"
        return target, why
    from fracturekit.device import cpu_info

    here = cpu_info()
    candidates = []
    for name, rel in EXPORTS.items():
        check = _read_check(check_path(weights / rel))
        if not (weights / rel).exists() or not check or not check.get("passed"):
            continue
        cpu = check.get("cpu", {})
        same_cpu = cpu.get("model") == here.model and tuple(cpu.get("flags", ())) == here.flags
        speed = float(check.get("speed", {}).get("ratio") or 0.0)
        rank = (0, -speed) if same_cpu else (1, _fallback_rank(name))
        candidates.append((rank, name, check))
    if not candidates:
        return run.best, "PyTorch float32: the run has no export that passed an accuracy check (`fracturekit export`)"
    (same, _), name, check = min(candidates)
    how = f"{check['speed']['ratio']:.2f}x PyTorch float32 measured here" if same == 0 else "measured on another CPU"
    return weights / EXPORTS[name], f"{name}: fastest export that passed its accuracy check ({how}; {check['summary']})"


def _read_check(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # an unreadable sidecar means unchecked: auto will not use that export


def read_metrics(run: RunDir | None) -> dict[str, Any]:
    if run is None or not run.metrics.is_file():
        return {}
    try:
        return json.loads(run.metrics.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{run.metrics}: unreadable ({exc}); re-run `fracturekit evaluate {run.root}`.") from exc


def training_imgsz(run: RunDir | None) -> int | None:
    """The training imgsz recorded in the run's config.yaml, if any."""
    if run is None or not run.config.is_file():
        return None
    cfg = yaml.safe_load(run.config.read_text()) or {}
    for section in (cfg, cfg.get("train", {}) if isinstance(cfg.get("train"), dict) else {}):
        if isinstance(section.get("imgsz"), int):
            return int(section["imgsz"])
    return None


def _imgsz_value(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, (list, tuple)) and v:
        return int(max(v))
    return None


def load_model(
    weights: str | Path,
    task: str,
    imgsz: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    backend: str = "auto",
    with_metrics: bool = True,
) -> Model:
    """Load a `.pt`, `.onnx` or OpenVINO detector/classifier; UserError when it is the wrong kind of model.

    A run folder loads the export `choose_weights(run, backend)` picks. `device` (auto, cpu, mps, 0,
    cuda:0) places a PyTorch model; ONNX and OpenVINO models run on CPU whatever it says. `with_metrics`
    False skips the run's evaluate metrics.json (evaluate writes new ones: an unreadable old one must not stop it).
    """
    dev, torch_device, _ = inference_device(device)
    path, run = resolve_weights(weights)
    chosen = ""
    if run is not None and Path(weights).is_dir() and not _is_openvino(Path(weights)):
        path, chosen = choose_weights(run, backend)
    n = cpu_threads(threads)
    load_ultralytics(n)
    precision = "float32"
    if _is_openvino(path):
        kind = "openvino"
        net, meta, shape, precision = _load_openvino(path, n)
        model_task, names = meta["task"], meta["names"]
        stride, trained = int(meta.get("stride", 32)), _imgsz_value(meta.get("imgsz"))
    elif path.suffix.lower() == ".onnx":
        import onnxruntime as ort

        kind = "onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise UserError(f"{path}: not a loadable ONNX model ({exc}); re-export with `fracturekit export`.") from exc
        meta = {k: v for k, v in sess.get_modelmeta().custom_metadata_map.items()}
        if "names" not in meta or "task" not in meta:
            raise UserError(f"{path}: ONNX file has no Ultralytics metadata; export it with `fracturekit export`.")
        shape = sess.get_inputs()[0].shape  # [batch, 3, h, w], str for dynamic axes
        model_task = meta["task"]
        names = ast.literal_eval(meta["names"])
        stride = int(meta.get("stride", 32))
        trained = _imgsz_value(ast.literal_eval(meta.get("imgsz", "None")))
        net: Any = sess
        if any(node.op_type == "QuantizeLinear" for node in _onnx_nodes(path)):
            precision = "int8"
    else:
        kind = "torch"
        yolo = load_checkpoint(path)
        net = yolo.model.float().eval()
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False)
        net = net.to(torch_device)
        if dev.kind == "cuda":  # fp16 on CUDA, as Ultralytics' val does during training with AMP
            net, precision = net.half(), "fp16"
        model_task, names = yolo.task, dict(net.names)
        stride = int(max(getattr(net, "stride", [32])))
        args = getattr(net, "args", {}) or {}
        trained = _imgsz_value(args.get("imgsz") if isinstance(args, dict) else None)
        shape = [None, 3, None, None]
    fixed = (int(shape[2]), int(shape[3])) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
    fixed_batch = int(shape[0]) if isinstance(shape[0], int) else None
    if fixed is not None and imgsz is not None and imgsz != max(fixed):
        raise UserError(
            f"{path}: exported for a fixed {fixed[1]}x{fixed[0]} input, not --imgsz {imgsz}; leave out --imgsz, "
            "pass --backend torch, or export again with this --imgsz."
        )
    check_task(path, model_task, task)
    size = imgsz or training_imgsz(run) or trained or 640
    if fixed is not None:
        size = max(fixed)
    return Model(
        task=task,
        backend=kind,
        weights=path,
        names={int(k): str(v) for k, v in names.items()},
        imgsz=int(size),
        stride=stride,
        fixed_shape=fixed,
        fixed_batch=fixed_batch,
        run=run,
        net=net,
        metrics=read_metrics(run) if with_metrics else {},
        device=torch_device if kind == "torch" else "cpu",
        precision=precision,
        chosen=chosen,
    )


def load_checkpoint(path: str | Path) -> Any:
    """A `.pt` checkpoint as an Ultralytics YOLO (for inference, val, export, training from it); UserError otherwise.

    Every command that loads `.pt` weights comes here, so a damaged or foreign file reads the same everywhere:
    truncated or not a PyTorch file (torch.save writes a zip archive: its directory sits at the end, so a cut
    file has none), a PyTorch file that is no Ultralytics checkpoint, or a checkpoint whose model is not a YOLO.
    """
    load_ultralytics(apply_threads=False)  # the caller (load_model, evaluate, compare) set the thread count
    import zipfile

    from ultralytics import YOLO

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file; pass a run folder or its weights/best.pt.")
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path}: truncated or not a PyTorch checkpoint ({size:,} bytes, no archive directory at its end); "
            "copy it again from the run that wrote it."
        )
    try:
        yolo = YOLO(str(path))
    except Exception:  # Ultralytics raises many types, with several lines of advice (some of it online)
        raise UserError(
            f"{path}: a PyTorch file, but no Ultralytics YOLO checkpoint inside; "
            "pass a run's weights/best.pt written by `fracturekit train`."
        ) from None
    if not hasattr(yolo.model, "names") or yolo.task not in ("detect", "classify", "segment", "pose", "obb"):
        found = type(yolo.model).__name__
        raise UserError(
            f"{path}: holds a {found}, not a YOLO model; pass a run's weights/best.pt written by `fracturekit train`."
        )
    return yolo


def _onnx_nodes(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def _load_openvino(folder: Path, threads: int) -> tuple[Any, dict[str, Any], list[Any], str]:
    """Compile an Ultralytics OpenVINO export for this CPU: (infer requests, metadata, input shape, precision).

    THROUGHPUT hint: OpenVINO splits `threads` into streams (2 single-thread streams on 2 cores) and we keep
    one infer request per stream (`Model._run_openvino` says why).

    OpenVINO's own default precision is kept: bf16 on CPUs with BF16/AMX (the export's accuracy check
    measures it), float32 elsewhere; an NNCF export runs its int8 layers as int8.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise UserError(
            f"{folder}: an OpenVINO model, but openvino is not installed; pip install 'fracturekit[openvino]'."
        ) from exc
    meta = yaml.safe_load((folder / "metadata.yaml").read_text()) or {}
    if "task" not in meta or "names" not in meta:
        raise UserError(
            f"{folder}/metadata.yaml: no task/names; re-export with `fracturekit export --format openvino`."
        )
    xml = next(folder.glob("*.xml"))
    core = ov.Core()
    try:
        compiled = core.compile_model(
            str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "THROUGHPUT"}
        )
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses for bad IR files
        raise UserError(f"{xml}: not a loadable OpenVINO model ({exc}); re-export with `fracturekit export`.") from exc
    ps = compiled.input(0).get_partial_shape()
    shape = [d.get_length() if d.is_static else None for d in ps]
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # f32, bf16 or f16
    precision = "int8" if "_int8_" in folder.name else {"bf16": "bf16", "f16": "fp16"}.get(hint, "float32")
    n = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    return [compiled.create_infer_request() for _ in range(n)], meta, shape, precision
