"""Export a trained model (ONNX, OpenVINO, int8 of either, and the other formats Ultralytics supports).

Written beside the weights. An ONNX or OpenVINO export of a run is then checked against float32 on
the run's validation split through `fracturekit.infer` (the very path predict and evaluate use): detector image
AUROC and mAP50, classifier AUROC, and the speed of both; the result goes to a sidecar
`<export>.check.json`. An export that loses more than MAX_LOSS on any metric is marked failed, and
`predict` does not pick it for a run folder unless asked by name.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fracturekit import callable_stage
from fracturekit.core.errors import UserError
from fracturekit.core.layout import POSITIVE_CLASS, PreparedDataset, RunDir
from fracturekit.core.options import InferenceDevice, InferenceOptions, as_inference_device
from fracturekit.core.yolo_env import cpu_threads, load_ultralytics
from fracturekit.infer import backends
from fracturekit.infer.backends.base import imgsz_value
from fracturekit.infer.model import check_path, default_imgsz, load_checkpoint, load_model, resolve_weights
from fracturekit.infer.postprocess import coco_detections

log = logging.getLogger(__name__)

MAX_LOSS = 0.01  # the most any checked metric may drop against float32 for an export to be used by default
MIN_REFERENCE_AUROC = 0.6  # a float32 model nearer chance than this cannot show what an export loses
CALIB_FILMS = 64  # onnxruntime int8 calibration films (evenly spaced over the train split)
OPENVINO_CALIB_FILMS = 300  # NNCF's default subset size; Ultralytics calibrates on the whole split otherwise


def _dfl_last_axis(self: Any, x: Any) -> Any:
    """DFL.forward with the softmax over the last axis: the same numbers, a faster ONNX graph.

    Ultralytics' DFL takes the softmax over axis 1 of (B, 16, 4, anchors); onnxruntime's Softmax on a
    non-last axis transposes internally and took 10 of 120 ms per 512x640 YOLOv8n image here (its
    profiler). Here the 16 bins are moved last, softmaxed, and the 1x1 "integral" conv becomes a matmul
    with the same weights (0..15): 111 ms, outputs identical.
    """
    b, _, a = x.shape
    p = x.view(b, 4, self.c1, a).transpose(2, 3).softmax(-1)
    return (p @ self.conv.weight.view(self.c1, 1)).view(b, 4, a)


def onnx_friendly(model: Any) -> int:
    """Give each DFL module of `model` (a torch module tree) the last-axis forward; returns how many.

    An instance attribute, so only this in-memory model changes (Ultralytics' export deep-copies it,
    and a deep copy rebinds the method to the copy); the .pt on disk and other models are untouched.
    """
    from ultralytics.nn.modules.block import DFL

    found = [m for m in model.modules() if isinstance(m, DFL)]
    for m in found:
        m.forward = types.MethodType(_dfl_last_axis, m)
    return len(found)


def check_export_format(fmt: str) -> str:
    """`fmt` lower-cased when it exports offline here, else UserError listing those that do."""
    name = fmt.strip().lower()
    available = backends.export_formats()
    if name not in available:
        missing = [f"{f} once `pip install {m}`" for f, m in backends.export_modules().items() if f not in available]
        raise UserError(
            f"--format {fmt}: not available offline on this machine; use one of {', '.join(available)}"
            + (f" ({', '.join(missing)})" if missing else "")
            + "."
        )
    return name


@dataclass(frozen=True)
class Exported:
    """What `export_checked` wrote: the export, and its accuracy check (the sidecar's content; None: unchecked)."""

    path: Path
    check: dict[str, Any] | None


def export(
    weights_or_run: str | Path,
    fmt: str = "onnx",
    imgsz: int | None = None,
    device: str = "auto",
    *,
    int8: bool = False,
    check: bool = True,
    data: str | Path | None = None,
    **kw: Any,
) -> Path:
    """Export `weights_or_run` (a run folder or a .pt) to `fmt`; returns the written file or folder.

    `export_checked` does it and also returns the accuracy check; this returns the path alone."""
    return export_checked(weights_or_run, fmt, imgsz, device, int8=int8, check=check, data=data, **kw).path


def export_checked(
    weights_or_run: str | Path,
    fmt: str = "onnx",
    imgsz: int | None = None,
    device: str = "auto",
    *,
    int8: bool = False,
    check: bool = True,
    data: str | Path | None = None,
    **kw: Any,
) -> Exported:
    """Export `weights_or_run` (a run folder or a .pt) to `fmt`; the written file or folder and its check.

    Defaults chosen for `fracturekit predict` on CPU: imgsz = the training imgsz; ONNX models get
    dynamic batch/height/width so predict can batch and letterbox detector input to each film's aspect
    (`dynamic=False` in `kw` gives a fixed square input instead) and the box head's softmax on the
    last axis (`onnx_friendly`, same outputs, about 7% faster in onnxruntime); graph simplification only when
    onnxslim is installed, because Ultralytics would otherwise try to pip-install it (no network
    here) and the unsimplified graph runs correctly. OpenVINO detectors are dynamic too. The backend that reads
    the export readies it for this machine (`Backend.prepare`: OpenVINO keeps the compiled model beside the export's
    folder, so predict loads it in a third of the compile time).

    `int8`: ONNX gets onnxruntime static QDQ quantization (`quantize_onnx`) of the float32 export,
    OpenVINO gets Ultralytics' NNCF quantization; both calibrate on the run's TRAINING films, so the
    validation films of the check stay unseen. `check`: write the sidecar accuracy check (needs the
    run's prepared dataset, from run.json, or `data`: a prepared dataset for weights outside a run).
    Extra `kw` go to Ultralytics' `export`.
    """
    fmt = check_export_format(fmt)
    opts = InferenceOptions.build(device=device, imgsz=imgsz, threads=kw.pop("threads", None))  # resolved once
    for note in opts.notes:
        log.warning(note)
    path, run = resolve_weights(weights_or_run)
    if path.suffix.lower() != ".pt":
        raise UserError(f"{path}: only PyTorch .pt weights can be exported; pass the run folder or its best.pt.")
    if int8 and fmt not in backends.int8_formats():
        raise UserError(
            f"--int8 with --format {fmt}: int8 is offered for {' and '.join(backends.int8_formats())} only."
        )
    threads = opts.threads
    load_ultralytics(threads)
    model = load_checkpoint(path)
    args = getattr(model.model, "args", {}) or {}
    size = default_imgsz(opts.imgsz, run, imgsz_value(args.get("imgsz")) if isinstance(args, dict) else None)
    ds = PreparedDataset.open(data) if data is not None else _run_dataset(run)
    ds = ds if (int8 or check) and fmt in backends.checked_formats() else None
    if int8 and ds is None:
        raise UserError(
            f"{path}: --int8 calibrates on the run's training films, but its dataset is unknown; "
            "pass --data PREPARED_DATASET, or a run folder whose prepared dataset still exists."
        )
    args = _export_args(model, fmt, size, opts.device.torch, ds if int8 else None)
    args.update(kw)
    try:
        written = Path(model.export(**args))
    except (ValueError, TypeError, KeyError, NotImplementedError, ModuleNotFoundError) as exc:
        raise UserError(f"{path}: export to '{fmt}' failed ({exc}); try --format onnx or torchscript.") from exc
    _drop_check(written)
    backends.backend_for(written, opts.device.device).prepare(written, cpu_threads(threads))
    if fmt == "onnx" and int8:
        assert ds is not None
        written = quantize_onnx(written, path.with_suffix(".int8.onnx"), model.task, ds, size)
        _drop_check(written)
    if check and ds is not None and fmt in backends.checked_formats():
        calibration = args.get("fraction")
        result = accuracy_check(
            written, path, model.task, ds, threads=threads, calibration=calibration, device=opts.device
        )
        return Exported(written, result)
    return Exported(written, None)


def _export_args(model: Any, fmt: str, size: int, device: str, int8_data: PreparedDataset | None) -> dict[str, Any]:
    """Ultralytics' export arguments for `fmt` (see export_checked); readies an ONNX export's box head.

    `int8_data`: for int8 exports, the dataset whose training films calibrate OpenVINO's quantization."""
    args: dict[str, Any] = {"format": fmt, "imgsz": size, "device": device, "verbose": False}
    if fmt == "onnx":
        args["simplify"] = importlib.util.find_spec("onnxslim") is not None
        args["dynamic"] = True
        onnx_friendly(model.model)
    if fmt == "openvino":
        args["dynamic"] = model.task == "detect"  # rectangular letterbox per film; classify is a fixed crop
        if int8_data is not None:
            ds = int8_data
            data, n = (ds.cls_dir, _count(ds.cls_dir / "train")) if model.task == "classify" else (ds.data_yaml, 0)
            n = n or _count(ds.det_dir / "images" / "train")
            args.update(quantize=8, data=str(data), split="train", fraction=min(1.0, OPENVINO_CALIB_FILMS / max(n, 1)))
    return args


def _drop_check(export_path: Path) -> None:
    """Remove the accuracy check an earlier export wrote for the file just replaced: it vouched for other
    weights (or another imgsz), and predict's `auto` would trust it for these."""
    check_path(export_path).unlink(missing_ok=True)


def _count(folder: Path) -> int:
    from fracturekit.data.imageio import is_image_file

    return sum(1 for p in folder.rglob("*") if p.is_file() and is_image_file(p)) if folder.is_dir() else 0


def _run_dataset(run: RunDir | None) -> PreparedDataset | None:
    """The prepared dataset a run was trained on (run.json `data`), if it still exists."""
    if run is None or not run.record.is_file():
        return None
    try:
        root = json.loads(run.record.read_text()).get("data")
    except (OSError, ValueError):
        return None
    return PreparedDataset(Path(root)) if root and Path(root).is_dir() else None


def _split_films(ds: PreparedDataset, task: str, split: str) -> list[Path]:
    """The films of one split, sorted: det/images/<split>/ or every class folder under cls/<split>/."""
    from fracturekit.data.imageio import is_image_file

    folder = ds.cls_dir / split if task == "classify" else ds.det_dir / "images" / split
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)) if folder.is_dir() else []


