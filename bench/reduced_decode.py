"""What predict's reduced JPEG decode does to accuracy: a classifier's AUROC on FracAtlas films, full vs reduced.

predict decodes a JPEG at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling) when its short side stays >= the model's
imgsz (`fracturekit.data.imageio.jpeg_reduction`). This scores the same films twice with the same classifier, through
the inference core predict uses (`fracturekit.infer.scoring.stream`): once at full size (`--full-size`, as
`evaluate` decodes) and once reduced, and prints both AUROCs and their difference (the issue's bar: <= 0.002),
how many films each reduction touched, the largest score change and the decisions at 0.5 that flipped.

Films: a seeded sample of --n FracAtlas JPEGs, half from `images/Fractured`, half from `images/Non_fractured`
(label = folder). FracAtlas films are mostly 373x454 (351 were downscaled to 1,024 px long side when copied
here), so a small imgsz (128, 160) is what makes them reducible; at 640 none is. The comparison is paired (the
same films, the same model), so a classifier trained on some of these films still measures the decode's effect.

Usage: .venv/bin/python bench/reduced_decode.py --classifier RUN [--n 400] [--imgsz 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRACATLAS = REPO.parent / "shared" / "data" / "fracatlas" / "images"


def films(n: int, seed: int) -> tuple[list[Path], list[int]]:
    """n // 2 fractured and n - n // 2 non-fractured FracAtlas JPEGs, sampled with `seed`; their labels."""
    rng = random.Random(seed)
    pos = rng.sample(sorted((FRACATLAS / "Fractured").glob("*.jpg")), n // 2)
    neg = rng.sample(sorted((FRACATLAS / "Non_fractured").glob("*.jpg")), n - n // 2)
    return pos + neg, [1] * len(pos) + [0] * len(neg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classifier", required=True, help="a classifier run folder or weights")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not FRACATLAS.is_dir():
        raise SystemExit(f"{FRACATLAS}: absent; this bench needs FracAtlas (see ../shared/data/README.md).")
    import numpy as np

    from fracturekit.core.device import cpu_info
    from fracturekit.data.imageio import image_header, jpeg_reduction
    from fracturekit.evaluation.metrics import auroc
    from fracturekit.infer.model import load_model
    from fracturekit.infer.scoring import Scorer, stream

    paths, labels = films(a.n, a.seed)
    clf = load_model(a.classifier, "classify", a.imgsz)
    scorer = Scorer.build(None, clf)
    if scorer.pos_idx is None:
        raise SystemExit(f"{clf.weights}: the classifier has no positive class")
    scores: dict[str, np.ndarray] = {}
    decoded: Counter[int] = Counter()  # films per reduction the decode applied
    with ThreadPoolExecutor(2) as pool:
        for mode, side in (("full", None), ("reduced", clf.imgsz)):
            out = [p for preds in stream(scorer, paths, pool, 8, min_side=side) for p in preds]
            if errors := [p for p in out if p.error]:
                raise SystemExit(f"{errors[0].path}: {errors[0].error}")
            scores[mode] = np.array([p.probs_raw[scorer.pos_idx] for p in out])  # type: ignore[index]
            if side is not None:
                decoded.update(p.reduction for p in out)
    rule = Counter(jpeg_reduction(*image_header(p).display_size, clf.imgsz) for p in paths)  # from the headers
    y = np.array(labels)
    full, reduced = auroc(y, scores["full"]), auroc(y, scores["reduced"])
    delta = np.abs(scores["reduced"] - scores["full"])
    flips = int(((scores["reduced"] >= 0.5) != (scores["full"] >= 0.5)).sum())
    print(cpu_info().line)
    print(f"classifier: {clf.weights} ({clf.label}), imgsz {clf.imgsz}")
    print(f"films: {len(paths)} FracAtlas JPEGs ({sum(labels)} fractured), seed {a.seed}")
    counts = ", ".join(f"1/{k}: {v}" for k, v in sorted(decoded.items()))
    print(f"films per decode size (short side kept >= {clf.imgsz}): {counts}")
    if decoded != rule:  # truncated JPEGs (FracAtlas has some) and other types keep their full-size decode
        print(f"  (the size rule alone, from the headers: {', '.join(f'1/{k}: {v}' for k, v in sorted(rule.items()))})")
    print(f"score change |reduced - full|: mean {delta.mean():.4f}, max {delta.max():.4f}")
    print(f"decisions at 0.5 flipped: {flips} of {len(paths)}")
    print(f"AUROC full decode:    {full:.4f}")
    print(f"AUROC reduced decode: {reduced:.4f}")
    print(f"auroc_change: {reduced - full:+.4f} (bar: |change| <= 0.002)")
    sys.exit(0 if abs(reduced - full) <= 0.002 else 1)


if __name__ == "__main__":
    main()
