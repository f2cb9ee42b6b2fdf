"""Issue 8 figure: export and import back of 50 batches of 500 rows with 2,000 edits, each under 3 s.

Run: python bench/bench_bundle.py [--batches 50] [--rows-per-batch 500] [--edits 2000]

Setup (not timed): a home project with 50 x 500 rows (20 columns) and 500 edits made at home (they travel with the
bundle), plus one flag per batch. Timed: `export` of all 50 batches (the signature included; the exporter's password
KDF runs before, as the CLI prompts for it first), then `apply_import` of the bundle after 2,000 edits, 50 flag
dismissals and 10 signed approvals were made away (the merge plus every check of the bundle: signature, hashes,
the bundle's whole audit trail). Then `audit verify` of the home project must pass.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HITL_SCRYPT_N", "1024")  # the KDF is not what this measures (see identity bench)
sys.path.insert(0, str(Path(__file__).parent))
from datagen import write_csv  # noqa: E402

from hitl_desktop.core import audit, bundle, db, identity, integrity  # noqa: E402
from hitl_desktop.core import batches as B  # noqa: E402
from hitl_desktop.core import flags as F  # noqa: E402
from hitl_desktop.core.ingest import ImportOptions  # noqa: E402
from hitl_desktop.core.project import Project  # noqa: E402
from hitl_desktop.core.sources import import_file  # noqa: E402

TARGET = 3.0


def edits_in_one_tx(p: Project, cells, user: str) -> None:
    with p.write() as conn:
        for bid, row, col, val in cells:
            B.set_cell(p, bid, row, col, val, user, conn=conn)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=50)
    ap.add_argument("--rows-per-batch", type=int, default=500)
    ap.add_argument("--edits", type=int, default=2000)
    args = ap.parse_args()
    nb, rpb = args.batches, args.rows_per_batch
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_csv(t / "data.csv", nb * rpb)
        p = Project.init(t / "home", user="alice", password="alice-secret")
        import_file(p, t / "data.csv", ImportOptions(batch_size=rpb), user="alice")
        identity.add_user(p, "alice", "bob", "approver", "bob-secret1")
        with p.write() as c:
            c.execute(db.flags.insert(), [dict(batch_id=b, row_id=(b - 1) * rpb, column="f0", kind="outlier",
                                               severity="high", score=1.0, message="odd", suggestion="1",
                                               status="open") for b in range(1, nb + 1)])

        def random_cells(n, tag, first=1):
            seen = set()
            while len(seen) < n:
                bid = rng.randint(first, nb)
                seen.add((bid, (bid - 1) * rpb + rng.randrange(rpb), f"t{rng.randrange(3)}"))
            return [(b, r, c, f"{tag}{i}") for i, (b, r, c) in enumerate(sorted(seen))]

        edits_in_one_tx(p, random_cells(500, "home"), "alice")
        out = t / "review.hitlreview"
        session = identity.authenticate(p, "alice", "alice-secret")
        t0 = time.perf_counter()
        r = bundle.export(p, range(1, nb + 1), "bob", out, "alice", session=session)
        t_export = time.perf_counter() - t0

        with Project.open(out) as bp:
            # bob edits batches 11.. and approves 1..10 (four-eyes: not the ones he edited)
            edits_in_one_tx(bp, random_cells(args.edits, "away", first=11), "bob")
            for fid in range(1, nb + 1):
                F.dismiss(bp, fid, "bob", "checked")
            for bid in range(1, 11):
                B.decide(bp, bid, "approve", "bob", signer=identity.signer(bp, "bob", "bob-secret1"))

        t0 = time.perf_counter()
        res = bundle.apply_import(p, out, user="alice")
        t_import = time.perf_counter() - t0
        assert not res.pending, res.pending
        rep = integrity.verify_project(p)
        assert rep.ok, rep.summary()
        p.close()

    size = r.size / 1e6
    print(f"export  {nb} batches x {rpb} rows (500 home edits, {size:.1f} MB): {t_export:.2f} s  (target < {TARGET} s)"
          f"  {'OK' if t_export < TARGET else 'MISSED'}")
    print(f"import  {res.edits} edits, {res.flags} flag changes, {res.decisions} signed approvals: "
          f"{t_import:.2f} s  (target < {TARGET} s)  {'OK' if t_import < TARGET else 'MISSED'}")
    print(f"home audit verify after import: {rep.summary()[:60]}…")


if __name__ == "__main__":
    main()
