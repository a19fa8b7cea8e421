"""CPU time, counts and memory of the audit's phases on FracAtlas, for comparing levers on a busy machine.

    .venv/bin/python bench/audit_cost.py [--data DIR] [--limit N] [--cache FILE] [--checks threads]

Wall time is no figure on a shared machine, CPU time is: each phase is timed with `time.process_time()` (all
threads of this process) plus the CPU of its ended child processes (the copy search's workers), and the copy
search prints its counts (films signed and searched, descriptors, candidate pairs verified). Phases: decode
(read_image), hashes (file and pixel sha256, dihedral phash), signature (SIFT), linking (`duplicate_links`:
exact, near, candidate search + verify). `--cache FILE` keeps the audit items of the first run in a pickle and
starts later runs from it (linking levers only).
Peak RSS (self) is printed after each phase. Linking is then split into its parts (near-duplicate hashes, the
vocabulary tree's training and words, the tf-idf vectors, candidate queries by film and by cluster, verification),
each with its CPU time, its wall time and their ratio: how many cores the part kept busy (a part on one core reads
at most 1.0; on a busy machine every part reads less: at load 10 on 2 cores, a one-core part read ~0.5).
`--checks threads` runs the pair checks on the audit's threads, not in worker processes (an idle A/B).
"""

from __future__ import annotations

import argparse
import pickle
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cpuinfo import cpu_line, cpu_s  # noqa: E402

from fracturekit.audit import AuditItem, duplicate_links, joining  # noqa: E402
from fracturekit.core.parallel import parallel_map  # noqa: E402
from fracturekit.data import copies  # noqa: E402
from fracturekit.data.hashing import dihedral_phashes, file_sha256, pixel_sha256  # noqa: E402
from fracturekit.data.imageio import is_image_file, read_image  # noqa: E402


def rss_mb() -> float:
    """Peak resident set of this process so far, MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Parts:
    """CPU and wall seconds of named calls, summed over their calls (each made from the main thread)."""

    def __init__(self) -> None:
        self.spent: dict[str, list[float]] = {}

    def wrap(self, owner: object, attr: str, name: str) -> None:
        """Time every call of `owner.attr` under `name`."""
        fn = getattr(owner, attr)

        def timed(*a, **kw):
            c, w = cpu_s(), time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                row = self.spent.setdefault(name, [0.0, 0.0, 0])
                row[0] += cpu_s() - c
                row[1] += time.perf_counter() - w
                row[2] += 1

        setattr(owner, attr, timed)

    def print(self) -> None:
        # the checks: the copy search's CPU (its worker processes' included: they end with it) less the other parts
        # inside it; their wall time: the candidate rounds' less their queries
        search, rounds = self.spent.pop("copy search", None), self.spent.pop("rounds", None)
        if search is not None and rounds is not None:
            inside = [
                self.spent.get(p, [0.0, 0.0]) for p in ("tree training", "words", "tf-idf", "by film", "by cluster")
            ]
            queries = inside[3:]
            self.spent["verify"] = [
                search[0] - sum(p[0] for p in inside),
                rounds[1] - sum(q[1] for q in queries),
                rounds[2],
            ]
        for name, (cpu, wall, calls) in self.spent.items():
            busy = cpu / wall if wall > 0 else 0.0
            print(f"    {name:<16} cpu {cpu:7.2f} s   wall {wall:7.2f} s   cpu/wall {busy:4.2f}   calls {calls}")


class Phases:
    """CPU seconds per phase, printed as they end."""

    def __init__(self) -> None:
        self.t, self.w = cpu_s(), time.perf_counter()

    def end(self, name: str, note: str = "") -> float:
        now, wall = cpu_s(), time.perf_counter()
        spent, busy = now - self.t, (now - self.t) / max(wall - self.w, 1e-9)
        self.t, self.w = now, wall
        rss = rss_mb()
        print(f"  {name:<10} cpu {spent:7.1f} s   cpu/wall {busy:4.2f}   peak rss {rss:6.0f} MB   {note}", flush=True)
        return spent


def build_items(files: list[Path], phases: Phases) -> list[AuditItem]:
    """Decode, hash and sign every film, one phase at a time (each over the thread pool)."""
    pixels = parallel_map(lambda f: read_image(f).pixels, files)
    phases.end("decode", f"{len(files)} films")
    hashes = parallel_map(lambda fp: (file_sha256(fp[0]), pixel_sha256(fp[1]), dihedral_phashes(fp[1])),
                          list(zip(files, pixels, strict=True)))  # fmt: skip
    phases.end("hashes")
    first = {h[1]: k for k, h in reversed(list(enumerate(hashes)))}  # as film_hashes: a pixel twin is not signed
    sigs = parallel_map(lambda k: copies.signature(pixels[k]) if first[hashes[k][1]] == k else None, range(len(files)))
    pixels.clear()  # the decoded films are done with (this bench holds them all, prepare one per thread)
    kp = sorted(len(s.points) for s in sigs if s is not None)
    phases.end("signature", f"{len(kp)} films signed; keypoints/film median {kp[len(kp) // 2]}, total {sum(kp)}")
    return [AuditItem(str(f), "", "", None, *h, s) for f, h, s in zip(files, hashes, sigs, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--limit", type=int, default=0, help="only the first N films (0: all)")
    parser.add_argument("--cache", type=Path, help="pickle of the audit items: written when absent, else read")
    parser.add_argument(
        "--checks",
        choices=("auto", "threads"),
        default="auto",
        help="threads: the pair checks on the audit's threads whatever the film count (the A/B against processes)",
    )
    args = parser.parse_args()
    if args.checks == "threads":
        copies.PROCESS_MIN_FILMS = sys.maxsize
    print(cpu_line())
    phases = Phases()
    if args.cache and args.cache.is_file():
        items = pickle.loads(args.cache.read_bytes())
        phases.end("load", f"{len(items)} films from {args.cache}")
    else:
        files = sorted(p for p in args.data.rglob("*") if p.is_file() and is_image_file(p))
        items = build_items(files[: args.limit or None], phases)
        if args.cache:
            args.cache.write_bytes(pickle.dumps(items))
    found: dict = {}
    real = copies.copy_pairs

    def counted(*a, **kw):  # the copy search's own counts, beside the links
        found["search"] = real(*a, **kw)
        return found["search"]

    copies_fn = copies.copy_pairs
    import fracturekit.audit as audit_module

    audit_module.copy_pairs = counted
    parts = Parts()
    parts.wrap(audit_module, "copy_pairs", "copy search")
    parts.wrap(audit_module, "near_pairs", "near (phash)")
    parts.wrap(copies.VocabularyTree, "__init__", "tree training")
    parts.wrap(copies.VocabularyTree, "words", "words")
    parts.wrap(copies, "_bow", "tf-idf")
    parts.wrap(copies.CandidateSearch, "by_film", "by film")
    parts.wrap(copies.CandidateSearch, "by_cluster", "by cluster")
    parts.wrap(copies, "_checked_rounds", "rounds")
    try:
        with tempfile.TemporaryDirectory(prefix="audit-cost-") as scratch:  # the workers' signature store
            links = duplicate_links(items, names=False, scratch=Path(scratch))
    finally:
        audit_module.copy_pairs = copies_fn
    kinds: dict[str, int] = {}
    for lk in joining(links):
        kinds[lk.kind] = kinds.get(lk.kind, 0) + 1
    s = found["search"]
    phases.end("linking", f"links {kinds}; verified {s.checked} candidate pairs; copies {len(s.pairs)}")
    parts.print()


if __name__ == "__main__":
    main()
