"""CPU throughput of `fracturekit predict` (PyTorch and ONNX) against plain `yolo predict`, same weights and images.

Weights: one YOLOv8n detector built from `yolov8n.yaml` with a fixed random init (seed 0, 1 class "fracture"),
because no pretrained weights can be downloaded here; speed does not depend on what the weights learned, and the
same conf is used by every backend. Images: 200 synthetic films of 1024x800 px (fracturekit phantoms), or the
first 200 FracAtlas images with --fracatlas. Each backend runs in its own Python process, one after the other;
time counts from model load to the last result (imports of torch, Ultralytics and fracturekit excluded for
every backend alike):

- yolo predict (Ultralytics defaults): `YOLO(w).predict(source=folder, imgsz=640, conf=conf, save=False,
  stream=True)` with Ultralytics' own thread count (cores - 1) and nothing of fracturekit imported.
- yolo predict (all threads): the same call with torch using every allowed core, to separate that lever.
- fracturekit predict (PyTorch / ONNX): `fracturekit.predict.predict(folder, detector=w or w.onnx, imgsz=640,
  conf=conf, batch=B, save_images=False)` for each --batch B (it still writes predictions.csv/.json).
- fracturekit predict on the faster exports, at predict's default batch (1 for ONNX; 1 for OpenVINO, one
  call per stream at once): ONNX int8 (onnxruntime static QDQ), OpenVINO at its default
  precision (bf16 on a CPU with BF16) and OpenVINO int8 (NNCF), each written by `fracturekit.export.export`;
  the int8 ones calibrated on 32 phantom films of a prepared dataset made here. OpenVINO rows need the
  `openvino` extra and are left out without it. Export also keeps each OpenVINO export compiled for this machine
  beside it (`Backend.prepare`), as it does for a user; its timed predict loads that instead of compiling (an
  export reused from an older --work has none, and with --isa avx2 the ISA limit differs from export's: compiled).

The model is random, so this bench measures speed only; each export's accuracy against float32 is measured
on a trained model by `fracturekit export` itself (its `.check.json`). The row the ratio is taken from is the
backend `fracturekit predict` prefers on this CPU (`fracturekit.infer.model._fallback_rank`: OpenVINO int8 first on
a CPU with VNNI and BF16 and on AVX2 alone, as measured with --isa avx2), not the fastest row.

Also printed: the model's GFLOPs per image at 640x640 and at the films' rectangular letterbox, the CPU's
measured float32 matmul GFLOP/s (torch and numpy, 2048x2048, all threads), so the achieved GFLOP/s can be read
against the machine's limit, and the float32 ceiling: img/s if every FLOP ran at the best matmul rate.
The last line is `ratio_vs_yolo_predict: X.XX` (that backend's row over the Ultralytics-defaults row).
That row is measured --repeat times (default 3) and its median run is the row: a 200-film run of it takes ~4-5 s,
the noisiest figure here (four idle single runs of unchanged code read 4.96, 5.06, 5.96 and 6.46), against ~25 s
for each of the two reference runs, whose mean is the base. Every run's seconds are printed.

`--isa avx2` measures the AVX2 path on an AVX-512 CPU: every measured process (each row, the matmul rate) runs
with `ISA_ENV["avx2"]` set before torch is imported: ONEDNN_MAX_CPU_ISA=AVX2 limits oneDNN (PyTorch's convolutions,
both sides of the ratio) and OpenVINO's CPU plugin, which honours it and then runs float32
(`openvino_cpu.precision_hint`; without that hint it picks bf16 from CPUID and fails to compile), MKL and OpenBLAS
get their own AVX2 limits for the matmul rate. ONNX Runtime has no such limit (MLAS picks its kernels from CPUID;
no environment variable or session option found in onnxruntime 1.x here), so its rows still use AVX-512: they
flatter ONNX on this arm, and the bench says so. The ISA really used is printed from the processes themselves
(`isa_probe`: oneDNN's verbose `isa:` line, OpenVINO's convolution kernel name), and the backend chosen is the one
`_fallback_rank` picks on a CPU with AVX2 alone.

Usage: .venv/bin/python bench/predict_bench.py [--n 200] [--imgsz 640] [--conf 0.25] [--batch 1,8] [--fracatlas]
       [--work DIR] [--isa native|avx2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRACATLAS = REPO.parent / "shared" / "data" / "fracatlas" / "images"
# The environment of every measured process per --isa: set before torch, OpenVINO or a BLAS is loaded there.
ISA_ENV: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"},
}

_ISA_SNIPPET = """
import collections, json, os
import numpy as np
import torch
conv = torch.nn.Conv2d(16, 32, 3, padding=1).eval()
with torch.inference_mode():
    conv(torch.randn(2, 16, 64, 64))  # oneDNN prints its isa line (ONEDNN_VERBOSE=1) on the first primitive
