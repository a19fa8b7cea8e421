"""evaluate's seen-film check with the augmented-copy test: a run keeps its films' copy signatures beside seen.csv
(seen_copies.npz, fracturekit.training.seen_copies), so a rotated/cropped/re-exposed copy of a training film in
another dataset is refused like an exact one; a run without the file keeps the hashes-only check."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fracturekit.core.errors import UserError
from fracturekit.core.layout import PreparedDataset
from fracturekit.data.copies import signature, verify
from fracturekit.data.phantoms import generate_phantom, write_phantom_dataset
from fracturekit.data.signature_file import MAX_KEYPOINTS, read_signatures
from fracturekit.evaluate import evaluate
from fracturekit.prepare import prepare
from fracturekit.train import train
from fracturekit.training import seen_copies
from fracturekit.training.provenance import write_seen
from fracturekit.training.seen_copies import SEEN_COPIES_FILE, write_seen_copies

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from augcopies import augment_copy  # noqa: E402


@pytest.fixture(scope="module")
def copy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, run): 24 phantoms of 192 px prepared, and a one-epoch classifier at imgsz 32 trained on them.
    192 px, not conftest's 64: a 64 px film has too few SIFT keypoints for any copy test."""
    tmp = tmp_path_factory.mktemp("seen-copies")
    raw = write_phantom_dataset(tmp / "raw", n=24, seed=11, size=192, fmt="coco")
    prepare(raw, tmp / "ds", split=(0.6, 0.2, 0.2), seed=0, runs_dir=None)
    run = train(
        task="classify", data=tmp / "ds", project=str(tmp / "runs"), name="tiny", epochs=1, imgsz=32, batch=8
    ).root
    return tmp / "ds", run


def _other_dataset(root: Path, copy_of: Path | None) -> Path:
    """train|val|test/<class>/ folders of phantoms the run never saw; test/fracture/ also holds an augmented copy
    (rotated, cropped, re-exposed, JPEG-encoded: bench/augcopies.py, seeded) of `copy_of` when given."""
    for split, n in (("train", 4), ("val", 6), ("test", 6)):
        for k in range(n):
            label = "fracture" if k % 2 else "no_fracture"
            (root / split / label).mkdir(parents=True, exist_ok=True)
            ph = generate_phantom(seed=50 + len(split), index=k, size=192, fracture_prob=1.0 if k % 2 else 0.0)
            cv2.imwrite(str(root / split / label / f"{split}_{k}.png"), ph.image)
    if copy_of is not None:
        film = cv2.imread(str(copy_of), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(root / "test" / "fracture" / "augmented.jpg"), augment_copy(film, np.random.default_rng(0)))
    return root


def _train_film(ds: Path, run: Path) -> str:
    seen = pd.read_csv(run / "seen.csv")
    return str(seen[seen["split"] == "train"]["path"].iloc[0])


def test_an_augmented_copy_of_a_training_film_is_refused(copy_run: tuple[Path, Path], tmp_path: Path) -> None:
    ds, run = copy_run
    film = _train_film(ds, run)
    other = tmp_path / "ds2"
    prepare(_other_dataset(tmp_path / "kaggle", ds / film), other, keep_splits=True, runs_dir=None)
    with pytest.raises(UserError) as refused:
        evaluate(other, classifier=run, bootstrap=20, out=tmp_path / "eval", device="cpu")
    said = str(refused.value)
    # the sentence evaluate gives an exact copy, naming the scored film and the training film it copies
    assert said.startswith(f"1 of the 7 test films of {other}") and f"that {run} trained or validated on" in said
    assert f"test/fracture/augmented.jpg = train film {film}" in said and "--allow-overlap" in said
    assert not (tmp_path / "eval").exists()  # refused before anything was written


def test_the_same_dataset_without_the_copy_is_scored(copy_run: tuple[Path, Path], tmp_path: Path) -> None:
    ds, run = copy_run
    other = tmp_path / "ds2"
    prepare(_other_dataset(tmp_path / "kaggle", None), other, keep_splits=True, runs_dir=None)
    m = evaluate(other, classifier=run, bootstrap=20, out=tmp_path / "eval", device="cpu", cases=0)
    prov = m["provenance"]
    assert prov["train_overlap"] == 0 and m["classification"]["n"] == 6
    assert prov["runs"]["classifier"]["seen_copies_checked"] is True  # the copy test ran, and found nothing


def test_a_run_without_the_sidecar_keeps_the_hash_check(copy_run: tuple[Path, Path], tmp_path: Path) -> None:
    # a run trained before seen_copies.npz existed: exact and near copies only, as before; the augmented copy
    # is not seen (the reason for the sidecar), and metrics.json says copies were not looked for
    ds, run = copy_run
    old = Path(shutil.copytree(run, tmp_path / "old-run"))
    (old / SEEN_COPIES_FILE).unlink()
    other = tmp_path / "ds2"
    prepare(_other_dataset(tmp_path / "kaggle", ds / _train_film(ds, run)), other, keep_splits=True, runs_dir=None)
    m = evaluate(other, classifier=old, bootstrap=20, out=tmp_path / "eval", device="cpu", cases=0)
    run_prov = m["provenance"]["runs"]["classifier"]
    assert m["provenance"]["train_overlap"] == 0 and run_prov["seen_checked"] is True
    assert run_prov["seen_copies_checked"] is False


