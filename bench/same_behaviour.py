"""Before/after behaviour fingerprint: run it on two commits of fracturekit and compare the two JSON files.

    PYTHONPATH=<checkout> python bench/same_behaviour.py --out DIR [--fracatlas ../shared/data/fracatlas]
    python bench/same_behaviour.py --compare A.json B.json

The first form writes DIR/fingerprint.json with what a refactor must not change, each produced by the
`fracturekit` CLI of the checkout on PYTHONPATH (run as a subprocess, so the code under test is the one imported):
- `prepare` of FracAtlas (the shared data's copy): its `data_hash` and the film counts per split and class;
- the `--help` text of `fracturekit` and of every command (COLUMNS fixed at 120);
- a tiny seeded run on phantoms (fracturekit.data.phantoms: 60 films of 64 px, CPU, 2 epochs, imgsz 64): the phantom
  dataset's data_hash and every number in evaluate's metrics.json (times, dates and paths left out).
The second form prints each key whose value differs and exits 1 if any does, 0 if none. It is not a timing bench.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# Keys of metrics.json whose values depend on the machine, the clock or the folder, not on the code's behaviour.
VOLATILE = {"data", "out", "run", "path", "csv", "date", "versions", "detections", "ground_truth", "device", "threads"}
CLI = "from fracturekit.cli import main; main()"
ALL_PARTS = {"help", "fracatlas", "phantoms"}


def _env(home: Path) -> dict[str, str]:
    """The environment of every fracturekit subprocess: offline, Ultralytics' settings inside `home`, fixed width."""
    env = dict(os.environ)
    env.update(
        FRACTUREKIT_OFFLINE="1",
        YOLO_OFFLINE="1",
        YOLO_CONFIG_DIR=str(home / "yolo-cfg"),
        MPLCONFIGDIR=str(home / "mpl"),
        COLUMNS="120",
        TERM="dumb",
        NO_COLOR="1",
        CUDA_VISIBLE_DEVICES="",
    )
    return env


