"""Issue 2: import of CSV/TSV/Excel/Parquet/JSONL into source versions and batches, and every refusal."""
from __future__ import annotations

import codecs
import errno
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from hitl_desktop.core import batches as B
from hitl_desktop.core import db, ingest, sources
from hitl_desktop.core.errors import HitlError, ImportRefused, NotAProject
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.project import Project
from hitl_desktop.core.sources import import_file


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj", user="alice")
    yield p
    p.close()


def snapshot(project: Project) -> dict:
    """Everything a refusal must leave untouched: row counts of every table and the files in data/."""
    with project.read() as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in db.metadata.sorted_tables}
    files = sorted(p.name for p in project.data_dir.rglob("*") if p.is_file())
    return {"counts": counts, "files": files}


def write(tmp_path, name: str, content: bytes | str, encoding: str = "utf-8"):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return p


CSV = "id,zip,score,label\n1,00123,1.5,a\n2,04567,n/a,b\n3,10001,39,a\n4,20002,2.5,b\n5,30003,3.5,a\n6,40004,4,b\n"


def test_import_csv_registers_source_version_and_batches(project, tmp_path):
    f = write(tmp_path, "d.csv", CSV)
    rep = import_file(project, f, ImportOptions(label="label", batch_size=4), user="alice")
    assert not rep.reused and rep.rows == 6 and len(rep.batches) == 2
    [src] = sources.list_sources(project)
    assert src.sha256 == __import__("hashlib").sha256(f.read_bytes()).hexdigest()
    assert src.row_count == 6 and src.imported_by == "alice" and src.label == "label"
    types = {c.name: (c.logical, c.raw) for c in src.columns}
    assert types["id"] == ("integer", False)
    assert types["zip"] == ("text", False), "leading zeros mark a code: never a number"
    assert types["score"] == ("float", True), "a stray 'n/a' keeps the column numeric, stored as typed"
    bs = B.list_batches(project)
    assert [b.rows for b in sorted(bs, key=lambda b: b.id)] == [4, 2]
    assert all(b.status == "queued" for b in bs)


def test_values_kept_as_typed_never_nan(project, tmp_path):
    f = write(tmp_path, "d.csv", CSV)
    rep = import_file(project, f, ImportOptions(batch_size=10), user="alice")
    df = B.load_batch(project, rep.batches[0])
    assert list(df["zip"]) == ["00123", "04567", "10001", "20002", "30003", "40004"]
    assert df.loc[1, "score"] == "n/a"
    typed = B.typed_view(df, sources.get_source(project, rep.source_id).columns)
    assert pd.isna(typed.loc[1, "score"]) and typed.loc[0, "score"] == 1.5


def test_identical_bytes_and_options_add_nothing_changed_options_make_new_version(project, tmp_path):
    f = write(tmp_path, "d.csv", CSV)
    first = import_file(project, f, ImportOptions(batch_size=4), user="alice")
    before = snapshot(project)
    again = import_file(project, f, ImportOptions(batch_size=4), user="alice")
    assert again.reused and again.source_id == first.source_id
    assert snapshot(project) == before
    other = import_file(project, f, ImportOptions(batch_size=3), user="alice")
    assert not other.reused and other.source_id != first.source_id
    f.write_text(CSV + "7,50005,5.5,a\n")
    changed = import_file(project, f, ImportOptions(batch_size=4), user="alice")
    assert not changed.reused and changed.rows == 7


def test_source_positions_are_kept_per_row(project, tmp_path):
    f = write(tmp_path, "d.csv", CSV)
    import_file(project, f, ImportOptions(batch_size=4), user="alice")
    rep2 = import_file(project, f, ImportOptions(batch_size=5), user="alice")
    second = B.load_batch(project, rep2.batches[1])
    # Row ids are project-wide and stable; the source row is the 0-based data row in the file.
    assert list(second.index) == [11]
    with project.read() as conn:
        b = B.get_batch(conn, rep2.batches[1])
    assert b.start_row == 5 and b.row_id_start == 11


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"])
def test_encodings_detected(project, tmp_path, encoding):
    text = "name;city;label\nJosé;Zürich;a\nRenée;Besançon;b\n"
    f = write(tmp_path, f"d_{encoding}.csv", text, encoding)
    rep = import_file(project, f, ImportOptions(), user="alice")
    df = B.load_batch(project, rep.batches[0])
    assert list(df["name"]) == ["José", "Renée"] and df.loc[1, "city"] == "Besançon"
    assert rep.detected["delimiter"] == ";"