def test_on_its_own_dataset_the_split_prepare_made_stands(copy_run: tuple[Path, Path], tmp_path: Path) -> None:
    # prepare's audit ran the copy test over the whole dataset and split by it: evaluate does not search again
    # (on FracAtlas a second search over train+val and test linked 36 borderline test films), hashes only
    ds, run = copy_run
    m = evaluate(ds, classifier=run, bootstrap=20, out=tmp_path / "eval", device="cpu", cases=0)
    run_prov = m["provenance"]["runs"]["classifier"]
    assert m["provenance"]["train_overlap"] == 0 and run_prov["same_data"] is True
    assert run_prov["seen_checked"] is True and run_prov["seen_copies_checked"] is False


def test_the_sidecar_keeps_what_the_copy_test_needs(copy_run: tuple[Path, Path], tmp_path: Path) -> None:
    ds, run = copy_run
    seen = pd.read_csv(run / "seen.csv")
    stored = read_signatures(run / SEEN_COPIES_FILE)
    assert stored is not None and sorted(stored) == sorted(seen["path"])  # one signature per seen film
    film = cv2.imread(str(ds / seen["path"].iloc[0]), cv2.IMREAD_GRAYSCALE)
    kept, fresh = stored[seen["path"].iloc[0]], signature(film)
    assert np.array_equal(kept.thumb, fresh.thumb) and kept.width == fresh.width  # the PNG thumbnail is lossless
    assert np.abs(kept.points - fresh.points[: len(kept.points)]).max() <= 0.125 or len(fresh.points) > MAX_KEYPOINTS
    copy = signature(augment_copy(film, np.random.default_rng(0)))
    assert any(verify(copy, kept, m).is_copy or verify(kept, copy, m).is_copy for m in (False, True))


def test_keypoints_are_capped_and_points_stored_as_float16(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (400, 400)).astype(np.uint8)
    big = cv2.GaussianBlur(noise, (0, 0), 2)  # blobs everywhere: SIFT finds its 400, more than MAX_KEYPOINTS
    cv2.imwrite(str(tmp_path / "big.png"), big)
    write_seen_copies(tmp_path / "s.npz", ["big.png", "missing.png"], tmp_path)
    stored = read_signatures(tmp_path / "s.npz")
    assert stored is not None and len(signature(big).points) > MAX_KEYPOINTS
    assert len(stored["big.png"].points) == MAX_KEYPOINTS and stored["big.png"].descriptors.dtype == np.uint8
    assert stored["missing.png"].empty  # an unreadable film: no signature, the search skips it
    assert read_signatures(tmp_path / "big.png") is None  # not an npz: hashes only


def _same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(
        np.array_equal(a[k].points, b[k].points)
        and np.array_equal(a[k].descriptors, b[k].descriptors)
        and np.array_equal(a[k].thumb, b[k].thumb)
        and a[k].width == b[k].width
        for k in a
    )


def test_train_takes_the_signatures_prepare_made(
    copy_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare keeps its films' signatures (signatures.npz, by manifest source); a run's seen_copies.npz built from
    them, signing nothing, holds what signing its films again gives."""
    ds, run = copy_run
    data = PreparedDataset(ds)
    stored = read_signatures(data.signatures)
    manifest = pd.read_csv(data.manifest, keep_default_na=False)
    assert stored is not None and sorted(stored) == sorted(manifest[manifest["status"] == "ok"]["source"])
    seen = pd.read_csv(run / "seen.csv")
    signed = tmp_path / "signed.npz"
    write_seen_copies(signed, list(seen["path"]), ds)  # every film signed from its file
    taken = tmp_path / "taken"
    taken.mkdir()
    monkeypatch.setattr(seen_copies, "_film_signature", lambda path: pytest.fail(f"{path} was signed again"))
    write_seen(taken, data, "classify")
    assert _same(read_signatures(taken / SEEN_COPIES_FILE), read_signatures(signed))  # type: ignore[arg-type]


def test_pixel_twins_get_their_twins_signature_and_clahe_keeps_none(tmp_path: Path) -> None:
    """A byte twin and a PNG of a JPEG's pixels are signed once by prepare's decode; signatures.npz still holds
    an entry for each. With --clahe the films written are not the pixels signed: no file, train signs them."""
    raw = tmp_path / "raw"
    for k in range(6):
        label = "fracture" if k % 2 else "no_fracture"
        (raw / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(raw / label / f"f{k}.jpg"), generate_phantom(seed=4, index=k, size=192).image)
    shutil.copy(raw / "fracture" / "f1.jpg", raw / "fracture" / "f1 - Copy.jpg")  # byte twin
    pixels = cv2.imread(str(raw / "fracture" / "f3.jpg"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(raw / "fracture" / "f3.png"), pixels)  # the same pixels in another container
    prepare(raw, tmp_path / "ds", runs_dir=None)
    stored = read_signatures(PreparedDataset(tmp_path / "ds").signatures)
    assert stored is not None and len(stored) == 8
    for twin, film in (("fracture/f1 - Copy.jpg", "fracture/f1.jpg"), ("fracture/f3.png", "fracture/f3.jpg")):
        assert not stored[film].empty and _same({0: stored[twin]}, {0: stored[film]})
    prepare(raw, tmp_path / "clahe", clahe=True, runs_dir=None)
    assert not PreparedDataset(tmp_path / "clahe").signatures.exists()