def _fk(args: list[str], env: dict[str, str], check: bool = True) -> str:
    """Run `fracturekit ARGS` with the checkout on PYTHONPATH; its stdout (stderr on failure)."""
    proc = subprocess.run([sys.executable, "-c", CLI, *args], env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"fracturekit {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _commands(env: dict[str, str]) -> list[list[str]]:
    """Every command path of the Typer app, sub-commands of groups included."""
    code = (
        "import json, typer\n"
        "from fracturekit.cli.app import app\n"
        "def walk(cmd, path):\n"
        "    out = [path]\n"
        "    if hasattr(cmd, 'commands'):  # typer vendors click: no isinstance(cmd, click.Group)\n"
        "        for name, sub in sorted(cmd.commands.items()):\n"
        "            out += walk(sub, path + [name])\n"
        "    return out\n"
        "print(json.dumps(walk(typer.main.get_command(app), [])))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """The leaves of a metrics.json as {dotted.key: value}, without the volatile keys (VOLATILE, `*_s` timings)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k) in VOLATILE or str(k).endswith("_s"):
                continue
            out.update(_leaves(v, f"{prefix}{k}."))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = value
    return out


def _prepared(dataset: Path) -> dict[str, Any]:
    """data_hash and counts of a prepared dataset, from its prepare.json."""
    summary = json.loads((dataset / "prepare.json").read_text(encoding="utf-8"))
    counts = {k: summary[k] for k in ("counts", "splits", "images", "n_images") if k in summary}
    return {"data_hash": summary.get("data_hash"), **counts}


def fingerprint(out: Path, fracatlas: Path | None, epochs: int, parts: set[str]) -> dict[str, Any]:
    """Run the checks of `parts` (help, fracatlas, phantoms, metrics) into `out`; the fingerprint as a dict."""
    env = _env(out)
    result: dict[str, Any] = {}
    if "help" in parts:
        result["help"] = {" ".join(["fracturekit", *c]): _fk([*c, "--help"], env) for c in _commands(env)}
    if fracatlas is not None and "fracatlas" in parts:
        _fk(["prepare", str(fracatlas), "--out", str(out / "fracatlas")], env)
        result["prepare_fracatlas"] = _prepared(out / "fracatlas")
    if "phantoms" in parts:
        result.update(_phantom_run(out, env, epochs))
    elif "metrics" in parts:  # evaluate's metrics.json of an earlier phantom run, read again
        result["evaluate_phantoms"] = _metrics(out)
    return result


def _phantom_run(out: Path, env: dict[str, str], epochs: int) -> dict[str, Any]:
    """Phantoms prepared, a classifier and a detector trained (seeded, CPU), evaluated: the numbers."""
    result: dict[str, Any] = {}
    from fracturekit.data.phantoms import write_phantom_dataset

    raw = write_phantom_dataset(out / "phantoms-raw", n=60, seed=1, size=64, fmt="coco")
    _fk(["prepare", str(raw), "--out", str(out / "phantoms"), "--split", "0.6,0.2,0.2", "--seed", "0"], env)
    result["prepare_phantoms"] = _prepared(out / "phantoms")
    # Tiny on purpose: the point is the same numbers before and after, not good ones.
    common = ["--data", str(out / "phantoms"), "--project", str(out / "runs"), "--epochs", str(epochs)]
    common += ["--imgsz", "64", "--batch", "8", "--device", "cpu", "--model", "n", "--seed", "0", "--threads", "1"]
    _fk(["train", "--task", "classify", "--name", "cls", *common], env)
    _fk(["train", "--task", "detect", "--name", "det", *common], env)
    _fk(
        [
            "evaluate", "--data", str(out / "phantoms"), "--classifier", str(out / "runs" / "classify" / "cls"),
            "--detector", str(out / "runs" / "detect" / "det"), "--out", str(out / "eval"), "--device", "cpu",
            "--bootstrap", "200",
        ],
        env,
    )  # fmt: skip
    result["evaluate_phantoms"] = _metrics(out)
    return result


def _metrics(out: Path) -> dict[str, Any]:
    return _leaves(json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8")))


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k} / "))
        return out
    return {prefix.removesuffix(" / "): value}


def compare(a: Path, b: Path) -> int:
    """Print the keys whose values differ between two fingerprints; 1 if any does, else 0."""
    fa, fb = (_flat(json.loads(p.read_text(encoding="utf-8"))) for p in (a, b))
    differ = 0
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, "<absent>"), fb.get(key, "<absent>")
        if va == vb:
            continue
        differ += 1
        if isinstance(va, str) and isinstance(vb, str) and "\n" in va + vb:
            import difflib

            diff = difflib.unified_diff(va.splitlines(), vb.splitlines(), str(a), str(b), lineterm="", n=1)
            print(f"DIFFERS {key}:\n" + "\n".join(diff))
        else:
            print(f"DIFFERS {key}: {va!r} -> {vb!r}")
    print(f"{len(set(fa) | set(fb))} keys compared, {differ} differ")
    return 1 if differ else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="Folder for the fingerprint and the runs it makes (new or empty).")
    ap.add_argument("--fracatlas", type=Path, default=SHARED / "fracatlas", help="FracAtlas folder ('' to skip).")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument(
        "--parts",
        default="help,fracatlas,phantoms",
        help="Which checks to run (comma list; metrics: re-read an earlier run's metrics.json).",
    )
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"))
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        ap.error("--out or --compare is required")
    out = (args.out if args.out.is_absolute() else Path.cwd() / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    fracatlas = args.fracatlas if str(args.fracatlas) not in ("", ".") and args.fracatlas.is_dir() else None
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    # A partial run updates an earlier fingerprint in the same folder (e.g. --parts help after a fix).
    earlier = out / "fingerprint.json"
    result = json.loads(earlier.read_text(encoding="utf-8")) if earlier.is_file() and parts != ALL_PARTS else {}
    result.update(fingerprint(out, fracatlas, args.epochs, parts))
    (out / "fingerprint.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {out / 'fingerprint.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
