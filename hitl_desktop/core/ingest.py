"""Reading user files into Arrow tables, keeping every value as the user typed it.

The reader never turns a value it cannot parse into NaN. Each column gets a logical type:

* ``integer`` / ``float``: every non-empty value parses as a number (and no value has a leading zero, which marks
  an identifier or code). Stored as int64/float64.
* ``integer`` / ``float`` with *raw* storage: most values parse but some do not ('n/a', '39,1', '?'). The column
  is stored as text exactly as typed; a typed view is derived vectorially when the data is used, and the checks
  flag the strays.
* ``text``: anything else (including codes with leading zeros such as ``00123``), stored as text.
* ``boolean`` / ``datetime``: only from typed formats (Parquet, JSON Lines booleans).

Everything is read from one in-memory copy of the file's bytes, so the sha256 recorded for the source version is
the hash of exactly what was parsed.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from . import threads
from .errors import ImportRefused

FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}

# A value counts as an int/float when it matches these (checked vectorially with Arrow's RE2).
_INT_RE = r"^\s*[+-]?\d+\s*$"
_FLOAT_RE = r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|Inf|INF|infinity|Infinity|nan|NaN)\s*$"
_LEADING_ZERO_RE = r"^\s*[+-]?0\d"
# A logically numeric column may hold this share of strays (counted among non-empty values) before it is text.
NUMERIC_MIN_SHARE = 0.8


@dataclass(frozen=True)
class ImportOptions:
    """What the user chose (or left to detection). Part of a source version's identity."""

    label: str | None = None
    batch_size: int = 500
    delimiter: str | None = None
    encoding: str | None = None
    sheet: str | None = None

    def key_fields(self) -> dict[str, Any]:
        # The label column and batch size do not change the data read, but a different split or label choice is a
        # different source version too: the user asked for something else.
        return {
            "label": self.label,
            "batch_size": self.batch_size,
            "delimiter": self.delimiter,
            "encoding": self.encoding,
            "sheet": self.sheet,
        }


@dataclass
class ColumnInfo:
    name: str
    logical: str  # integer | float | text | boolean | datetime
    raw: bool = False  # True when stored as text because some values do not parse as `logical`
    strays: int = 0  # number of non-empty values that do not parse as `logical`

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.logical, "raw": self.raw, "strays": self.strays}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ColumnInfo":
        return cls(d["name"], d["type"], bool(d.get("raw", False)), int(d.get("strays", 0)))


@dataclass
class ReadResult:
    table: pa.Table
    columns: list[ColumnInfo]
    sha256: str
    fmt: str
    detected: dict[str, Any] = field(default_factory=dict)  # delimiter/encoding actually used
    notes: list[str] = field(default_factory=list)


def detect_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ImportRefused(
            f"unsupported file type '{ext or path}': use CSV/TSV (.csv .tsv .txt), Excel (.xlsx), Parquet (.parquet) "
            "or JSON Lines (.jsonl)"
        )
    return FORMATS[ext]


class SourceBytes:
    """A file's bytes, read once, with their sha256 computed by a thread that follows the reading chunk by chunk."""

    def __init__(self, data: bytes | bytearray, digest: Callable[[], str]) -> None:
        self.data = data
        self._digest = digest

    def sha256(self) -> str:
        """Wait for the hash of exactly `data` and return it."""
        return self._digest()


_READ_CHUNK = 8 << 20


