"""A torchvision ResNet-18 trained outside fracturekit, judged by fracturekit: the plumbing, not a good model.

Trains from scratch on the CPU (no pretrained weights: nothing is downloaded) and writes the fracture
probability of every val and test film as `path,score`, the CSV `fracturekit evaluate --scores` and
`fracturekit cv --scores` read.

    # on a prepared dataset's split: train on cls/train, score cls/val and cls/test
    python examples/resnet18_scores.py --data datasets/fracatlas --out resnet18.csv
    fracturekit evaluate --data datasets/fracatlas --scores resnet18.csv --name resnet18 --out runs/eval-resnet18

    # on one fold of `fracturekit cv --export-folds folds/`: train on train.csv, score val.csv and test.csv
    python examples/resnet18_scores.py --fold folds/fold0 --out oof/fold0.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

POSITIVE = "fracture"  # the class whose probability is written as `score`


def prepared_split(data: Path, split: str) -> list[tuple[str, Path, int]]:
    """(name for the CSV, image file, 1 if fractured) for cls/<split>/<class>/* of a prepared dataset."""
    return [
        (f.relative_to(data).as_posix(), f, int(f.parent.name == POSITIVE))
        for f in sorted((data / "cls" / split).glob("*/*"))
        if f.is_file()
    ]


def fold_list(fold: Path, split: str) -> list[tuple[str, Path, int]]:
    """The same from an exported fold list: `path` names the film, `file` is the image, `label` its class."""
    with (fold / f"{split}.csv").open(newline="") as f:
        return [(r["path"], Path(r["file"]), int(r["label"] == POSITIVE)) for r in csv.DictReader(f)]


def load(files: list[Path], imgsz: int) -> torch.Tensor:
    """Grey films as (N, 3, imgsz, imgsz) tensors scaled to about [-1, 1] (ResNet wants three channels)."""
    arrays = [np.asarray(Image.open(f).convert("L").resize((imgsz, imgsz)), np.float32) / 127.5 - 1 for f in files]
    return torch.from_numpy(np.stack(arrays))[:, None].repeat(1, 3, 1, 1)


def train(films: list[tuple[str, Path, int]], imgsz: int, epochs: int, seed: int) -> torch.nn.Module:
    """ResNet-18 from scratch, Adam, class-weighted cross-entropy, horizontal flips."""
    torch.manual_seed(seed)
    x = load([f for _, f, _ in films], imgsz)
    y = torch.tensor([label for _, _, label in films])
    model = torchvision.models.resnet18(weights=None, num_classes=2)
    weight = len(y) / (2 * torch.bincount(y, minlength=2).clamp(min=1).float())
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(16):
            batch = x[idx]
            flip = torch.rand(len(idx)) < 0.5
            batch[flip] = batch[flip].flip(-1)
            opt.zero_grad()
            loss_fn(model(batch), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def scores(model: torch.nn.Module, films: list[tuple[str, Path, int]], imgsz: int) -> list[float]:
    """The fracture probability of each film (softmax of the two logits)."""
    out = []
    for i in range(0, len(films), 64):
        x = load([f for _, f, _ in films[i : i + 64]], imgsz)
        out += torch.softmax(model(x), dim=1)[:, 1].tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a dataset written by `fracturekit prepare`")
    src.add_argument("--fold", type=Path, help="one fold folder of `fracturekit cv --export-folds`")
    ap.add_argument("--out", type=Path, required=True, help="the scores CSV to write (path,score)")
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    split = (lambda s: prepared_split(args.data, s)) if args.data else (lambda s: fold_list(args.fold, s))
    model = train(split("train"), args.imgsz, args.epochs, args.seed)
    scored = split("val") + split("test")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "score"])
        w.writerows((name, repr(p)) for (name, _, _), p in zip(scored, scores(model, scored, args.imgsz), strict=True))
    print(f"wrote {len(scored)} scores to {args.out}")


if __name__ == "__main__":
    main()