def test_tsv_and_delimiter_override(project, tmp_path):
    f = write(tmp_path, "d.tsv", "a\tb\n1\tx,y\n")
    rep = import_file(project, f, ImportOptions(), user="alice")
    assert B.load_batch(project, rep.batches[0]).loc[0, "b"] == "x,y"
    g = write(tmp_path, "e.csv", "a|b\n1|2\n")
    rep = import_file(project, g, ImportOptions(delimiter="|"), user="alice")
    assert list(B.load_batch(project, rep.batches[0]).columns) == ["a", "b"]


def test_quoted_newlines_and_embedded_delimiters(project, tmp_path):
    f = write(tmp_path, "q.csv", 'a,b\n1,"line one\nline two"\n2,"x, y"\n')
    rep = import_file(project, f, ImportOptions(), user="alice")
    df = B.load_batch(project, rep.batches[0])
    assert df.loc[0, "b"] == "line one\nline two" and df.loc[1, "b"] == "x, y"


def test_excel_parquet_jsonl(project, tmp_path):
    frame = pd.DataFrame({"code": ["007", "010"], "x": [1.5, 2.0], "n": [1, 2], "label": ["a", "b"]})
    xlsx = tmp_path / "d.xlsx"
    with pd.ExcelWriter(xlsx) as w:
        frame.to_excel(w, index=False, sheet_name="first")
        frame.assign(x=[9.5, 8.5]).to_excel(w, index=False, sheet_name="second")
    rep = import_file(project, xlsx, ImportOptions(sheet="second"), user="alice")
    df = B.load_batch(project, rep.batches[0])
    assert list(df["code"]) == ["007", "010"] and list(df["x"]) == [9.5, 8.5]
    with pytest.raises(ImportRefused, match="sheet 'nope' not found"):
        import_file(project, xlsx, ImportOptions(sheet="nope"), user="alice")

    pqf = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), pqf)
    rep = import_file(project, pqf, ImportOptions(), user="alice")
    df = B.load_batch(project, rep.batches[0])
    assert list(df["n"]) == [1, 2] and df.loc[df.index[0], "code"] == "007"

    jl = tmp_path / "d.jsonl"
    jl.write_text('{"id": "001", "v": 1.5, "tags": ["x"]}\n{"id": "002", "v": null}\n')
    rep = import_file(project, jl, ImportOptions(), user="alice")
    df = B.load_batch(project, rep.batches[0])
    assert list(df["id"]) == ["001", "002"] and pd.isna(df["v"].iloc[1]) and df["tags"].iloc[0] == '["x"]'


# --- bad input: each a one-line error and the project exactly as before -------------------------------------