def read_source(path: str) -> SourceBytes:
    """Read a whole file into memory while a thread hashes what has arrived (hashlib releases the GIL), so the
    hash is done almost when the reading is. Refusals are one line (missing file, folder, permission, I/O)."""
    try:
        with open(path, "rb") as fh:
            try:
                size = os.fstat(fh.fileno()).st_size
            except (OSError, AttributeError, ValueError):
                size = 0
            if size <= 0:  # unknown size (a pipe, a special file) or empty: plain read, plain hash
                data = fh.read()
                return SourceBytes(data, lambda: hashlib.sha256(data).hexdigest())
            buf = bytearray(size)
            view = memoryview(buf)
            hasher = hashlib.sha256()
            ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()

            def follow() -> None:
                while (r := ranges.get()) is not None:
                    hasher.update(view[r[0]:r[1]])

            thread = threading.Thread(target=follow, name="hitl-sha256", daemon=True)
            thread.start()
            pos = 0
            try:
                while pos < size:
                    n = fh.readinto(view[pos:pos + _READ_CHUNK])
                    if not n:
                        break  # the file shrank while being read: what was read is what is imported
                    ranges.put((pos, pos + n))
                    pos += n
                extra = fh.read() if pos == size else b""  # the file grew while being read
            finally:
                ranges.put(None)
            if extra:
                thread.join()
                hasher.update(extra)
                data: bytes | bytearray = bytes(view[:pos]) + extra
            elif pos < size:
                thread.join()
                data = bytes(view[:pos])
            else:
                data = buf

            def digest() -> str:
                thread.join()
                return hasher.hexdigest()

            return SourceBytes(data, digest)
    except FileNotFoundError:
        raise ImportRefused(f"file not found: {path}") from None
    except IsADirectoryError:
        raise ImportRefused(f"{path} is a folder, not a file") from None
    except PermissionError:
        raise ImportRefused(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise ImportRefused(f"could not read {path}: {exc.strerror or exc}") from None


def read_file(path: str, options: ImportOptions, source: SourceBytes | None = None) -> ReadResult:
    """Read and type a file. Raises ImportRefused with a one-line reason for anything unusable."""
    fmt = detect_format(path)
    if source is None:
        source = read_source(path)
    data = source.data
    if not data:
        raise ImportRefused(f"{os.path.basename(path)} is empty: nothing to import")
    try:
        if fmt == "csv":
            result = _read_csv(path, data, options)
        elif fmt == "excel":
            result = _read_excel(path, data, options)
        elif fmt == "parquet":
            result = _read_parquet(path, data)
        else:
            result = _read_jsonl(path, data)
    finally:
        sha = source.sha256()  # also when refusing: the hashing thread never outlives the read
    result.sha256 = sha
    if result.table.num_rows == 0:
        raise ImportRefused(f"{os.path.basename(path)} has a header but no data rows: nothing to import")
    if options.label is not None and options.label not in result.table.column_names:
        raise ImportRefused(
            f"label column '{options.label}' is not in the file; columns are: {', '.join(result.table.column_names)}"
        )
    return result


# --- CSV -----------------------------------------------------------------------------------------------------------


def detect_encoding(data: bytes) -> str:
    """BOM first; then UTF-16 by NUL pattern; then UTF-8 if it decodes; else cp1252 (or latin-1 as a last resort)."""
    if data.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if data.startswith(codecs.BOM_UTF16_LE) or data.startswith(codecs.BOM_UTF16_BE):
        return "utf-16"
    head = data[:4096]
    if len(head) >= 4 and head.count(b"\x00") > len(head) // 3:
        evens, odds = head[0::2].count(0), head[1::2].count(0)
        if odds > evens * 4:
            return "utf-16-le"
        if evens > odds * 4:
            return "utf-16-be"
    if b"\x00" in head:
        raise ImportRefused("the file is not text (it contains binary data): is it really a CSV file?")
    if data.isascii():
        return "utf-8"
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def _to_utf8(data: bytes, encoding: str, name: str, validated: bool = False) -> bytes:
    """`data` as UTF-8 bytes. `validated`: `detect_encoding` has just found `data` to be valid UTF-8 (or ASCII)
    without a BOM, so it is not checked a second time (a pass over the whole file)."""
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise ImportRefused(f"unknown encoding '{encoding}': use e.g. utf-8, utf-16, cp1252 or latin-1") from None
    if codec == "utf-8" and not data.startswith(codecs.BOM_UTF8):
        if validated or data.isascii():
            return data
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportRefused(
                f"{name} is not valid utf-8 (byte {exc.start}); pass --encoding (e.g. cp1252 or latin-1)"
            ) from None
        return data
    try:
        text = data.decode(codec if codec != "utf-8" else "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRefused(f"{name} is not valid {encoding} (byte {exc.start}); pass the right --encoding") from None
    if codec.startswith("utf-16"):
        text = text.lstrip("\ufeff")
    if "\x00" in text[:4096]:
        raise ImportRefused("the file is not text (it contains binary data): is it really a CSV file?")
    return text.encode("utf-8")


def detect_delimiter(sample: str, path: str) -> str:
    if path.lower().endswith((".tsv", ".tab")):
        return "\t"
    lines = [ln for ln in sample.splitlines() if ln.strip()][:50]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        header = lines[0]
        counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
        best = max(counts, key=counts.get)
        return best if counts[best] else ","


def _read_csv(path: str, data: bytes, options: ImportOptions) -> ReadResult:
    name = os.path.basename(path)
    encoding = options.encoding or detect_encoding(data)
    utf8 = _to_utf8(data, encoding, name, validated=options.encoding is None and encoding == "utf-8")
    if utf8.startswith(codecs.BOM_UTF8):
        utf8 = utf8[len(codecs.BOM_UTF8):]
    if len(utf8) < 4096 and not utf8.strip():
        raise ImportRefused(f"{name} is empty: nothing to import")
    if options.delimiter is not None:
        delimiter = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(options.delimiter, options.delimiter)
        if len(delimiter) != 1:
            raise ImportRefused(f"delimiter must be one character, got '{options.delimiter}'")
    else:
        delimiter = detect_delimiter(utf8[:65536].decode("utf-8", errors="replace"), path)
    has_quotes = b'"' in utf8
    if has_quotes and utf8.count(b'"') % 2:
        raise ImportRefused(f"{name} has an unbalanced quote (\"): a quoted value is never closed; fix the file")
    try:
        table = pacsv.read_csv(
            pa.BufferReader(utf8),
            read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 22),
            # Without a single '"' in the file quoting cannot matter: turning it off lets Arrow cut the file into
            # blocks at any newline, which parallelises better.
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=has_quotes,
                                             quote_char='"' if has_quotes else False),
            convert_options=pacsv.ConvertOptions(
                column_types=_all_string_types(utf8, delimiter),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
                check_utf8=False,  # _to_utf8 has already made sure the bytes are valid UTF-8
            ),
        )
    except pa.ArrowInvalid as exc:
        raise ImportRefused(_csv_error(name, str(exc))) from None
    table, notes = _fix_names(table, name)
    columns, table = infer_types(table)
    return ReadResult(table, columns, "", "csv", {"delimiter": delimiter, "encoding": encoding}, notes)


