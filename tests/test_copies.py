"""Augmented-copy detection (fracturekit.data.copies): what must be caught, what must not be merged, name lineage."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_data

from fracturekit.data import copies, copy_workers
from fracturekit.data.copies import (
    MIRROR,
    RATIO,
    CandidateSearch,
    Signature,
    VocabularyTree,
    copy_pairs,
    lineage,
    name_links,
    ratio_matches,
    signature,
    verify,
)
from fracturekit.data.copy_workers import read_store, write_store
from fracturekit.data.phantoms import generate_phantom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from augcopies import augment_copy  # noqa: E402


def _film(i: int, size: int = 320) -> np.ndarray:
    return generate_phantom(seed=3, index=i, size=size).image


def _rotate(a: np.ndarray, deg: float) -> np.ndarray:
    h, w = a.shape
    return cv2.warpAffine(a, cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0), (w, h))


def _crop(a: np.ndarray, f: float) -> np.ndarray:
    h, w = a.shape
    return a[int(h * (1 - f)) :, : int(w * f)]


def _jpeg(a: np.ndarray, q: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_GRAYSCALE)


def _gamma(a: np.ndarray, g: float) -> np.ndarray:
    return (255 * (a / 255.0) ** g).astype(np.uint8)


def _text(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    cv2.putText(out, "R 2019-03-14", (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    return out


def _is_copy(a: np.ndarray, b: np.ndarray) -> bool:
    sa, sb = signature(a), signature(b)
    return any(verify(sa, sb, m).is_copy or verify(sb, sa, m).is_copy for m in (False, True))


COPIES: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
    ("rotated 5 degrees", lambda a: _rotate(a, 5)),
    ("rotated 20 degrees the other way", lambda a: _rotate(a, -20)),
    ("cropped to 80% of each side", lambda a: _crop(a, 0.8)),
    ("padded with a white border", lambda a: cv2.copyMakeBorder(a, 20, 20, 30, 30, cv2.BORDER_CONSTANT, value=255)),
    ("brighter and lower contrast", lambda a: np.clip(a * 0.85 + 35, 0, 255).astype(np.uint8)),
    ("gamma 0.7", lambda a: _gamma(a, 0.7)),
    ("CLAHE", lambda a: cv2.createCLAHE(2.0, (8, 8)).apply(a)),
    ("mirrored", lambda a: np.ascontiguousarray(a[:, ::-1])),
    ("turned 90 degrees", lambda a: np.ascontiguousarray(np.rot90(a))),
    ("mirrored and rotated 10 degrees", lambda a: _rotate(np.ascontiguousarray(a[:, ::-1]), 10)),
    ("halved and JPEG q70", lambda a: _jpeg(cv2.resize(a, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), 70)),
    ("burned-in text", _text),
    ("rotated 12, cropped 85%, brighter, JPEG q75", lambda a: _jpeg(_crop(_rotate(a, 12), 0.85) // 2 + 60, 75)),
]


@pytest.mark.parametrize(("case", "transform"), COPIES, ids=[c for c, _ in COPIES])
def test_copies_are_caught(case: str, transform: Callable[[np.ndarray], np.ndarray]) -> None:
    film = _film(1)
    assert _is_copy(transform(film), film), case


def test_distinct_look_alike_phantoms_are_not_copies() -> None:
    # one generator, one anatomy: long bones on soft tissue, so many keypoints match between different films
    films = [_film(i) for i in range(10)]
    sigs = [signature(f) for f in films]
    assert copy_pairs(sigs).pairs == []


def test_a_seeded_augmented_copy_among_distinct_films_is_the_only_pair() -> None:
    films = [_film(i) for i in range(8)]
    films.append(augment_copy(films[2], np.random.default_rng(0), "default"))
    pairs = copy_pairs([signature(f) for f in films]).pairs
    assert [(i, j) for i, j, _ in pairs] == [(2, 8)]


def test_films_without_signature_or_keypoints_are_skipped() -> None:
    flat = np.full((200, 200), 90, np.uint8)  # no keypoints at all
    films = [_film(0), flat, _film(0)]
    sigs: list[Signature | None] = [signature(f) for f in films]
    assert sigs[1] is not None and sigs[1].empty
    assert [(i, j) for i, j, _ in copy_pairs([sigs[0], None, sigs[1], sigs[2]]).pairs] == [(0, 3)]


def test_mirror_permutation_matches_sift_on_the_mirrored_film() -> None:
    img = _film(4)
    sift = cv2.SIFT_create(200)
    kps, desc = sift.detectAndCompute(img, None)
    w = img.shape[1]
    mirrored_kps = [
        cv2.KeyPoint(w - 1 - k.pt[0], k.pt[1], k.size, (180 - k.angle) % 360, k.response, k.octave) for k in kps
    ]
    _, mirrored = sift.compute(np.ascontiguousarray(img[:, ::-1]), mirrored_kps)
    permuted = desc[:, MIRROR]
    # the permuted descriptor is the mirrored film's own, up to interpolation: far closer than any other ordering
    assert np.median(np.linalg.norm(permuted - mirrored, axis=1)) < 0.25 * np.median(np.linalg.norm(desc, axis=1))
    assert np.median(np.linalg.norm(desc - mirrored, axis=1)) > 0.5 * np.median(np.linalg.norm(desc, axis=1))


def test_ratio_matches_are_opencvs_knn_matches() -> None:
    """The matrix-product matcher keeps exactly the matches of cv2.BFMatcher.knnMatch(k=2) + the ratio test."""
    sigs = [signature(_film(seed)) for seed in range(4)]
    sigs.append(signature(augment_copy(_film(0), np.random.default_rng(0), "default")))
    bf = cv2.BFMatcher(cv2.NORM_L2)
    for a in sigs:
        for b in sigs:
            knn = bf.knnMatch(a.descriptors.astype(np.float32), b.descriptors.astype(np.float32), k=2)
            want = {
                (m.queryIdx, m.trainIdx) for m, n in (p for p in knn if len(p) == 2) if m.distance < RATIO * n.distance
            }
            query, train = ratio_matches(a.descriptors, b.descriptors)
            assert set(zip(query.tolist(), train.tolist(), strict=True)) == want
    assert len(ratio_matches(sigs[0].descriptors, sigs[0].descriptors[:1])[0]) == 0  # one descriptor: no second


def test_vocabulary_words_do_not_depend_on_the_chunk() -> None:
    """Words are computed in chunks sorted by node, on one thread or several: any chunk size and thread count give
    each descriptor the leaf a plain descent of the tree (nearest centre at each level) gives it."""
    desc = np.concatenate([signature(_film(seed)).descriptors for seed in range(6)])
    tree = VocabularyTree(desc, seed=0, branch=4, depth=3)
    x = desc.astype(np.float32)
    want = []
    for row in x:  # one descriptor at a time, down the tree
        node = 0
        for level in range(tree.depth):
            centres = tree.nodes.get((level, node))
            nearest = 0 if centres is None else int(np.argmin(((centres - row) ** 2).sum(axis=1)))
            node = node * tree.branch + nearest
        want.append(node)
    for chunk in (7, 100, len(desc) + 1):
        for threads in (1, 2, 3):
            assert tree.words(desc, chunk, threads).tolist() == want
            # the mirrored films' words: the column permutation applied per chunk = applied to the whole array
            mirrored = tree.words(desc[:, MIRROR], chunk, threads).tolist()
            assert tree.words(desc, chunk, threads, columns=MIRROR).tolist() == mirrored
    assert tree.words(desc[:0], threads=2).shape == (0,)


@pytest.mark.parametrize(
    ("stem", "base"),
    [
        ("IMG0001-rotated1 - Copy (1)", "img0001"),  # the Kaggle multi-region pattern, two suffixes
        ("IMG0001 - Copy", "img0001"),  # Windows copy
        ("IMG0001 (2)", None),  # a download counter alone: Windows' name for a second, different file
        ("IMG0001-rotated1 (1)", "img0001"),  # ...but under a copy suffix it is a twin of that copy
        ("1-rotated2-rotated2-rotated2 - Copy", "1"),  # a Kaggle rotation chain, three deep, copied again
        ("IMG0001_aug3", "img0001"),  # augmentation script
        ("IMG0001_flip", "img0001"),
        ("IMG0001-rotated2", "img0001"),
        ("IMG0001", None),  # an original: no lineage
        ("img_2", None),  # '_2' alone is too common to mean 'copy'
        ("copy", None),  # the whole name is a suffix word: nothing left to point to
    ],
)
def test_lineage(stem: str, base: str | None) -> None:
    assert lineage(stem) == base


@pytest.mark.parametrize(
    ("paths", "content", "links", "unconfirmed"),
    [
        # an original and two named copies, one of them linked by content: the names join the other
        (["c/a.jpg", "c/a-rotated1.jpg", "c/a_aug2.jpg", "c/b.jpg"], [0, 0, 2, 3], [[0, 2]], []),
        # the same names with no content link at all: names alone are no evidence
        (["c/a.jpg", "c/a-rotated1.jpg", "c/a_aug2.jpg", "c/b.jpg"], [0, 1, 2, 3], [], [[0, 1, 2]]),
        # a family across split folders is one group: train/ and test/ are not class folders
        (["train/c/a.jpg", "train/c/a-rotated1.jpg", "test/c/a-rotated2.jpg"], [0, 0, 2], [[0, 2]], []),
        # a numbered series of distinct films: ` (N)` alone is no lineage, so no group at all
        (["c/fracture.jpg", "c/fracture (1).jpg", "c/fracture (2).jpg"], [0, 1, 2], [], []),
        # two plain films called 'b' in two split folders: neither is the original by name
        (["train/c/b.jpg", "test/c/b.jpg", "train/c/b-rotated1.jpg", "c/b-rotated2.jpg"], [0, 1, 2, 2], [], []),
        # a copy's cluster that also holds another film stays apart (reported), the lone copy joins
        (
            ["x/c.jpg", "x/c-rotated1.jpg", "x/c-rotated2.jpg", "x/c-rotated3.jpg", "x/d.jpg"],
            [0, 0, 2, 3, 3],
            [[0, 2]],
            [[0, 3]],
        ),
        # two families that share a stem in two split folders (numbered per split): neither joins the other
        (
            ["train/c/1-rotated1.jpg", "train/c/1-rotated2.jpg", "test/c/1-rotated1.jpg", "test/c/1-rotated2.jpg"],
            [0, 0, 1, 1],
            [],
            [[0, 1, 2, 3]],
        ),
        # families that share a stem in two class folders are two groups: a lone copy joins its own folder's
        (
            ["f/1-rotated1.jpg", "f/1-rotated2.jpg", "n/1-rotated1.jpg", "n/1-rotated2.jpg", "n/1-rotated3.jpg"],
            [0, 0, 2, 2, 4],
            [[2, 4]],
            [],
        ),
        # distinct films sharing a stem across class folders: fractured/10.png, not fractured/10-rotated1.jpg
        (["fractured/10.png", "not fractured/10-rotated1.jpg"], [0, 1], [], []),
    ],
)
def test_name_links(paths: list[str], content: list[int], links: list[list[int]], unconfirmed: list[list[int]]) -> None:
    assert name_links(paths, content) == (links, unconfirmed)


def test_candidate_queries_do_not_depend_on_the_block() -> None:
    """by_film and by_cluster run their blocks on threads: blocks of 1, 3 and 5 films or clusters (several blocks,
    threaded) give the rows one block gives."""
    films = [_film(i) for i in range(8)]
    search = CandidateSearch([signature(f) for f in (*films, *(_rotate(f, 7) for f in films))])
    label = np.array([*range(8), *range(8)])  # film i and its rotated copy are cluster i
    clusters = np.arange(8)
    one = search.by_film(3, block=16), search.by_cluster(label, clusters, 3, block=8)
    assert len(one[0]) and len(one[1])
    for block in (1, 3, 5):
        assert np.array_equal(search.by_film(3, block=block), one[0])
        assert np.array_equal(search.by_cluster(label, clusters, 3, block=block), one[1])


def test_a_family_split_by_its_candidate_slots_is_searched_as_one() -> None:
    # 3 films and 4 byte-identical twins of each: by film, every top-3 holds only a film's own twins; the twins
    # are collapsed to one representative and the rest found by film, then by cluster
    films = [_film(0), _rotate(_film(0), 6), _crop(_rotate(_film(0), -8), 0.9)]
    sigs = [signature(f) for f in films for _ in range(5)]
    twins = [list(range(5 * k, 5 * k + 5)) for k in range(3)]
    found = copy_pairs(sigs, k=3, together=twins)
    reps = {i for p in found.pairs for i in p[:2]}
    assert len(found.pairs) >= 2 and len(reps) == 3 and all(i % 5 == 0 for i in reps)


def test_a_square_resized_copy_of_a_wide_film_is_caught() -> None:
    # Kaggle's 224 x 224 copies of a 3:2 film are stretched, not scaled: a similarity fit cannot align them
    wide = cv2.resize(_film(2, 480), (480, 320), interpolation=cv2.INTER_AREA)
    square = cv2.resize(_rotate(wide, 7), (224, 224), interpolation=cv2.INTER_AREA)
    assert _is_copy(square, wide)


@pytest.mark.slow
@pytest.mark.realdata
def test_augmented_copies_of_real_films_are_caught() -> None:
    root = shared_data("fracatlas") / "images" / "Fractured"
    files = sorted(root.glob("*.jpg"))[:40]
    films = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    rng = np.random.default_rng(7)
    films += [augment_copy(films[k], rng, "default") for k in range(10)]
    found = {(i, j) for i, j, _ in copy_pairs([signature(f) for f in films]).pairs}
    assert sum((k, 40 + k) in found for k in range(10)) >= 9


def test_the_signature_store_reads_back_what_was_written(tmp_path: Path) -> None:
    # the worker processes' memory-mapped store: every field of every signature, the empty one included
    sigs = [signature(_film(i)) for i in range(3)] + [signature(np.zeros((64, 64), np.uint8))]
    write_store(sigs, tmp_path)
    back = read_store(tmp_path)
    assert len(back) == 4 and back[3].empty
    for s, b in zip(sigs, back, strict=True):
        assert np.array_equal(s.points, b.points) and np.array_equal(s.descriptors, b.descriptors)
        assert np.array_equal(s.thumb, b.thumb) and s.width == b.width


def test_checks_in_worker_processes_find_what_checks_in_this_process_find(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # two films, a rotated crop of the first and a mirrored copy of the second: the same pairs, matches and count
    films = [_film(0), _film(1), _crop(_rotate(_film(0), 9), 0.85), _film(1)[:, ::-1], _film(2)]
    sigs = [signature(f) for f in films]
    here = copy_pairs(sigs)
    monkeypatch.setattr(copies, "PROCESS_MIN_FILMS", 2)
    monkeypatch.setattr(copies, "cpu_threads", lambda: 2)
    started = []
    monkeypatch.setattr(copy_workers, "write_store", lambda s, folder: started.append(folder) or write_store(s, folder))
    there = copy_pairs(sigs, scratch=tmp_path)
    assert [p.parent for p in started] == [tmp_path]  # the store went into the folder given, in the workers' path
    assert list(tmp_path.iterdir()) == []  # and was removed with it
    assert {(i, j) for i, j, _ in here.pairs} >= {(0, 2), (1, 3)}
    assert (there.pairs, there.near_misses, there.checked) == (here.pairs, here.near_misses, here.checked)


def test_prepare_and_audit_with_the_checks_in_workers_keep_the_clusters_and_leave_no_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # class folders with two rotated/cropped copies among distinct films; prepare and `audit --out`, the checks
    # forced into worker processes: the clusters of the threads' run, and no store left in either output folder
    from fracturekit.audit import audit
    from fracturekit.prepare import prepare

    raw = tmp_path / "raw"
    for k in range(6):
        label = "fractured" if k % 2 else "normal"
        (raw / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(raw / label / f"film{k}.png"), _film(k))
    cv2.imwrite(str(raw / "normal" / "scan-a.png"), _crop(_rotate(_film(0), 9), 0.85))
    cv2.imwrite(str(raw / "fractured" / "scan-b.png"), _rotate(_film(1), -6))

    def clusters(result) -> list[list[str]]:
        return sorted(sorted(Path(m.path).name for m in c.members) for c in result.clusters)

    on_threads = prepare(raw, out=tmp_path / "threads", seed=0).audit
    monkeypatch.setattr(copies, "PROCESS_MIN_FILMS", 2)
    monkeypatch.setattr(copies, "cpu_threads", lambda: 2)
    started = []
    monkeypatch.setattr(copy_workers, "write_store", lambda s, folder: started.append(folder) or write_store(s, folder))
    in_workers = prepare(raw, out=tmp_path / "workers", seed=0).audit
    audited = audit(raw, out=tmp_path / "audit")
    assert len(started) == 2  # prepare's and the audit's checks both ran in workers
    assert clusters(in_workers) == clusters(on_threads) == [["film0.png", "scan-a.png"], ["film1.png", "scan-b.png"]]
    assert clusters(audited) == clusters(on_threads)
    left = [p for p in tmp_path.rglob(".signatures-*")] + [p for p in tmp_path.rglob("*.npy")]
    assert left == []
