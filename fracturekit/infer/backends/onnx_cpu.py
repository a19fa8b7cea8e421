"""ONNX Runtime on CPU: a run's `best.onnx` and its static int8 copy `best.int8.onnx`.

Our own session rather than Ultralytics' AutoBackend, so that a dynamic-shape export gets rectangular
batches and the thread count is ours. On CPU a session runs each call on one intra-op thread and
`scoring.stream` makes one call per allowed core at once (`calls`; an onnxruntime session may be run from
several threads): on 2 cores, YOLOv8n-det float32 at 640x512 took 77-85 ms of CPU a film so, against 141-155
ms with two intra-op threads a call and one call at a time, whose threads spin while they wait for each
other (model only, 30 phantom films, the two interleaved, on a loaded 2-core machine).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fracturekit.core.errors import UserError
from fracturekit.infer.backends.base import Backend, Loaded, Variant, chunks, imgsz_value, padded

if TYPE_CHECKING:
    from fracturekit.core.device import CpuInfo, Device
    from fracturekit.infer.model import Model


class OnnxRuntime(Backend):
    name = "onnx"
    title = "ONNX Runtime"
    order = 20
    weights_help = ".onnx"
    batch_help = "1 with ONNX Runtime on CPU"
    variants = (Variant("onnx", "best.onnx"), Variant("onnx-int8", "best.int8.onnx", int8=True))
    export_format = "onnx"
    export_module = "onnx"

    @classmethod
    def reads(cls, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".onnx"

    @classmethod
    def providers(cls, device: Device) -> list[Any]:
        """The execution providers a session is asked for, best first."""
        return ["CPUExecutionProvider"]

    @classmethod
    def load(cls, path: Path, threads: int, device: Device, torch_device: str) -> Loaded:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cls.intra_threads(threads)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            sess = ort.InferenceSession(str(path), opts, providers=cls.providers(device))
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise UserError(f"{path}: not a loadable ONNX model ({exc}); re-export with `fracturekit export`.") from exc
        meta = dict(sess.get_modelmeta().custom_metadata_map)
        if "names" not in meta or "task" not in meta:
            raise UserError(f"{path}: ONNX file has no Ultralytics metadata; export it with `fracturekit export`.")
        int8 = any(node.op_type == "QuantizeLinear" for node in _onnx_nodes(path))
        return Loaded(
            net=sess,
            task=meta["task"],
            names=ast.literal_eval(meta["names"]),
            stride=int(meta.get("stride", 32)),
            trained_imgsz=imgsz_value(ast.literal_eval(meta.get("imgsz", "None"))),
            shape=sess.get_inputs()[0].shape,  # [batch, 3, h, w], str for dynamic axes
            precision="int8" if int8 else "float32",
            device=cls.session_device(sess, device, path),
        )

    @classmethod
    def intra_threads(cls, threads: int) -> int:
        """Intra-op threads of a session: 1, the `threads` cores being used by as many calls at once."""
        return 1

    @classmethod
    def calls(cls, model: Model, batch: int) -> int:
        """One single-thread call per core the model was loaded with."""
        return model.threads

    @classmethod
    def session_device(cls, sess: Any, device: Device, path: Path) -> str:
        """Where the session runs, as a torch device string: always the CPU here."""
        return "cpu"

    @classmethod
    def forward(cls, model: Model, x: np.ndarray) -> np.ndarray:
        fb = model.fixed_batch
        if fb is None or fb == len(x):
            return _run(model.net, x)
        # static batch: run full chunks, the last one zero-padded
        return np.concatenate([_run(model.net, padded(c, fb))[: len(c)] for c in chunks(x, fb)])

    @classmethod
    def default_batch(cls, model: Model) -> int:
        """1: onnxruntime's CPU kernels ran ~10% faster one film at a time than in batches of 8
        (bench/predict_bench.py)."""
        return 1

    @classmethod
    def rank(cls, variant: Variant, cpu: CpuInfo) -> int | None:
        """From bench/ figures: on a VNNI/BF16 CPU OpenVINO int8 ran 3x and bf16 2x onnxruntime float32 and
        onnxruntime int8 1.2x (ranks 2, 3 after OpenVINO's 0, 1); on AVX2 alone float32 after OpenVINO int8 (1; see
        OpenVino.rank) and int8 last (3): it ran 0.84x float32 there (bench/int8_probe.py)."""
        if cpu.vnni and cpu.bf16:
            return 2 if variant.int8 else 3
        return 3 if variant.int8 else 1


def _run(sess: Any, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _onnx_nodes(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)