kernels = None
try:
    import openvino as ov
    import openvino.opset13 as ops
    from fracturekit.infer.backends.openvino_cpu import precision_hint
    x = ops.parameter([1, 16, 64, 64], np.float32)
    y = ops.convolution(x, ops.constant(np.ones((32, 16, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    compiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU", precision_hint())
    ops_ = compiled.get_runtime_model().get_ops()
    kernels = sorted({op.get_rt_info()["primitiveType"].astype(str) for op in ops_} - {"unknown_f32"})
except ImportError:
    pass
print(json.dumps({"ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"), "openvino": kernels}))
"""

_YOLO_SNIPPET = """
import json, sys, time
from ultralytics import YOLO
from ultralytics.utils import torch_utils
w, folder, imgsz, conf, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
if threads:
    torch_utils.NUM_THREADS = threads
t0 = time.perf_counter()
n = sum(1 for _ in YOLO(w).predict(source=folder, imgsz=imgsz, conf=conf, save=False, stream=True, verbose=False))
dt = time.perf_counter() - t0
import torch
print(json.dumps({"n": n, "seconds": dt, "threads": torch.get_num_threads()}))
"""

_FK_SNIPPET = """
import json, sys, time
from fracturekit.predict import predict
from fracturekit.core.yolo_env import load_ultralytics
load_ultralytics()  # imports torch + Ultralytics before the clock starts, as the yolo snippet's import does
w, folder, imgsz, conf, batch, out = sys.argv[1:7]
t0 = time.perf_counter()
recs = predict(folder, detector=w, out=out, imgsz=int(imgsz), conf=float(conf), batch=int(batch) or None,
               save_images=False, exist_ok=True)  # batch 0: predict's default; exist_ok: --work is reused
dt = time.perf_counter() - t0
import torch
print(json.dumps({"n": len(recs), "seconds": dt, "threads": torch.get_num_threads(),
                  "errors": sum(1 for r in recs if r["error"]), "boxes": sum(r["n_boxes"] for r in recs)}))
"""


def make_weights(work: Path, imgsz: int) -> Path:
    """A random-init (seed 0) YOLOv8n detector saved like a training run's best.pt."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.names = {0: "fracture"}
    model.args = {"imgsz": imgsz, "task": "detect"}
    target = work / "det" / "weights" / "best.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.half(), "train_args": model.args, "epoch": -1}, target)
    return target


def make_images(work: Path, n: int, fracatlas: bool) -> Path:
    """n films in one folder: phantoms cropped to 1024x800 (w x h), or links to FracAtlas JPEGs."""
    import cv2

    from fracturekit.data.phantoms import generate_phantom

    folder = work / "images"
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if fracatlas:
        for p in sorted(FRACATLAS.rglob("*.jpg"))[:n]:
            (folder / p.name).symlink_to(p)
        return folder
    for i in range(n):
        img = generate_phantom(0, i, size=1024).image[112:912]  # 1024 wide x 800 high
        cv2.imwrite(str(folder / f"film_{i:04d}.png"), img)
    return folder


def make_calibration_set(work: Path) -> Path:
    """A small prepared phantom dataset (1024 px films, like the bench images) for int8 calibration."""
    from fracturekit.data.phantoms import write_phantom_dataset
    from fracturekit.prepare import prepare

    root = work / "calib"
    if not (root / "prepared" / "manifest.csv").is_file():
        raw = write_phantom_dataset(root / "raw", n=40, seed=1, size=1024, fmt="coco")
        prepare(raw, root / "prepared", split=(0.8, 0.1, 0.1), seed=0)
    return root / "prepared"


def gflops(weights: Path, shapes: list[tuple[int, int]]) -> dict[str, float]:
    """GFLOPs of one forward pass at each (h, w), counted by thop (2 FLOPs per multiply-add)."""
    import copy

    import thop
    import torch
    from ultralytics import YOLO

    model = YOLO(str(weights)).model.float().eval()
    out = {}
    for h, w in shapes:
        x = torch.zeros(1, 3, h, w)
        macs = thop.profile(copy.deepcopy(model), inputs=(x,), verbose=False)[0]
        out[f"{h}x{w}"] = 2 * macs / 1e9
    return out


_MATMUL_SNIPPET = """
import json, time
import numpy as np
import torch
from fracturekit.core.yolo_env import cpu_threads
n, reps = 2048, 10
torch.set_num_threads(cpu_threads())
out = {}
for lib, a in (("torch", torch.randn(n, n)), ("numpy", np.random.default_rng(0).random((n, n), np.float32))):
    for _ in range(2):
        a @ a
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ a
    out[lib] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9
print(json.dumps(out))
"""


def matmul_gflops(env: dict[str, str]) -> dict[str, float]:
    """Measured float32 matmul throughput (2048x2048) with all allowed threads, torch and numpy (its own BLAS),
    in a process with `env` (the --isa limits)."""
    return run(_MATMUL_SNIPPET, [], env)


def isa_probe(env: dict[str, str]) -> dict:
    """What a measured process with `env` really runs: ONEDNN_MAX_CPU_ISA as it sees it, oneDNN's `isa:` verbose
    line (from a PyTorch convolution) and OpenVINO's convolution kernels (None without openvino)."""
    res = subprocess.run(
        [sys.executable, "-c", _ISA_SNIPPET],
        env={**env, "ONEDNN_VERBOSE": "1"},
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"ISA probe failed:\n{res.stderr[-3000:]}")
    lines = res.stdout.strip().splitlines()
    isa = next((ln.split("isa:", 1)[1] for ln in lines if ln.startswith("onednn_verbose") and "isa:" in ln), None)
    return {**json.loads(lines[-1]), "onednn_isa": isa}


def child_env(isa: str, config_dir: Path) -> dict[str, str]:
    """The environment of every measured process: ours without OMP_NUM_THREADS (Ultralytics picks its own), offline,
    Ultralytics' settings in `config_dir`, and the --isa limits."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return env | {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config_dir), "FRACTUREKIT_OFFLINE": "1"} | ISA_ENV[isa]


def run(snippet: str, args: list[str], env: dict[str, str]) -> dict:
    """Run one backend in a fresh interpreter; its last stdout line is a JSON result."""
    res = subprocess.run(
        [sys.executable, "-c", snippet, *args], env=env, capture_output=True, text=True, cwd=REPO, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"backend failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def median_run(results: list[dict]) -> dict:
    """The run of median seconds among `results` (an odd count), with every run's seconds as `runs_s`."""
    ordered = sorted(results, key=lambda r: r["seconds"])
    return ordered[len(ordered) // 2] | {"runs_s": [r["seconds"] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--batch", default="8", help="fracturekit batch size(s), comma-separated: one row each")
    ap.add_argument("--fracatlas", action="store_true", help="use FracAtlas images instead of phantoms")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--isa", choices=sorted(ISA_ENV), default="native", help="limit the measured processes to AVX2")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the ratio's row, an odd number; its median is used")
    a = ap.parse_args()
    if a.repeat < 1 or a.repeat % 2 == 0:
        raise SystemExit(f"--repeat {a.repeat}: give an odd number of runs (1, 3, 5), so that one run is the median.")
    if a.fracatlas and not FRACATLAS.is_dir():
        raise SystemExit(f"{FRACATLAS}: absent; run without --fracatlas to use phantoms.")
    work = a.work or Path(tempfile.mkdtemp(prefix="fk-predict-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "ultralytics-config"
    os.environ["YOLO_CONFIG_DIR"] = str(cfg)  # keep Ultralytics' settings out of $HOME
    base_env = child_env(a.isa, cfg)

    from fracturekit.core.yolo_env import cpu_threads, load_ultralytics
    from fracturekit.export import export
    from fracturekit.infer.preprocess import rect_shape

    load_ultralytics()
    weights = make_weights(work, a.imgsz)
    folder = make_images(work, a.n, a.fracatlas)
    from fracturekit.core.device import CpuInfo, cpu_info
    from fracturekit.infer.model import EXPORTS, VARIANTS

    calib = make_calibration_set(work)
    wanted = {"onnx": {}, "onnx-int8": {"int8": True, "data": calib}}
    if importlib.util.find_spec("openvino") is not None:
        wanted |= {"openvino": {}, "openvino-int8": {"int8": True, "data": calib}}
    exports = {}
    for name, kw in wanted.items():  # the weights are re-made identical (seed 0): exports in --work are reused
        target = weights.parent / EXPORTS[name]
        fmt = name.split("-")[0]
        exports[name] = target if target.exists() else export(weights, fmt, imgsz=a.imgsz, check=False, **kw)
    here = cpu_info()
    if a.isa == "avx2":  # ranked as on a CPU with AVX2 alone, which is what the measured processes see
        here = CpuInfo(here.model, tuple(f for f in here.flags if f == "avx2"))
    ranks = {name: VARIANTS[name][0].rank(VARIANTS[name][1], here) for name in exports}
    chosen = min((n for n in exports if ranks[n] is not None), key=lambda n: ranks[n])  # `_fallback_rank` on `here`
    import cv2

    first = cv2.imread(str(sorted(folder.iterdir())[0]), cv2.IMREAD_GRAYSCALE)
    rect = rect_shape(*first.shape, a.imgsz, 32)
    flops = gflops(weights, [(a.imgsz, a.imgsz), rect])
    peak = matmul_gflops(base_env)
    probe = isa_probe(base_env)
    cores = cpu_threads()

    common = [str(a.imgsz), str(a.conf)]
    yolo_args = [str(weights), str(folder), *common]
    rows = [
        ("yolo predict (Ultralytics defaults)", run(_YOLO_SNIPPET, [*yolo_args, "0"], base_env)),
        ("yolo predict (all threads)", run(_YOLO_SNIPPET, [*yolo_args, str(cores)], base_env)),
    ]
    for bs in [int(b) for b in a.batch.split(",")]:
        for label, w in (("PyTorch", weights), ("ONNX", exports["onnx"])):
            out = work / f"out_{w.suffix[1:]}_{bs}"
            result = run(_FK_SNIPPET, [str(w), str(folder), *common, str(bs), str(out)], base_env)
            rows.append((f"fracturekit predict ({label}, batch {bs})", result))
    labels = {"onnx-int8": "ONNX int8", "openvino": "OpenVINO default", "openvino-int8": "OpenVINO int8"}
    for name, w in exports.items():
        if name == "onnx" and "1" in a.batch.split(","):
            continue  # already a row
        out = work / f"out_{name}"
        args = [str(w), str(folder), *common, "0", str(out)]  # predict's default batch
        result = run(_FK_SNIPPET, args, base_env)
        if name == chosen and a.repeat > 1:
            result = median_run([result] + [run(_FK_SNIPPET, args, base_env) for _ in range(a.repeat - 1)])
        rows.append((f"fracturekit predict ({labels.get(name, 'ONNX')}, default batch)", result))
        if name == chosen:
            chosen_row = rows[-1][0]

    if chosen == "onnx" and "1" in a.batch.split(","):
        chosen_row = "fracturekit predict (ONNX, batch 1)"  # measured once, as a --batch row
    # The reference again, last: on a shared machine the load drifts during a run; its mean is the base
    rows.append(("yolo predict (Ultralytics defaults), again", run(_YOLO_SNIPPET, [*yolo_args, "0"], base_env)))
    films = f"{a.n} phantom films {first.shape[1]}x{first.shape[0]}"
    print(cpu_info().line)
    limits = " ".join(f"{k}={v}" for k, v in ISA_ENV[a.isa].items()) or "none"
    print(f"--isa {a.isa}: measured processes run with {limits}")
    print(f"  oneDNN (PyTorch conv) isa: {probe['onednn_isa']}; OpenVINO conv kernels: {probe['openvino']}")
    if a.isa != "native":
        print("  ONNX Runtime has no ISA limit (MLAS dispatches on CPUID): its rows still use this CPU's full ISA")
    src = f"FracAtlas (first {a.n} JPEGs)" if a.fracatlas else films
    print(f"images: {src}; model: YOLOv8n-det random init (seed 0), imgsz {a.imgsz}, conf {a.conf}")
    mm = ", ".join(f"{k} {v:.1f}" for k, v in peak.items())
    print(f"cores allowed: {cores}; CPU float32 matmul 2048x2048, GFLOP/s: {mm}")
    print("model GFLOPs per image: " + ", ".join(f"{k}: {v:.2f}" for k, v in flops.items()))
    gf_rect = flops[f"{rect[0]}x{rect[1]}"]
    base = (rows[0][1]["n"] / rows[0][1]["seconds"] + rows[-1][1]["n"] / rows[-1][1]["seconds"]) / 2
    print("ratio base: the mean img/s of the two Ultralytics-defaults rows (first and last)")
    print(f"{'backend':56s} {'threads':>7s} {'images':>6s} {'seconds':>8s} {'img/s':>7s} {'ratio':>6s} {'GFLOP/s':>8s}")
    for label, r in rows:
        ips = r["n"] / r["seconds"]
        print(
            f"{label:56s} {r['threads']:7d} {r['n']:6d} {r['seconds']:8.2f} {ips:7.2f} {ips / base:6.2f} "
            f"{ips * gf_rect:8.1f}"
        )
    where = "of the first film (FracAtlas sizes vary)" if a.fracatlas else "every backend uses here"
    print(f"(GFLOP/s = img/s x {gf_rect:.2f} GFLOPs at the {rect[0]}x{rect[1]} letterbox {where})")
    rate = max(peak.values())
    ceiling = rate / gf_rect  # every FLOP at the best matmul rate: no float32 backend gets past this
    print(f"float32 ceiling (all FLOPs at {rate:.1f} GFLOP/s): {ceiling:.2f} img/s = {ceiling / base:.2f}x reference")
    best = max(rows[2:-1], key=lambda row: row[1]["n"] / row[1]["seconds"])[0]
    print(f"fastest row: {best}")
    print(f"backend predict prefers on this CPU: {chosen} ({EXPORTS[chosen]}) -> row: {chosen_row}")
    picked = next(r for label, r in rows if label == chosen_row)
    if "runs_s" in picked:
        runs = ", ".join(f"{t:.2f}" for t in picked["runs_s"])
        print(f"{chosen_row}: {len(picked['runs_s'])} runs of {runs} s; the row is their median")
    print(f"ratio_vs_yolo_predict: {picked['n'] / picked['seconds'] / base:.2f}")


if __name__ == "__main__":
    main()
