"""Is int8 worth it on this CPU? Static int8 ONNX vs float32 ONNX: speed and an accuracy check, one run.

The lever `predict_bench.py` does not take. A trained detector (default: the one `make demo` trains) is
exported to float32 ONNX, then quantized with onnxruntime's static QDQ quantization (per-channel int8
weights, uint8 activations, calibrated on `--calib` images of the training split; the detect head's
box decode stays float32, because quantizing its concat of pixel boxes and 0..1 scores to one uint8
scale wipes out the scores). Both files then run through `fracturekit.predict.predict` on the test
split, one after the other (the quantization is `fracturekit.export.quantize_onnx`, what
`fracturekit export --format onnx --int8` runs), and the script prints images/s for each, their ratio, and the accuracy
check against the split's labels: image-level AUROC (film has a fracture box vs the detector's best
box confidence, as `evaluate` scores it) for both, plus the per-film score difference.

Usage: .venv/bin/python bench/int8_probe.py [--run runs/demo/runs/detect/demo] [--data runs/demo/dataset]
       [--imgsz N] [--calib 32] [--batch B] [--work DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def timed_predict(
    weights: Path, images: Path, out: Path, imgsz: int, batch: int | None
) -> tuple[float, dict[str, float]]:
    """Seconds for `fracturekit predict` over `images`, and each film's detector score."""
    from fracturekit.predict import predict

    t0 = time.perf_counter()
    recs = predict(images, detector=weights, out=out, imgsz=imgsz, conf=0.001, batch=batch, save_images=False)
    return time.perf_counter() - t0, {Path(r["path"]).stem: r["detector_score"] for r in recs if not r["error"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs/demo/runs/detect/demo", help="detector run folder")
    ap.add_argument("--data", type=Path, default=REPO / "runs/demo/dataset", help="its prepared dataset")
    ap.add_argument("--imgsz", type=int, default=None, help="default: the run's training imgsz")
    ap.add_argument("--calib", type=int, default=32, help="calibration films from the train split")
    ap.add_argument("--batch", type=int, default=None, help="default: predict's (1 for ONNX)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    a = ap.parse_args()
    if not (a.run / "weights" / "best.pt").is_file():
        raise SystemExit(f"{a.run}: no weights/best.pt; run `make demo` first or pass --run and --data.")
    test, train = a.data / "det" / "images" / "test", a.data / "det" / "images" / "train"
    if not test.is_dir() or not train.is_dir():
        raise SystemExit(f"{a.data}: no det/images/test and det/images/train; pass the run's prepared dataset.")
    work = a.work or Path(tempfile.mkdtemp(prefix="fk-int8-probe-"))
    work.mkdir(parents=True, exist_ok=True)

    import shutil

    from sklearn.metrics import roc_auc_score

    from fracturekit.core.device import cpu_info
    from fracturekit.core.layout import PreparedDataset, RunDir
    from fracturekit.core.yolo_env import load_ultralytics
    from fracturekit.export import export, quantize_onnx
    from fracturekit.infer.model import training_imgsz

    load_ultralytics()
    imgsz = a.imgsz or training_imgsz(RunDir(a.run)) or 640
    weights = work / "weights" / "best.pt"  # a copy, so the exports land in --work, not in the user's run
    weights.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(a.run / "weights" / "best.pt", weights)
    fp32 = export(weights, "onnx", imgsz=imgsz, check=False)
    t0 = time.perf_counter()
    int8 = quantize_onnx(fp32, work / "weights" / "best.int8.onnx", "detect", PreparedDataset(a.data), imgsz, a.calib)
    t_quant = time.perf_counter() - t0

    labels_dir = a.data / "det" / "labels" / "test"
    label_files = {p.stem: labels_dir / f"{p.stem}.txt" for p in test.iterdir()}
    truth = {k: int(f.is_file() and bool(f.read_text().strip())) for k, f in label_files.items()}
    rows = []
    for label, w in (("float32 ONNX", fp32), ("int8 ONNX (static QDQ)", int8)):
        seconds, scores = timed_predict(w, test, work / f"out_{w.stem}", imgsz, a.batch)
        keys = sorted(scores)
        auroc = roc_auc_score([truth[k] for k in keys], [scores[k] for k in keys])
        rows.append((label, len(keys), seconds, scores, auroc))

    print(f"detector: {a.run} (imgsz {imgsz}); test films: {len(truth)} ({sum(truth.values())} with a fracture box)")
    print(cpu_info().line)
    print(f"int8 calibration: {a.calib} train films (evenly spaced), quantized in {t_quant:.1f} s")
    print(f"{'model':26s} {'images':>6s} {'seconds':>8s} {'img/s':>7s} {'image AUROC':>12s}")
    for label, n, seconds, _, auroc in rows:
        print(f"{label:26s} {n:6d} {seconds:8.2f} {n / seconds:7.2f} {auroc:12.3f}")
    diff = np.array([abs(rows[0][3][k] - rows[1][3][k]) for k in rows[0][3]])
    print(f"per-film |score int8 - float32|: median {np.median(diff):.4f}, max {diff.max():.4f}")
    ratio = (rows[1][1] / rows[1][2]) / (rows[0][1] / rows[0][2])
    print(f"speed ratio int8 / float32: {ratio:.2f}; AUROC change: {rows[1][4] - rows[0][4]:+.3f}")


if __name__ == "__main__":
    main()
