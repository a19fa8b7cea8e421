"""The demo's numbers under emulated machine differences: where two machines of one kind diverge.

Only one machine is at hand, so "another machine" is emulated by what differs between 2-core machines of one kind
(each variant runs `fracturekit.demo.run_demo` in its own Python process, one after the other, same seed):

- `native`: as `make demo` runs here (oneDNN at the CPU's own ISA, bf16 autocast + channels_last on a BF16 CPU,
  every allowed core).
- `avx2`: oneDNN (PyTorch's convolutions), MKL and OpenBLAS limited to AVX2 before torch loads (`ISA_ENV["avx2"]` of
  bench/predict_bench.py), as on a CPU of the same family without AVX-512.
- `no-bf16`: bf16 autocast and channels_last off (`fracturekit.train._cpu_speed` answers no), as on a CPU without
  native bf16.
- `threads1`: the process may run on one core only (`sched_setaffinity`), so training uses one torch thread, as
  `--threads 1` or a 1-core container.

`--deterministic` runs every variant with `run_demo(deterministic=True)` (train's `--deterministic`). Printed per
variant: the headline metrics, the training seconds and mean s/epoch of both runs, and a digest of each model's
trained weights (the float tensors of best.pt's model, bytes hashed), so "identical" means bit for bit.

Usage: .venv/bin/python bench/demo_variants.py [--fast] [--deterministic] [--variants native,avx2,no-bf16,threads1]
       [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from predict_bench import ISA_ENV  # noqa: E402  (the one definition of the AVX2 limits)

VARIANT_ENV = {"native": {}, "avx2": ISA_ENV["avx2"], "no-bf16": {}, "threads1": {}}

_CHILD = """
import hashlib, json, os, sys
variant, out, fast, deterministic = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
if variant == "threads1":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
if variant == "no-bf16":
    import fracturekit.train as train_module
    train_module._cpu_speed = lambda cfg, device: (False, False)
from fracturekit.demo import run_demo
result = run_demo(out, fast=fast, deterministic=deterministic)
import torch

def digest(run):
    ckpt = torch.load(f"{run}/weights/best.pt", map_location="cpu", weights_only=False)
    h = hashlib.sha256()
    for name, t in ckpt["model"].float().state_dict().items():
        if t.dtype.is_floating_point:
            h.update(name.encode()); h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]

def epochs(run):
    rec = json.loads(open(f"{run}/run.json").read())
    return {"mean_epoch_s": rec["timings"]["mean_epoch_s"], "threads": rec["threads"], "pipeline_bf16":
            rec["pipeline"].get("cpu_bf16_autocast"), "deterministic": rec.get("deterministic")}

m = result.metrics
print(json.dumps({
    "classifier_auroc": m["classification"]["auroc"],
    "detector_map50_95": m["detection"]["map50_95"],
    "detector_map50": m["detection"]["map50"],
    "detector_image_auroc": m["detection"]["image_auroc"],
    "train_s": result.timings["train"],
    "classifier": {**epochs(result.classifier), "weights": digest(result.classifier)},
    "detector": {**epochs(result.detector), "weights": digest(result.detector)},
}))
"""


def run_variant(variant: str, work: Path, fast: bool, deterministic: bool) -> dict:
    """One demo in a fresh interpreter with the variant's environment; its last stdout line is the JSON result."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"FRACTUREKIT_OFFLINE": "1"}
    env |= VARIANT_ENV[variant]
    args = [variant, str(work / variant), "1" if fast else "0", "1" if deterministic else "0"]
    res = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True, cwd=REPO, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fast", action="store_true", help="the demo's --fast sizes (seconds; numbers mean nothing)")
    ap.add_argument("--deterministic", action="store_true", help="train with --deterministic")
    ap.add_argument("--variants", default=",".join(VARIANT_ENV), help="comma-separated: " + ", ".join(VARIANT_ENV))
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    a = ap.parse_args()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANT_ENV))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {sorted(VARIANT_ENV)}")
    work = a.work or Path(tempfile.mkdtemp(prefix="fk-demo-variants-"))
    print(f"demo {'--fast' if a.fast else '(full)'}{' --deterministic' if a.deterministic else ''}, work {work}")
    head = f"{'variant':10} {'cls AUROC':>9} {'mAP50-95':>8} {'mAP50':>6} {'img AUROC':>9} {'train s':>7}"
    print(f"{head} {'det s/ep':>8} {'cls s/ep':>8}  weights det/cls")
    for variant in variants:
        r = run_variant(variant, work, a.fast, a.deterministic)
        print(
            f"{variant:10} {r['classifier_auroc']:9.4f} {r['detector_map50_95']:8.4f} {r['detector_map50']:6.4f} "
            f"{r['detector_image_auroc']:9.4f} {r['train_s']:7.1f} {r['detector']['mean_epoch_s']:8.2f} "
            f"{r['classifier']['mean_epoch_s']:8.2f}  {r['detector']['weights']}/{r['classifier']['weights']}",
            flush=True,
        )
        print("  " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
