"""Issue 3 figures: `audit verify` on 100,000 entries with 2,000 signatures; the cost a signature adds to an approval.

Run: python bench/bench_audit.py [--batches 2000] [--edits-per-batch 49]
The project is built through the real core API (edits with `batches.set_cell`, one transaction per batch; approvals
with `batches.decide` and real Ed25519 signatures). The bulk approver's password uses a fast KDF so building takes
minutes, not hours; the signature-cost figure uses the production KDF (`identity.PRODUCTION_KDF`).
Each line prints the figure, its baseline from the same run and the ratio, plus the target.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from hitl_desktop.core import audit, db, identity, integrity
from hitl_desktop.core import batches as B
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.project import Project
from hitl_desktop.core.sources import import_file

ROWS_PER_BATCH = 50


def build(path: Path, n_batches: int, edits_per_batch: int) -> Project:
    os.environ["HITL_SCRYPT_N"] = "1024"  # bulk users only; see the module docstring
    p = Project.init(path / "proj", user="admin", password="admin-secret")
    identity.add_user(p, "admin", "rita", "reviewer", "rita-secret", full_name="Rita Reviewer")
    identity.add_user(p, "admin", "abe", "approver", "abe-secret", full_name="Abe Approver")
    csv = path / "data.csv"
    n = n_batches * ROWS_PER_BATCH
    with open(csv, "w") as fh:
        fh.write("id,value,label\n")
        fh.writelines(f"{i},{i % 997},{'ab'[i % 2]}\n" for i in range(n))
    import_file(p, csv, ImportOptions(label="label", batch_size=ROWS_PER_BATCH), user="rita")
    # Bulk build: the durability of each commit is not what is measured here.
    p.engine.dispose()
    p.engine = db.make_engine(f"sqlite:///{p.db_path}", synchronous="OFF")
    t = time.perf_counter()
    for b in range(1, n_batches + 1):
        first = (b - 1) * ROWS_PER_BATCH
        with p.write() as conn:
            for k in range(edits_per_batch):
                B.set_cell(p, b, first + (k % ROWS_PER_BATCH), "value", str(100_000 + k), "rita", conn=conn)
        if b % 200 == 0:
            print(f"  built {b}/{n_batches} batches ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    session = identity.authenticate(p, "abe", "abe-secret")
    for b in range(1, n_batches + 1):
        B.decide(p, b, "approve", "abe", signer=identity.session_signer(session))
    del os.environ["HITL_SCRYPT_N"]
    return p


def signature_cost(path: Path, repeats: int) -> tuple[float, float]:
    """Median time of a signed approval (password -> KDF -> key -> signature -> commit) and of an unsigned one."""
    os.environ.pop("HITL_SCRYPT_N", None)
    p = Project.init(path / "sig", user="admin", password="admin-secret")
    identity.add_user(p, "admin", "abe", "approver", "abe-secret")
    csv = path / "small.csv"
    csv.write_text("id,v\n" + "".join(f"{i},{i}\n" for i in range(2 * repeats)))
    import_file(p, csv, ImportOptions(batch_size=1), user="admin")
    signed, unsigned = [], []
    for i in range(repeats):
        t = time.perf_counter()
        B.decide(p, 2 * i + 1, "approve", "abe", signer=identity.signer(p, "abe", "abe-secret"))
        signed.append(time.perf_counter() - t)
        t = time.perf_counter()
        B.decide(p, 2 * i + 2, "approve", "abe", signer=lambda conn, payload: ("abe", None, None))  # no signature
        unsigned.append(time.perf_counter() - t)
    p.close()
    return statistics.median(signed), statistics.median(unsigned)


def best_of(fn, n=3):
    times, out = [], None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=2000, help="batches, each approved with a signature")
    ap.add_argument("--edits-per-batch", type=int, default=49)
    ap.add_argument("--repeats", type=int, default=7, help="approvals timed for the signature cost")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        p = build(tmp_path, args.batches, args.edits_per_batch)
        print(f"built project in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        with p.read() as conn:
            n = audit.count(conn)
        t_full, rep = best_of(lambda: integrity.verify_project(p))
        assert rep.ok, rep.summary()

        def chain_only():
            with p.read() as conn:
                return audit.verify_chain(conn)

        t_chain, _ = best_of(chain_only)
        p.close()
        s, u = signature_cost(tmp_path, args.repeats)
    print(f"audit verify, {n:,} entries, {rep.signatures:,} signatures: {t_full:.2f} s "
          f"(baseline chain-only walk {t_chain:.2f} s, ratio {t_full / t_chain:.1f}x; target < 5 s)")
    print(f"signed approval (production scrypt n=2^{identity.PRODUCTION_KDF.n.bit_length() - 1}): {s * 1000:.0f} ms "
          f"(baseline unsigned approval {u * 1000:.0f} ms, ratio {s / u:.1f}x); "
          f"signature adds {(s - u) * 1000:.0f} ms (target < 300 ms)")


if __name__ == "__main__":
    main()
