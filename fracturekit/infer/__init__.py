"""The inference core: load a model, score films, decide; used by predict, evaluate, export, cases and cam.

- `backends`: the inference backends as plug-ins (PyTorch, ONNX Runtime, OpenVINO, ...), one module each, one map;
- `model`: `Model` and `load_model` (a run folder or weights file, on the backend that reads it), one device rule;
- `preprocess`: our reader, one letterbox, Ultralytics' classify transform;
- `postprocess`: NMS, then boxes and heatmaps back to film pixels;
- `policy`: threshold, temperature and the positive class from evaluate's metrics.json;
- `scoring`: `Prediction` (one film's result) and `score` / `Scorer` that make them.
"""

from fracturekit.infer.backends import BACKEND_MAP, BACKENDS, EXPORTS
from fracturekit.infer.model import (
    Model,
    check_path,
    choose_weights,
    load_model,
    resolve_weights,
    training_imgsz,
)
from fracturekit.infer.policy import Policy, positive_index
from fracturekit.infer.scoring import SCORE_FLOOR, Prediction, Scorer, default_batch, score

__all__ = [
    "BACKENDS",
    "BACKEND_MAP",
    "EXPORTS",
    "SCORE_FLOOR",
    "Model",
    "Policy",
    "Prediction",
    "Scorer",
    "check_path",
    "choose_weights",
    "default_batch",
    "load_model",
    "positive_index",
    "resolve_weights",
    "score",
    "training_imgsz",
]