def quantize_onnx(fp32: Path, target: Path, task: str, ds: PreparedDataset, imgsz: int, n: int = CALIB_FILMS) -> Path:
    """Static QDQ int8 copy of `fp32` (onnxruntime), calibrated on `n` training films prepared as predict does.

    Per-channel int8 weights, uint8 activations. Kept in float32: a detector's box decode after its last
    convolutions (its concat of pixel boxes and 0..1 scores under one uint8 scale wipes out the scores) and
    a classifier's final softmax (uint8 probabilities would tie most films: AUROC needs their order).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from fracturekit.data.imageio import read_image
    from fracturekit.infer.preprocess import classify_host_transform, letterbox, rect_shape, to_batch

    films = _split_films(ds, task, "train")
    if not films:
        raise UserError(f"{ds.root}: no training films to calibrate int8 on; export without --int8.")
    calib = [films[round(i)] for i in np.linspace(0, len(films) - 1, min(n, len(films)))]
    cls_tf = classify_host_transform(imgsz, None) if task == "classify" else None

    class Films(CalibrationDataReader):
        def __init__(self) -> None:
            self.paths = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            p = next(self.paths, None)
            if p is None:
                return None
            gray = read_image(p).pixels
            img = cls_tf(gray) if cls_tf else letterbox(gray, rect_shape(*gray.shape, imgsz, 32))[0]
            return {"images": to_batch([img])}

    graph = onnx.load(str(fp32)).graph
    head = max(int(n.name.split("/")[1].split(".")[1]) for n in graph.node if n.name.startswith("/model."))
    if task == "classify":
        keep_float = [n.name for n in graph.node if n.op_type == "Softmax"]
    else:
        keep_float = [n.name for n in graph.node if n.name.startswith(f"/model.{head}/") and n.op_type != "Conv"]
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs a warning per tensor it leaves alone
    try:
        quantize_static(
            str(fp32),
            str(target),
            Films(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            nodes_to_exclude=keep_float,
        )
    finally:
        logging.getLogger().setLevel(quiet)
    _copy_metadata(fp32, target)
    return target


def _copy_metadata(src: Path, dst: Path) -> None:
    """Carry Ultralytics' metadata (task, names, imgsz, stride) over to the quantized graph if it was dropped."""
    import onnx

    a, b = onnx.load(str(src)), onnx.load(str(dst))
    have = {p.key for p in b.metadata_props}
    missing = [p for p in a.metadata_props if p.key not in have]
    if missing:
        b.metadata_props.extend(missing)
        onnx.save(b, str(dst))