def _all_string_types(utf8: bytes, delimiter: str) -> dict[str, pa.DataType]:
    end = utf8.find(b"\n")
    first = (utf8 if end < 0 else utf8[:end]).decode("utf-8", errors="replace").rstrip("\r")
    names = next(csv.reader([first], delimiter=delimiter), [])
    return {n: pa.string() for n in names}


def _csv_error(name: str, msg: str) -> str:
    msg = msg.replace("CSV parse error: ", "")
    first = msg.splitlines()[0] if msg else "unreadable"
    if first.startswith("Expected") and "columns" in first:
        head, _, rest = first.partition(": ")
        return f"{name} has a ragged row: {head.lower()} (row: {rest[:60]!r}); fix the row or the delimiter"
    if "UTF8" in msg or "utf8" in msg.lower():
        return f"{name} is not valid UTF-8: pass --encoding (e.g. cp1252 or latin-1)"
    return f"{name} could not be read as CSV: {first[:160]}"


def _fix_names(table: pa.Table, name: str) -> tuple[pa.Table, list[str]]:
    names = [str(c) for c in table.column_names]
    notes: list[str] = []
    fixed = []
    for i, n in enumerate(names):
        if not n.strip():
            new = f"column_{i + 1}"
            notes.append(f"column {i + 1} has no name: named it '{new}'")
            fixed.append(new)
        else:
            fixed.append(n)
    seen: dict[str, int] = {}
    for i, n in enumerate(fixed):
        if n in seen:
            raise ImportRefused(
                f"{name} has duplicate column name '{n}' (columns {seen[n] + 1} and {i + 1}): rename one and import again"
            )
        seen[n] = i
    if fixed != names:
        table = table.rename_columns(fixed)
    return table, notes


