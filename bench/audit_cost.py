"""CPU time, counts and memory of the audit's phases on FracAtlas, for comparing levers on a busy machine.

    .venv/bin/python bench/audit_cost.py [--data ../shared/data/fracatlas] [--limit N] [--cache FILE]

Wall time is no figure on a shared machine, CPU time is: each phase is timed with `time.process_time()` (all
threads of this process), and the copy search prints its counts (films signed and searched, descriptors,
candidate pairs verified). Phases: decode (read_image), hashes (file and pixel sha256, dihedral phash),
signature (SIFT), linking (`duplicate_links`: exact, near, candidate search + verify). `--cache FILE` keeps the
audit items of the first run in a pickle and starts later runs from it (linking levers only).
Peak RSS (self) is printed after each phase.
"""

from __future__ import annotations

import argparse
import pickle
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cpuinfo import cpu_line  # noqa: E402

from fracturekit.audit import AuditItem, duplicate_links, joining, parallel_map  # noqa: E402
from fracturekit.data import copies  # noqa: E402
from fracturekit.data.hashing import dihedral_phashes, file_sha256, pixel_sha256  # noqa: E402
from fracturekit.data.imageio import is_image_file, read_image  # noqa: E402


def rss_mb() -> float:
    """Peak resident set of this process so far, MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Phases:
    """CPU seconds per phase, printed as they end."""

    def __init__(self) -> None:
        self.t = time.process_time()

    def end(self, name: str, note: str = "") -> float:
        now = time.process_time()
        spent, self.t = now - self.t, now
        print(f"  {name:<10} cpu {spent:7.1f} s   peak rss {rss_mb():6.0f} MB   {note}", flush=True)
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
    args = parser.parse_args()
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
    try:
        links = duplicate_links(items, names=False)
    finally:
        audit_module.copy_pairs = copies_fn
    kinds: dict[str, int] = {}
    for lk in joining(links):
        kinds[lk.kind] = kinds.get(lk.kind, 0) + 1
    s = found["search"]
    phases.end("linking", f"links {kinds}; verified {s.checked} candidate pairs; copies {len(s.pairs)}")


if __name__ == "__main__":
    main()