def _measure(
    weights: Path, task: str, ds: PreparedDataset, split: str, threads: int | None, device: InferenceDevice | str
) -> dict[str, Any]:
    """Accuracy and speed of `weights` on `split` through the inference core predict uses (no files written)."""
    from fracturekit.evaluate import coco_ground_truth
    from fracturekit.evaluation import metrics as M
    from fracturekit.infer.scoring import score

    model = load_model(weights, task, threads=threads, device=device)
    kw = {"classifier": model} if task == "classify" else {"detector": model}
    films = _split_films(ds, task, split)
    if films:  # warm-up, untimed: first-call allocations (and OpenVINO's first shape) are not per-film costs
        score(films[:1], threads=threads, **kw)
    t0 = time.perf_counter()
    preds = score(films, threads=threads, **kw)
    seconds = time.perf_counter() - t0
    ok = [p for p in preds if not p.error]
    out: dict[str, Any] = {"n_images": len(ok), "seconds": round(seconds, 3), "img_s": round(len(ok) / seconds, 2)}
    if task == "classify":
        y = np.array([p.path.parent.name == POSITIVE_CLASS for p in ok], int)
        out["auroc"] = M.auroc(y, np.array([p.probability for p in ok], float))
        return out
    gt, ids = coco_ground_truth(ds, split, model.names, [])
    dets, y, image_score = [], [], []
    for p in ok:
        if p.path.name not in ids:
            continue
        image_id = ids[p.path.name]
        dets += coco_detections(p.boxes, image_id)
        y.append(any(a["image_id"] == image_id for a in gt["annotations"]))
        image_score.append(p.detector_score)
    out["image_auroc"] = M.auroc(np.array(y, int), np.array(image_score, float))
    out["map50"] = M.coco_eval(gt, dets)["map50"]
    return out


