#!/usr/bin/env bash
# GPU readiness check, at most ~8 minutes on one GPU: install fracturekit, train a classifier and a detector on
# FracAtlas for a few epochs at imgsz 640 with AMP, evaluate both, predict with PyTorch fp16 and with ONNX, time
# images/s against plain Ultralytics `predict` on the same GPU, print one summary.
#
# On a machine without a usable CUDA GPU it says so and runs the same steps as a tiny CPU dry run (synthetic
# phantoms, imgsz 64, 1 epoch), then exits 0: the numbers of a dry run mean nothing, it only proves the script.
#
# Usage (from the repository root):  bash bench/gpu_check.sh
#   DATA=../shared/data/fracatlas  WORK=/tmp/fk-gpu-check  EPOCHS=3  IMGSZ=640  PYTHON=python3   (environment)
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
WORK=${WORK:-/tmp/fk-gpu-check}
DATA=${DATA:-../shared/data/fracatlas}
PYTHON=${PYTHON:-python3}
rm -rf "$WORK" && mkdir -p "$WORK"
export YOLO_OFFLINE=1 FRACTUREKIT_CACHE="$WORK/cache" MPLCONFIGDIR="$WORK/mpl"

# 1. install: this checkout's .venv when there is one (make setup), else a fresh venv with `pip install -e .`
if [ -x .venv/bin/python ] && .venv/bin/python -c "import fracturekit" 2>/dev/null; then
  PY=.venv/bin/python
else
  "$PYTHON" -m venv "$WORK/venv"
  "$WORK/venv/bin/python" -m pip install -q --upgrade pip
  "$WORK/venv/bin/python" -m pip install -q -e .
  PY="$WORK/venv/bin/python"
fi
FK="$(dirname "$PY")/fracturekit"
echo "install: $("$FK" --version) ($PY)"

if command -v nvidia-smi >/dev/null 2>&1 && "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  MODE=gpu DEVICE=0 IMGSZ=${IMGSZ:-640} EPOCHS=${EPOCHS:-3} BATCH=${BATCH:-32}
  echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
  [ -d "$DATA" ] || { echo "FracAtlas not found at $DATA; set DATA=path/to/FracAtlas"; exit 2; }
  "$FK" prepare "$DATA" --out "$WORK/dataset" --format fracatlas --seed 0 > "$WORK/prepare.log" 2>&1
else
  MODE=cpu-dry-run DEVICE=cpu IMGSZ=64 EPOCHS=1 BATCH=8
  echo "No CUDA GPU on this machine (nvidia-smi or torch.cuda missing): a tiny CPU dry run of every step instead."
  "$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path
from fracturekit.data.phantoms import write_phantom_dataset
from fracturekit.prepare import prepare
work = Path(sys.argv[1])
prepare(write_phantom_dataset(work / "raw", n=40, seed=5, size=96, fmt="coco"), work / "dataset", split=(0.6, 0.2, 0.2))
EOF
fi

# 2. train (AMP is fracturekit's default: fp16 on CUDA, bf16 on CPUs with native bf16), 3. evaluate
for task in classify detect; do
  "$FK" train --task $task --data "$WORK/dataset" --project "$WORK/runs" --name $task --imgsz "$IMGSZ" \
    --epochs "$EPOCHS" --batch "$BATCH" --device "$DEVICE" --seed 0 > "$WORK/train-$task.log" 2>&1
done
"$FK" evaluate --data "$WORK/dataset" --classifier "$WORK/runs/classify/classify" \
  --detector "$WORK/runs/detect/detect" --device "$DEVICE" --bootstrap 200 --out "$WORK/eval" > "$WORK/eval.log" 2>&1
"$FK" export "$WORK/runs/detect/detect" --format onnx --no-check > "$WORK/export.log" 2>&1

# 4. predict: PyTorch (fp16 on CUDA) and ONNX (onnxruntime, CPU) vs plain Ultralytics predict on the same device
"$PY" - "$WORK" "$DEVICE" "$IMGSZ" "$MODE" "$START" <<'EOF'
import json, sys, time
from pathlib import Path
from fracturekit.core.device import cpu_info
from fracturekit.predict import predict
from fracturekit.core.yolo_env import load_ultralytics

work, device, imgsz, mode, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
load_ultralytics()
from ultralytics import YOLO
import torch

films = work / "dataset" / "det" / "images" / "test"
n = sum(1 for _ in films.iterdir())
det = work / "runs" / "detect" / "detect"
onnx = det / "weights" / "best.onnx"
gpu = device != "cpu"

def timed(fn):
    fn(warm=True)  # warm-up on the same films: CUDA context, cudnn autotune, onnxruntime allocations
    if gpu:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(warm=False)
    if gpu:
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)

def yolo(warm):
    m = YOLO(str(det / "weights" / "best.pt"))
    for _ in m.predict(source=str(films), imgsz=imgsz, device=device, quantize=16 if gpu else None, stream=True, verbose=False):
        pass

def fk(weights, backend, batch):
    def go(warm):
        predict(films, detector=weights, out=work / f"pred-{backend}", imgsz=imgsz, device=device, batch=batch,
                save_images=False, backend=backend, exist_ok=True)  # warm-up and timed run share the folder
    return go

rows = {"plain Ultralytics predict" + (" (fp16)" if gpu else ""): timed(yolo)}
rows["fracturekit predict, PyTorch " + ("fp16, batch 32" if gpu else "float32, batch 8")] = timed(
    fk(det, "torch", 32 if gpu else 8))
rows["fracturekit predict, ONNX (onnxruntime CPU), batch 1"] = timed(fk(onnx, "onnx", 1))
metrics = json.loads((work / "eval" / "metrics.json").read_text())
cls, dt = metrics.get("classification") or {}, metrics.get("detection") or {}
runs = {t: json.loads((work / "runs" / t / t / "run.json").read_text()) for t in ("classify", "detect")}
fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
print("=" * 100)
print(f"gpu_check summary ({mode}): {torch.cuda.get_device_name(0) if gpu else cpu_info().line}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}; films: {n} test films; imgsz {imgsz}")
for t, r in runs.items():
    print(f"train {t}: {r['epochs_completed']} epochs, {r['timings']['mean_epoch_s']} s/epoch, device {r['device']}, "
          f"metrics {r['metrics']}")
print(f"evaluate (test): classifier AUROC {fmt(cls.get('auroc'))}; detector mAP50 {fmt(dt.get('map50'))}, "
      f"mAP50-95 {fmt(dt.get('map50_95'))}, image AUROC {fmt(dt.get('image_auroc'))}")
base = next(iter(rows.values()))
for label, ips in rows.items():
    print(f"{label:56s} {ips:8.1f} img/s  ratio {ips / base:5.2f}")
print(f"total wall time: {time.time() - start:.0f} s" + ("  (dry run: numbers mean nothing)" if not gpu else ""))
EOF