def infer_types(table: pa.Table) -> tuple[list[ColumnInfo], pa.Table]:
    """Give each all-text column a logical type; cast cleanly numeric columns, keep the rest as typed."""
    def one(name: str) -> tuple[ColumnInfo, pa.ChunkedArray]:
        col = table[name]
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            return ColumnInfo(name, _logical_of(col.type)), col
        return _infer_text_column(name, col)

    names = table.column_names
    if table.num_rows * len(names) > 200_000:
        # Arrow's kernels release the GIL: type the columns in parallel.
        done = threads.map_ordered(one, names, min(4, os.cpu_count() or 1), name="hitl-type")
    else:
        done = [one(n) for n in names]
    return [d[0] for d in done], pa.table([d[1] for d in done], names=names)


def _infer_text_column(name: str, col: pa.ChunkedArray) -> tuple[ColumnInfo, pa.ChunkedArray]:
    non_null = len(col) - col.null_count
    if non_null == 0:
        return ColumnInfo(name, "text"), col
    # Fast path: the whole column casts (Arrow's C++ parser) and nothing has a leading zero. A failing cast
    # costs a full pass, so try a sample of the head first and skip types it already rules out.
    head = col.slice(0, 1000).drop_null()
    for logical, target in (("integer", pa.int64()), ("float", pa.float64())):
        try:
            pc.cast(head, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        try:
            cast = pc.cast(col, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if _mangles(col):
            return ColumnInfo(name, "text"), col
        return ColumnInfo(name, logical), cast
    # Slow path (only columns with strays): count what parses. A column whose head and tail are mostly not
    # numbers is text; skip the full scan.
    sample = pa.concat_arrays([c for c in col.slice(0, 2000).chunks] + [c for c in col.slice(max(0, len(col) - 2000)).chunks])
    sample_nn = len(sample) - sample.null_count
    if sample_nn and (pc.sum(pc.match_substring_regex(sample, _FLOAT_RE)).as_py() or 0) < 0.5 * sample_nn:
        return ColumnInfo(name, "text"), col
    is_int = pc.match_substring_regex(col, _INT_RE)
    is_float = pc.match_substring_regex(col, _FLOAT_RE)
    n_int = pc.sum(is_int).as_py() or 0
    n_float = pc.sum(is_float).as_py() or 0
    if n_float and n_float >= NUMERIC_MIN_SHARE * non_null:
        if pc.any(pc.match_substring_regex(col, _LEADING_ZERO_RE)).as_py():
            return ColumnInfo(name, "text"), col
        logical = "integer" if n_int == n_float else "float"
        return ColumnInfo(name, logical, raw=True, strays=int(non_null - n_float)), col
    return ColumnInfo(name, "text"), col


def _mangles(col: pa.ChunkedArray) -> bool:
    """Leading zeros on an integer part ('007', '-007.5') mark codes, not numbers; casting would lose them.

    Vectorised over Arrow's raw buffers: look at the first three bytes of every value (numpy gathers), no
    per-value Python and no regex pass over the column.
    """
    for chunk in col.chunks:
        if len(chunk) == 0:
            continue
        if chunk.offset:
            chunk = pa.concat_arrays([chunk])  # normalise a sliced chunk so its buffers start at 0
        _, off_buf, data_buf = chunk.buffers()
        if data_buf is None:
            continue
        offsets = np.frombuffer(off_buf, dtype=np.int32, count=len(chunk) + 1)
        data = np.frombuffer(data_buf, dtype=np.uint8)
        if len(data) == 0:
            continue
        start = offsets[:-1]
        last = len(data) - 1  # an empty last value starts at len(data): clamp instead of padding (a copy)
        c0 = data[np.minimum(start, last)] if start[-1] > last else data[start]
        # Only values starting with '0', '+' or '-' can be a code: look closer at those alone.
        maybe = np.flatnonzero((c0 == ord("0")) | (c0 == ord("+")) | (c0 == ord("-")))
        if len(maybe) == 0:
            continue
        s0 = start[maybe]
        length = offsets[maybe + 1] - s0
        c0 = c0[maybe]
        c1 = data[np.minimum(s0 + 1, last)]
        c2 = data[np.minimum(s0 + 2, last)]
        signed = (c0 == ord("+")) | (c0 == ord("-"))
        digit1 = (c1 >= ord("0")) & (c1 <= ord("9"))
        digit2 = (c2 >= ord("0")) & (c2 <= ord("9"))
        hit = ((c0 == ord("0")) & digit1 & (length >= 2)) | (signed & (c1 == ord("0")) & digit2 & (length >= 3))
        if hit.any():
            return True
    return False


def _logical_of(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return "text"


# --- Excel, Parquet, JSON Lines ------------------------------------------------------------------------------------


def _cell_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v:
            return None
        return repr(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)
    if hasattr(v, "isoformat"):
        return v.isoformat()
    s = str(v)
    return s if s != "" else None


def _read_excel(path: str, data: bytes, options: ImportOptions) -> ReadResult:
    import openpyxl  # deferred: only Excel imports pay for it

    name = os.path.basename(path)
    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a bad file
        raise ImportRefused(f"{name} is not a readable .xlsx workbook ({type(exc).__name__})") from None
    try:
        if options.sheet is not None:
            if options.sheet not in wb.sheetnames:
                raise ImportRefused(f"sheet '{options.sheet}' not found; sheets are: {', '.join(wb.sheetnames)}")
            ws = wb[options.sheet]
        else:
            ws = wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise ImportRefused(f"{name} (sheet '{ws.title}') is empty: nothing to import")
        width = len(header)
        while width and header[width - 1] is None:
            width -= 1
        cols: list[list[str | None]] = [[] for _ in range(width)]
        for r in rows:
            if r is None or all(v is None for v in r):
                continue
            if any(v is not None for v in r[width:]):
                raise ImportRefused(f"{name} has a ragged row: a row has values beyond the {width} header columns")
            for i in range(width):
                cols[i].append(_cell_text(r[i]) if i < len(r) else None)
    finally:
        wb.close()
    names = [_cell_text(h) or "" for h in header[:width]]
    table = pa.table([pa.array(c, type=pa.string()) for c in cols], names=names)
    table, notes = _fix_names(table, name)
    columns, table = infer_types(table)
    return ReadResult(table, columns, "", "excel", {"sheet": ws.title}, notes)


def _read_parquet(path: str, data: bytes) -> ReadResult:
    import pyarrow.parquet as pq

    name = os.path.basename(path)
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:
        raise ImportRefused(f"{name} is not a readable Parquet file ({str(exc).splitlines()[0][:100]})") from None
    arrays = []
    for col in table.columns:
        t = col.type
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
            t = col.type
        if pa.types.is_nested(t) or pa.types.is_binary(t):
            col = pa.chunked_array(
                [pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())]
            )
        elif pa.types.is_large_string(t):
            col = col.cast(pa.string())
        arrays.append(col)
    table = pa.table(arrays, names=[str(n) for n in table.column_names])
    table, notes = _fix_names(table, name)
    columns, table = infer_types(table)
    return ReadResult(table, columns, "", "parquet", {}, notes)


def _read_jsonl(path: str, data: bytes) -> ReadResult:
    name = os.path.basename(path)
    encoding = detect_encoding(data)
    text = _to_utf8(data, encoding, name, validated=encoding == "utf-8").decode("utf-8").lstrip("\ufeff")
    records: list[dict[str, Any]] = []
    order: dict[str, None] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportRefused(f"{name} line {lineno} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ImportRefused(f"{name} line {lineno} is not a JSON object: each line must be one record")
        for k in obj:
            order.setdefault(str(k), None)
        records.append(obj)
    if not records:
        raise ImportRefused(f"{name} is empty: nothing to import")
    names = list(order)

    def cell(v: Any) -> str | None:
        if isinstance(v, (dict, list)):
            return json.dumps(v, ensure_ascii=False)
        return _cell_text(v)

    cols = [pa.array([cell(r.get(n)) for r in records], type=pa.string()) for n in names]
    table = pa.table(cols, names=names)
    columns, table = infer_types(table)
    return ReadResult(table, columns, "", "jsonl", {}, [])
