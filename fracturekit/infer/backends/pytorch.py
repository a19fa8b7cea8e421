"""PyTorch: a run's own `best.pt` (any Ultralytics checkpoint), on CPU, CUDA (fp16) or Apple MPS."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fracturekit.infer.backends.base import Backend, Loaded, Variant, imgsz_value

if TYPE_CHECKING:
    from fracturekit.core.device import Device
    from fracturekit.infer.model import Model


class PyTorch(Backend):
    name = "torch"
    title = "PyTorch"
    order = 0
    weights_help = ".pt"
    batch_help = "8 with PyTorch"
    variants = (Variant("torch", "best.pt"),)
    cam = True
    reference = True

    @classmethod
    def reads(cls, path: Path) -> bool:
        """A .pt; `load_model` also hands it any file no other backend reads (Ultralytics says if it is one)."""
        return path.is_file() and path.suffix.lower() == ".pt"

    @classmethod
    def load(cls, path: Path, threads: int, device: Device, torch_device: str) -> Loaded:
        from fracturekit.infer.model import load_checkpoint

        yolo = load_checkpoint(path)
        net = yolo.model.float().eval()
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False)
        net = net.to(torch_device)
        precision = "float32"
        if device.kind == "cuda":  # fp16 on CUDA, as Ultralytics' val does during training with AMP
            net, precision = net.half(), "fp16"
        args = getattr(net, "args", {}) or {}
        return Loaded(
            net=net,
            task=yolo.task,
            names=dict(net.names),
            stride=int(max(getattr(net, "stride", [32]))),
            trained_imgsz=imgsz_value(args.get("imgsz") if isinstance(args, dict) else None),
            shape=[None, 3, None, None],
            precision=precision,
            device=torch_device,
        )

    @classmethod
    def forward(cls, model: Model, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).to(model.device)
            y = model.net(t.half() if model.precision == "fp16" else t)
        return (y[0] if isinstance(y, (list, tuple)) else y).float().cpu().numpy()

    @classmethod
    def default_batch(cls, model: Model) -> int:
        """8: PyTorch ran faster batched than film by film (bench/predict_bench.py's batch rows)."""
        return 8