BAD = {
    "empty": (b"", "is empty"),
    "header_only": (b"a,b,c\n", "no data rows"),
    "binary": (bytes(range(256)) * 40, "not text"),
    "ragged": (b"a,b\n1,2\n3,4,5\n", "ragged row"),
    "unbalanced_quote": (b'a,b\n1,"2\n3,4\n', "unbalanced quote"),
    "duplicate_columns": (b"a,b,a\n1,2,3\n", "duplicate column name 'a'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_refused_one_line_and_nothing_changes(project, tmp_path, case):
    content, needle = BAD[case]
    f = write(tmp_path, f"{case}.csv", content)
    before = snapshot(project)
    with pytest.raises(ImportRefused) as err:
        import_file(project, f, ImportOptions(), user="alice")
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert snapshot(project) == before


def test_unknown_encoding_missing_file_unknown_type_bad_label(project, tmp_path):
    f = write(tmp_path, "d.csv", CSV)
    before = snapshot(project)
    with pytest.raises(ImportRefused, match="unknown encoding 'klingon'"):
        import_file(project, f, ImportOptions(encoding="klingon"), user="alice")
    with pytest.raises(ImportRefused, match="file not found"):
        import_file(project, tmp_path / "nope.csv", ImportOptions(), user="alice")
    with pytest.raises(ImportRefused, match="unsupported file type"):
        import_file(project, write(tmp_path, "d.docx", b"x"), ImportOptions(), user="alice")
    with pytest.raises(ImportRefused, match="label column 'nope'"):
        import_file(project, f, ImportOptions(label="nope"), user="alice")
    with pytest.raises(ImportRefused, match="not valid utf-8"):
        import_file(project, write(tmp_path, "l.csv", "a\ncafé\n", "latin-1"), ImportOptions(encoding="utf-8"),
                    user="alice")
    assert snapshot(project) == before


def test_file_vanishing_mid_read(project, tmp_path, monkeypatch):
    f = write(tmp_path, "d.csv", CSV)
    before = snapshot(project)
    real_open = open

    class Vanishing:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def read(self, *a):
            self.fh.read(10)
            os.unlink(f)
            raise OSError(errno.ESTALE, "Stale file handle")

    def fake_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Vanishing(fh) if str(path) == str(f) and "b" in mode and "r" in mode else fh

    monkeypatch.setattr("builtins.open", fake_open)
    with pytest.raises(ImportRefused, match="could not read"):
        import_file(project, f, ImportOptions(), user="alice")
    monkeypatch.undo()
    assert snapshot(project) == before


def test_disk_full_while_writing_originals(project, tmp_path, monkeypatch):
    f = write(tmp_path, "d.csv", CSV)
    before = snapshot(project)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sources, "_write_arrow", full)
    with pytest.raises(ImportRefused, match="disk is full"):
        import_file(project, f, ImportOptions(), user="alice")
    assert snapshot(project) == before
    assert not any((project.path / "data" / "tmp").iterdir())


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_inside_the_real_writer(project, tmp_path, monkeypatch):
    """ENOSPC from Arrow's native file writer (its sink is /dev/full here): refused, nothing left behind."""
    from hitl_desktop.core import filewrite

    f = write(tmp_path, "d.csv", CSV)
    before = snapshot(project)
    real_open = filewrite._open_sink

    def full(path, buffer_size):
        open(path, "wb").close()  # the follower reads the path; the bytes go to a device that is always full
        return real_open("/dev/full", buffer_size)

    monkeypatch.setattr(filewrite, "_open_sink", full)
    with pytest.raises(ImportRefused, match="disk is full"):
        import_file(project, f, ImportOptions(), user="alice")
    monkeypatch.undo()
    assert snapshot(project) == before
    assert not any((project.path / "data" / "tmp").iterdir())
    assert import_file(project, f, ImportOptions(), user="alice").rows > 0  # and the next import works


def test_database_failure_during_registration_removes_data_file(project, tmp_path, monkeypatch):
    f = write(tmp_path, "d.csv", CSV)
    before = snapshot(project)
    real = B.audit.append if hasattr(B, "audit") else None

    def boom(*a, **k):
        from sqlalchemy.exc import OperationalError

        raise OperationalError("INSERT", {}, Exception("database or disk is full"))

    monkeypatch.setattr(sources.audit, "append", boom)
    with pytest.raises(HitlError, match="disk is full"):
        import_file(project, f, ImportOptions(), user="alice")
    assert snapshot(project) == before
    assert real is None or callable(real)


def test_wide_and_odd_column_names(project, tmp_path):
    f = write(tmp_path, "w.csv", ",b\n1,2\n")
    rep = import_file(project, f, ImportOptions(), user="alice")
    assert [c.name for c in rep.columns] == ["column_1", "b"] and rep.notes


def test_detect_encoding_and_delimiter_units():
    assert ingest.detect_encoding(codecs.BOM_UTF8 + b"a") == "utf-8-sig"
    assert ingest.detect_encoding("a,b\n".encode("utf-16-le")) == "utf-16-le"
    assert ingest.detect_encoding("é".encode("cp1252")) == "cp1252"
    assert ingest.detect_delimiter("a;b;c\n1;2;3\n", "x.csv") == ";"
    assert ingest.detect_delimiter("a\tb\n", "x.tsv") == "\t"