def accuracy_check(
    export_path: Path,
    reference: Path,
    task: str,
    ds: PreparedDataset,
    split: str = "val",
    threads: int | None = None,
    calibration: Any = None,
    device: InferenceDevice | str = "auto",
) -> dict[str, Any]:
    """Compare `export_path` with the float32 PyTorch `reference` on `split`; write and return the sidecar.

    Metrics: detector image AUROC and mAP50 (pycocotools), classifier AUROC; `passed` when none drops by
    more than MAX_LOSS. Speed: img/s of each over the same films, one after the other, and their ratio,
    with the CPU it was measured on (predict trusts the ratio only on the same kind of CPU). `device`: the
    export command's, resolved once there (a string is resolved here: a direct call).
    """
    from fracturekit.core.device import cpu_info

    device = as_inference_device(device)
    ref = _measure(reference, task, ds, split, threads, device)
    exp = _measure(export_path, task, ds, split, threads, device)
    keys = ["auroc"] if task == "classify" else ["image_auroc", "map50"]
    delta = {k: _round(exp[k] - ref[k]) for k in keys}
    losses = {k: -d for k, d in delta.items() if d is not None}
    unmeasured = [k for k, d in delta.items() if d is None]  # NaN: a split with one class or no boxes
    at_chance = [k for k in keys if "auroc" in k and (ref[k] or 0.0) < MIN_REFERENCE_AUROC]
    passed = not unmeasured and not at_chance and all(v <= MAX_LOSS for v in losses.values())
    used = load_model(export_path, task, threads=threads, device=device)
    cpu = cpu_info()
    summary = ", ".join(f"{k} {exp[k]:.3f} vs {ref[k]:.3f} float32" for k in keys)
    result = {
        "export": export_path.name,
        "task": task,
        "backend": used.backend,
        "precision": used.precision,
        "reference": f"{reference.name} (PyTorch float32)",
        "dataset": str(ds.root),
        "split": split,
        "n_images": exp["n_images"],
        "export_metrics": {k: _round(exp[k]) for k in keys},
        "float32_metrics": {k: _round(ref[k]) for k in keys},
        "delta": delta,
        "max_loss": MAX_LOSS,
        "passed": passed,
        "summary": summary + _verdict(passed, unmeasured, at_chance, losses),
        "speed": {
            "export_img_s": exp["img_s"],
            "float32_img_s": ref["img_s"],
            "ratio": round(exp["img_s"] / ref["img_s"], 3),
        },
        "cpu": {"model": cpu.model, "flags": list(cpu.flags)},
        "calibration": "train split" + (f", fraction {calibration:.3f}" if calibration else "")
        if used.precision == "int8"
        else None,
    }
    check_path(export_path).write_text(json.dumps(result, indent=1))
    return result


def _verdict(passed: bool, unmeasured: list[str], at_chance: list[str], losses: dict[str, float]) -> str:
    if passed:
        return ""
    if unmeasured:
        return f"; {', '.join(unmeasured)} not measurable on this split"
    if at_chance:
        return f"; float32 {at_chance[0]} is below {MIN_REFERENCE_AUROC}: too near chance to show a loss, train further"
    return f"; loses more than {MAX_LOSS}"


def _round(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


callable_stage(__name__)  # `fracturekit.export(...)` runs export() above: see fracturekit.Stage
