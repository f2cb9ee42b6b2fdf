"""Item model that shows a pandas DataFrame (a 500-row batch or a 1,000,000-row source) in a QTableView.

Design (see /work/shared/STYLE.md, "Big tables"):

* Columns are pulled out of the frame once as numpy arrays; ``data()`` answers only the roles it handles,
  returns early for all others and formats straight from the array (``~2,200`` calls per repaint).
  Text-like columns of big frames are converted to Python objects lazily, in small blocks, so building the
  model for a million rows costs almost nothing.
* Sorting and filtering use a permutation array (``np.argsort(kind="stable")``, boolean masks), never
  ``QSortFilterProxyModel``.
* The model never writes data on its own: ``setData`` emits :attr:`BatchTableModel.editRequested`; the window
  asks the core to apply the edit and then calls :meth:`BatchTableModel.update_cell` with the result.

Vocabulary: a *row id* is the stable integer in the frame's index; a *position* is the 0-based row number in
the frame; a *view row* is the row number the view sees after sorting/filtering.
"""
from __future__ import annotations


from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QGuiApplication, QPalette

__all__ = ["BatchTableModel", "Flag", "SEVERITIES", "format_value", "group_flags", "severity_colors"]

SEVERITIES = ("low", "medium", "high")
_SEV_LEVEL = {"low": 1, "medium": 2, "high": 3}
_LEVEL_NAME = {1: "low", 2: "medium", 3: "high"}

# Plain ints: comparing an int against an IntEnum member is measurably slower in the hot path.
_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_EDIT = int(Qt.ItemDataRole.EditRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_FONT = int(Qt.ItemDataRole.FontRole)
_ALIGN = int(Qt.ItemDataRole.TextAlignmentRole)
_BACKGROUND = int(Qt.ItemDataRole.BackgroundRole)
_HANDLED_ROLES = frozenset((_DISPLAY, _EDIT, _TOOLTIP, _FONT, _ALIGN, _BACKGROUND))
_DECO_ROLES = [_BACKGROUND, _TOOLTIP, _FONT]
_STATE_ROLES = frozenset((_EDIT, _TOOLTIP, _FONT, _BACKGROUND))

_ALIGN_NUMBER = int((Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter).value)
_ALIGN_TEXT = int((Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter).value)

_NO_FLAGS = Qt.ItemFlag.NoItemFlags
_READONLY_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren
_EDITABLE_FLAGS = _READONLY_FLAGS | Qt.ItemFlag.ItemIsEditable

_HORIZONTAL = Qt.Orientation.Horizontal
_VERTICAL = Qt.Orientation.Vertical

_BLOCK_SHIFT = 10  # lazily converted text columns: blocks of 1024 rows
_BLOCK = 1 << _BLOCK_SHIFT
_LAZY_MIN_ROWS = 50_000  # below this, text columns are converted up front
_MAX_CACHED_BLOCKS = 512  # per column; the cache is simply cleared when it grows past this

_NOT_GIVEN: Any = object()


class Flag(NamedTuple):
    """One finding on a cell (or on a whole row when the column is ``None``)."""

    severity: str  # 'low' | 'medium' | 'high'
    kind: str
    message: str
    suggestion: str | None = None


def group_flags(findings: Iterable[Any]) -> dict[tuple[int, str | None], list[Any]]:
    """Group finding objects that carry ``.row`` and ``.column`` (e.g. the core's checks) into the mapping
    the model takes: ``{(row_id, column or None): [finding, ...]}``."""
    out: dict[tuple[int, str | None], list[Any]] = {}
    for f in findings:
        out.setdefault((int(f.row), f.column), []).append(f)
    return out


def _as_flag(f: Any) -> Flag:
    if isinstance(f, Flag):
        return f
    if isinstance(f, (tuple, list)):
        return Flag(*f) if len(f) >= 4 else Flag(*f, *([None] * (4 - len(f))))
    # dataclass-like object from the core
    return Flag(
        getattr(f, "severity", "medium"),
        getattr(f, "kind", ""),
        getattr(f, "message", str(f)),
        getattr(f, "suggestion", None),
    )


# --------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------
def _fmt_float(v: float) -> str:
    """Compact float text: up to 10 significant digits, no trailing-zero noise, integers without '.0'."""
    if v != v:
        return ""
    s = "%.10g" % v
    if "e" in s and v.is_integer() and -1e16 < v < 1e16:
        return "%d" % v
    return s


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float):
        return v != v
    try:
        return bool(pd.isna(v)) if np.ndim(v) == 0 else False
    except (TypeError, ValueError):
        return False


def format_value(v: Any) -> str:
    """Display text of one value, following the same rules as the table (missing -> '')."""
    if v is None or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _fmt_float(float(v))
    if _is_missing(v):
        return ""
    if isinstance(v, np.datetime64):
        return str(pd.Timestamp(v))
    return str(v)


def _edit_text(v: Any) -> str:
    """Full-precision text put in the editor (so an unchanged commit compares equal)."""
    if isinstance(v, (float, np.floating)) and not _is_missing(v):
        f = float(v)
        return "%d" % f if f.is_integer() and abs(f) < 1e16 else repr(f)
    return format_value(v)


# --------------------------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------------------------
_K_FLOAT, _K_INT, _K_BOOL, _K_OBJ = "float", "int", "bool", "obj"


class _Column:
    """One column pulled out of the frame: numpy values, optional missing mask, a formatter ``pos -> str``."""

    __slots__ = ("name", "kind", "values", "mask", "series", "owned", "blocks", "fmt", "numeric")

    def __init__(self, name: str, series: pd.Series):
        self.name = name
        self.series: pd.Series | None = None  # kept only for lazily converted text columns
        self.mask: np.ndarray | None = None
        self.blocks: dict[int, np.ndarray] | None = None
        self.owned = False  # True once values is our own writable copy
        dtype = series.dtype
        np_dtype = dtype if isinstance(dtype, np.dtype) else getattr(dtype, "numpy_dtype", None)
        is_masked = not isinstance(dtype, np.dtype) and np_dtype is not None and np_dtype.kind in "fiub"
        if isinstance(dtype, np.dtype) and dtype.kind in "fiub" or is_masked:
            if is_masked:
                na = series.isna().to_numpy()
                fill = False if np_dtype.kind == "b" else 0
                self.values = series.to_numpy(dtype=np_dtype, na_value=fill)
                self.mask = na if na.any() else None
            else:
                self.values = series.to_numpy()
            k = np_dtype.kind
            self.kind = _K_FLOAT if k == "f" else _K_BOOL if k == "b" else _K_INT
        else:
            self.kind = _K_OBJ
            if len(series) >= _LAZY_MIN_ROWS:
                self.values = None
                self.series = series
                self.blocks = {}
            else:
                self.values = self._to_objects(series)
        self.numeric = self.kind in (_K_FLOAT, _K_INT)
        self.fmt = self._make_formatter()

    @staticmethod
    def _to_objects(series: pd.Series) -> np.ndarray:
        arr = series.to_numpy(dtype=object, na_value=None)
        return arr if arr.flags.writeable else arr.copy()

    # -- values ------------------------------------------------------------------------------------------------
    def _block(self, b: int) -> np.ndarray:
        blocks = self.blocks
        if len(blocks) >= _MAX_CACHED_BLOCKS:
            blocks.clear()
        arr = self._to_objects(self.series.iloc[b << _BLOCK_SHIFT : (b + 1) << _BLOCK_SHIFT])
        blocks[b] = arr
        return arr

    def value(self, pos: int) -> Any:
        """The raw value at a position (``None`` for missing)."""
        if self.mask is not None and self.mask[pos]:
            return None
        if self.values is None:
            b = pos >> _BLOCK_SHIFT
            blk = self.blocks.get(b)
            if blk is None:
                blk = self._block(b)
            return blk[pos & (_BLOCK - 1)]
        v = self.values[pos]
        if self.kind == _K_FLOAT:
            v = float(v)
            return None if v != v else v
        if self.kind == _K_INT:
            return int(v)
        if self.kind == _K_BOOL:
            return bool(v)
        return None if _is_missing(v) else v

    def materialize(self) -> None:
        """Make ``values`` a full, writable numpy array (needed before writing one cell)."""
        if self.values is None:
            self.values = self._to_objects(self.series)
            self.series = None
            self.blocks = None
            self.owned = True
        elif not self.owned:
            self.values = np.array(self.values, copy=True)
            if self.mask is not None:
                self.mask = self.mask.copy()
            self.owned = True

    def set_value(self, pos: int, v: Any) -> None:
        self.materialize()
        missing = _is_missing(v)
        if self.kind == _K_INT and not missing and isinstance(v, (float, np.floating)):
            if float(v).is_integer():
                v = int(v)
            else:  # a fraction in an integer column: the column becomes float (missing -> NaN)
                vals = self.values.astype(np.float64)
                if self.mask is not None:
                    vals[self.mask] = np.nan
                self.values, self.mask, self.kind = vals, None, _K_FLOAT
        if self.kind != _K_OBJ:
            ok = missing or (
                isinstance(v, (bool, np.bool_)) if self.kind == _K_BOOL else
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) if self.kind == _K_INT else
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            )
            if missing and self.kind == _K_FLOAT:
                self.values[pos] = np.nan
            elif missing:
                if self.mask is None:
                    self.mask = np.zeros(len(self.values), dtype=bool)
                self.mask[pos] = True
            elif ok:
                self.values[pos] = v
                if self.mask is not None:
                    self.mask[pos] = False
            else:  # a value the numpy dtype cannot hold: fall back to an object column
                obj = self.values.astype(object)
                if self.kind == _K_FLOAT:
                    obj[np.isnan(self.values)] = None
                if self.mask is not None:
                    obj[self.mask] = None
                self.values, self.mask, self.kind = obj, None, _K_OBJ
                self.values[pos] = v
        else:
            self.values[pos] = None if missing else v
        self.numeric = self.kind in (_K_FLOAT, _K_INT)
        self.fmt = self._make_formatter()

    # -- formatting --------------------------------------------------------------------------------------------
    def _make_formatter(self):
        kind, mask = self.kind, self.mask
        if self.values is None:  # lazily converted text
            get_block, blocks, low = self._block, self.blocks, _BLOCK - 1

            def fmt(pos: int, blocks=blocks, get_block=get_block) -> str:
                blk = blocks.get(pos >> _BLOCK_SHIFT)
                if blk is None:
                    blk = get_block(pos >> _BLOCK_SHIFT)
                v = blk[pos & low]
                return v if type(v) is str else format_value(v)

            return fmt
        a = self.values
        if kind == _K_FLOAT:
            def fmt(pos: int, a=a) -> str:  # _fmt_float inlined: this runs for every painted float cell
                v = a.item(pos)
                if v != v:
                    return ""
                s = "%.10g" % v
                if "e" in s and v.is_integer() and -1e16 < v < 1e16:
                    return "%d" % v
                return s
        elif kind == _K_INT:
            def fmt(pos: int, a=a) -> str:
                return str(a.item(pos))
        elif kind == _K_BOOL:
            def fmt(pos: int, a=a) -> str:
                return "True" if a[pos] else "False"
        else:
            def fmt(pos: int, a=a, f=format_value) -> str:
                v = a[pos]
                return v if type(v) is str else f(v)
        if mask is not None:
            inner = fmt

            def fmt(pos: int, m=mask, inner=inner) -> str:  # noqa: F811
                return "" if m[pos] else inner(pos)
        return fmt

    # -- vectorised helpers (sort / find) ----------------------------------------------------------------------
    def sort_key(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(key array, missing mask or None) for the whole column; keys compare like the values."""
        if self.kind in (_K_FLOAT, _K_INT, _K_BOOL):
            missing = np.isnan(self.values) if self.kind == _K_FLOAT else self.mask
            return self.values, missing
        src = self.series if self.values is None else pd.Series(self.values, dtype=object)
        try:
            codes, _ = pd.factorize(src, sort=True)
        except TypeError:  # mixed, unorderable objects: order by display text
            codes, _ = pd.factorize(pd.Series([format_value(v) for v in src], dtype=object), sort=True)
        missing = codes < 0
        return codes, (missing if missing.any() else None)

    def matches(self, text: str, case_sensitive: bool) -> np.ndarray:
        """Boolean array: cells whose display text contains ``text`` (numbers: equal to it)."""
        n = len(self.series) if self.values is None else len(self.values)
        if self.kind in (_K_FLOAT, _K_INT):
            try:
                x = float(text.strip().replace(",", ""))
            except ValueError:
                return np.zeros(n, dtype=bool)
            hit = self.values == x
            if self.kind == _K_FLOAT:
                # also match the text as displayed (rounded to 10 significant digits)
                tol = abs(x) * 5e-10 if x else 0.0
                hit |= np.abs(self.values - x) <= tol
            if self.mask is not None:
                hit &= ~self.mask
            return hit
        if self.kind == _K_BOOL:
            t = text.strip().lower()
            if t not in ("true", "false"):
                return np.zeros(n, dtype=bool)
            hit = self.values == (t == "true")
            return hit & ~self.mask if self.mask is not None else hit
        s = self.series if self.values is None else pd.Series(self.values, dtype=object)
        try:
            hit = s.str.contains(text, case=case_sensitive, regex=False, na=False)
        except (AttributeError, TypeError):
            hit = pd.Series([format_value(v) for v in s]).str.contains(
                text, case=case_sensitive, regex=False, na=False
            )
        out = np.array(hit.to_numpy(dtype=bool, na_value=False), dtype=bool)  # writable copy
        if self.values is not None and s.dtype == object and not out.all():
            # non-string objects (dates, numbers in an object column) are searched by their display text
            nonstr = np.fromiter((type(v) is not str and v is not None for v in self.values), bool, n)
            if nonstr.any():
                idx = np.flatnonzero(nonstr)
                needle = text if case_sensitive else text.lower()
                for i in idx:
                    t = format_value(self.values[i])
                    out[i] = needle in (t if case_sensitive else t.lower())
        return out


# --------------------------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------------------------
_ACCENTS = {1: QColor(66, 133, 244), 2: QColor(245, 166, 35), 3: QColor(229, 57, 53)}


def _blend(base: QColor, accent: QColor, t: float) -> QColor:
    return QColor(
        round(base.red() + (accent.red() - base.red()) * t),
        round(base.green() + (accent.green() - base.green()) * t),
        round(base.blue() + (accent.blue() - base.blue()) * t),
    )


def severity_colors(palette: QPalette | None = None) -> dict[int, QColor]:
    """Opaque background colours per severity level (1..3) tinted from the palette's Base colour.

    The tint is light on light palettes and stronger on dark ones, so the palette's own Text colour stays
    readable on top in both.
    """
    if palette is None:
        palette = QGuiApplication.palette() if QGuiApplication.instance() else QPalette()
    base = palette.color(QPalette.ColorRole.Base)
    dark = base.lightness() < 128
    weights = {1: 0.30, 2: 0.38, 3: 0.42} if dark else {1: 0.20, 2: 0.35, 3: 0.30}
    return {lvl: _blend(base, _ACCENTS[lvl], w) for lvl, w in weights.items()}


def _flag_lines(flags: Sequence[Flag], prefix: str = "") -> list[str]:
    lines = []
    for f in sorted(flags, key=lambda f: -_SEV_LEVEL.get(str(f.severity).lower(), 1)):
        head = f"{prefix}[{str(f.severity).upper()}] {f.kind}: {f.message}" if f.kind else f"{prefix}[{str(f.severity).upper()}] {f.message}"
        lines.append(head)
        if f.suggestion not in (None, ""):
            lines.append(f"    suggestion: {format_value(f.suggestion)}")
    return lines


def _max_level(flags: Iterable[Flag]) -> int:
    return max((_SEV_LEVEL.get(str(f.severity).lower(), 1) for f in flags), default=0)


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------
FlagKey = tuple[int, "str | None"]


class BatchTableModel(QAbstractTableModel):
    """Table model over a DataFrame whose index holds stable integer row ids.

    Parameters
    ----------
    frame:
        Current values; ``frame.index`` are the row ids.
    original:
        Optional frame of the same shape with the values before any edit; cells that differ are shown as edited
        (bold italic, tooltip ``original: X``).
    flags:
        ``{(row_id, column_name or None): [(severity, kind, message, suggestion), ...]}``.
    row_labels:
        Optional array (one entry per frame row, in frame order) shown in the vertical header instead of the
        row id, e.g. the source row number.
    column_types:
        Optional ``{column: logical type}`` shown in the column header tooltip.
    editable:
        Whether cells report ``ItemIsEditable``.
    """

    #: The user committed ``text`` in a cell. Nothing is written; the window applies the edit and calls
    #: :meth:`update_cell`. ``row_id`` is a Python int (declared ``object`` so 64-bit ids pass unharmed).
    editRequested = Signal(object, str, str)
    #: Emitted after sorting/filtering changed the rows on show: (rows shown, rows in the frame).
    viewRowsChanged = Signal(int, int)

    def __init__(
        self,
        frame: pd.DataFrame,
        original: pd.DataFrame | None = None,
        flags: Mapping[FlagKey, Sequence[Any]] | None = None,
        *,
        row_labels: Sequence[Any] | np.ndarray | None = None,
        column_types: Mapping[str, str] | None = None,
        editable: bool = True,
        parent=None,
    ):
        super().__init__(parent)
        self._editable = editable
        self._item_flags = _EDITABLE_FLAGS if editable else _READONLY_FLAGS
        self._column_types: dict[str, str] = dict(column_types or {})
        self._colors = severity_colors()
        self._load(frame, original, flags, row_labels)

    # ------------------------------------------------------------------------------------------------- loading
    def _load(self, frame, original, flags, row_labels) -> None:
        if not frame.columns.is_unique:
            raise ValueError("column names must be unique")
        self._index = frame.index
        self._ids = np.asarray(frame.index, dtype=np.int64)
        self._n = len(frame)
        self._names: list[str] = [str(c) for c in frame.columns]
        self._col_of = {name: i for i, name in enumerate(self._names)}
        self._cols = [_Column(self._names[i], frame.iloc[:, i]) for i in range(frame.shape[1])]
        self._fmts = [c.fmt for c in self._cols]
        self._aligns = [_ALIGN_NUMBER if c.numeric else _ALIGN_TEXT for c in self._cols]
        self._set_row_labels(row_labels)
        self._sort_col = -1
        self._sort_order = Qt.SortOrder.AscendingOrder
        self._user_filter: np.ndarray | None = None  # positions, sorted
        self._flagged_only = False
        self._perm: np.ndarray | None = None  # view row -> position; None = identity
        self._inv: np.ndarray | None = None  # position -> view row (-1 hidden); lazily built
        self._rows = self._n
        self._find_cache: tuple[str, bool, list[np.ndarray | None]] | None = None
        self._cell_flags: dict[int, dict[int, list[Flag]]] = {}
        self._row_flags: dict[int, list[Flag]] = {}
        self._edits: dict[int, dict[int, Any]] = {}  # pos -> {col: original value}
        self._deco: dict[int, dict[int, tuple]] = {}  # pos -> {col: (brush, font, tooltip)}
        self._head: dict[int, tuple] = {}  # pos -> (brush, tooltip) for the vertical header
        self._bold_italic = QFont()
        self._bold_italic.setItalic(True)
        self._bold_italic.setBold(True)
        if original is not None:
            self._edits = self._diff(frame, original)
        if flags:
            self._ingest_flags(flags, None)
        for pos in set(self._edits) | set(self._cell_flags) | set(self._row_flags):
            self._rebuild_deco(pos)

    def set_frame(
        self,
        frame: pd.DataFrame,
        original: pd.DataFrame | None = None,
        flags: Mapping[FlagKey, Sequence[Any]] | None = None,
        *,
        row_labels=None,
        column_types: Mapping[str, str] | None = None,
    ) -> None:
        """Replace everything (model reset). Sorting and filters are cleared."""
        self.beginResetModel()
        if column_types is not None:
            self._column_types = dict(column_types)
        self._load(frame, original, flags, row_labels)
        self.endResetModel()
        self.viewRowsChanged.emit(self._rows, self._n)

    def _set_row_labels(self, row_labels) -> None:
        if row_labels is None:
            self._vlabels = self._ids
        else:
            labels = np.asarray(row_labels)
            if len(labels) != self._n:
                raise ValueError(f"row_labels has {len(labels)} entries, the frame {self._n} rows")
            self._vlabels = labels

    def set_row_labels(self, row_labels) -> None:
        """Vertical header labels, one per frame row in frame order (None: the row ids)."""
        self._set_row_labels(row_labels)
        if self._rows:
            self.headerDataChanged.emit(_VERTICAL, 0, self._rows - 1)

    def set_column_types(self, column_types: Mapping[str, str]) -> None:
        self._column_types = dict(column_types)
        if self._cols:
            self.headerDataChanged.emit(_HORIZONTAL, 0, len(self._cols) - 1)

    def _diff(self, frame: pd.DataFrame, original: pd.DataFrame) -> dict[int, dict[int, Any]]:
        if not original.index.equals(frame.index) or list(original.columns) != list(frame.columns):
            original = original.reindex(index=frame.index, columns=frame.columns)
        edits: dict[int, dict[int, Any]] = {}
        for c in range(frame.shape[1]):
            cur, org = frame.iloc[:, c], original.iloc[:, c]
            cur_na, org_na = cur.isna().to_numpy(), org.isna().to_numpy()
            try:
                eq = cur.eq(org).to_numpy(dtype=bool, na_value=False)
            except (TypeError, ValueError):
                eq = (cur.astype(object).map(format_value) == org.astype(object).map(format_value)).to_numpy()
            changed = np.flatnonzero(~(eq | (cur_na & org_na)))
            if len(changed):
                org_vals = org.iloc[changed].to_numpy(dtype=object)
                for pos, v in zip(changed.tolist(), org_vals):
                    edits.setdefault(pos, {})[c] = None if _is_missing(v) else v
        return edits

    # ----------------------------------------------------------------------------------------- flags & state
    def _pos_of(self, row_id: int) -> int:
        try:
            loc = self._index.get_loc(row_id)
        except (KeyError, TypeError):
            return -1
        return loc if isinstance(loc, (int, np.integer)) else -1

    def _positions_of(self, row_ids) -> np.ndarray:
        idx = self._index.get_indexer(np.asarray(row_ids, dtype=np.int64))
        return idx[idx >= 0]

    def _ingest_flags(self, flags: Mapping[FlagKey, Sequence[Any]], only: set[int] | None) -> set[int]:
        """Add flags to the internal maps (positions), optionally only for positions in ``only``."""
        touched: set[int] = set()
        keys = list(flags.keys())
        if not keys:
            return touched
        rids = np.fromiter((k[0] for k in keys), dtype=np.int64, count=len(keys))
        poss = self._index.get_indexer(rids).tolist()
        for (rid, col), pos in zip(keys, poss):
            if pos < 0 or (only is not None and pos not in only):
                continue
            items = [_as_flag(f) for f in flags[(rid, col)]]
            if not items:
                continue
            ci = self._col_of.get(str(col)) if col is not None else None
            if ci is None:
                if col is not None:  # unknown column: keep the finding on the row rather than lose it
                    items = [f._replace(message=f"{col}: {f.message}") for f in items]
                self._row_flags.setdefault(pos, []).extend(items)
            else:
                self._cell_flags.setdefault(pos, {}).setdefault(ci, []).extend(items)
            touched.add(pos)
        return touched

    def _rebuild_deco(self, pos: int) -> None:
        colors, bi = self._colors, self._bold_italic
        cells = self._cell_flags.get(pos, {})
        edits = self._edits.get(pos, {})
        row = self._row_flags.get(pos, [])
        row_level = _max_level(row)
        deco: dict[int, tuple] = {}
        for c in set(cells) | set(edits) | ({0} if row and self._cols else set()):
            fl = cells.get(c, [])
            level = _max_level(fl)
            lines: list[str] = []
            if c in edits:
                lines.append(f"original: {format_value(edits[c]) or '(empty)'}")
            lines += _flag_lines(fl)
            if c == 0 and row:
                level = max(level, row_level)
                lines += _flag_lines(row, prefix="row ")
            brush = QBrush(colors[level]) if level else None
            deco[c] = (brush, bi if c in edits else None, "\n".join(lines) or None)
        if deco:
            self._deco[pos] = deco
        else:
            self._deco.pop(pos, None)
        head_level = max(row_level, max((_max_level(v) for v in cells.values()), default=0))
        if head_level or edits:
            tip = _flag_lines(row)
            n_cell = sum(len(v) for v in cells.values())
            if n_cell:
                tip.append(f"{n_cell} cell finding(s) in this row")
            if edits:
                tip.append(f"{len(edits)} edited cell(s)")
            self._head[pos] = (QBrush(colors[head_level]) if head_level else None, "\n".join(tip))
        else:
            self._head.pop(pos, None)

    def update_flags(self, flags: Mapping[FlagKey, Sequence[Any]], row_ids: Iterable[int] | None = None) -> None:
        """Replace the flags, either all of them (``row_ids`` None) or only those of the given rows.

        A full replacement re-applies the "only flagged rows" filter; a partial one leaves the rows on show
        alone (a row whose last flag was resolved stays visible so the user sees it turn clean).
        """
        if row_ids is None:
            old = set(self._cell_flags) | set(self._row_flags)
            self._cell_flags, self._row_flags = {}, {}
            touched = self._ingest_flags(flags, None) | old
            for pos in touched:
                self._rebuild_deco(pos)
            if self._flagged_only:
                self._relayout()
            if self._rows and self._cols:
                self.dataChanged.emit(self.index(0, 0), self.index(self._rows - 1, len(self._cols) - 1), _DECO_ROLES)
                self.headerDataChanged.emit(_VERTICAL, 0, self._rows - 1)
            return
        only = set(self._positions_of(list(row_ids)).tolist())
        for pos in only:
            self._cell_flags.pop(pos, None)
            self._row_flags.pop(pos, None)
        self._ingest_flags(flags, only)
        for pos in only:
            self._rebuild_deco(pos)
            vr = self._view_row_of_pos(pos)
            if vr >= 0 and self._cols:
                self.dataChanged.emit(self.index(vr, 0), self.index(vr, len(self._cols) - 1), _DECO_ROLES)
                self.headerDataChanged.emit(_VERTICAL, vr, vr)

    def update_cell(self, row_id: int, column: str, new_value: Any, original_value: Any = _NOT_GIVEN) -> None:
        """Show ``new_value`` in one cell (after the core applied an edit) and repaint just that cell.

        ``original_value`` is the value before any edit; the cell shows as edited while the two differ. When it
        is omitted the already known original is kept (or the value before this update becomes the original).
        """
        pos = self._pos_of(row_id)
        c = self._col_of.get(column)
        if pos < 0 or c is None:
            raise KeyError((row_id, column))
        col = self._cols[c]
        if original_value is _NOT_GIVEN:
            known = self._edits.get(pos, {})
            original_value = known[c] if c in known else col.value(pos)
        was_numeric = col.numeric
        col.set_value(pos, new_value)
        self._fmts[c] = col.fmt
        if col.numeric != was_numeric:
            self._aligns[c] = _ALIGN_NUMBER if col.numeric else _ALIGN_TEXT
        if _same(new_value, original_value):
            if pos in self._edits:
                self._edits[pos].pop(c, None)
                if not self._edits[pos]:
                    del self._edits[pos]
        else:
            self._edits.setdefault(pos, {})[c] = None if _is_missing(original_value) else original_value
        self._rebuild_deco(pos)
        self._find_cache = None
        vr = self._view_row_of_pos(pos)
        if vr >= 0:
            idx = self.index(vr, c)
            self.dataChanged.emit(idx, idx)
            self.headerDataChanged.emit(_VERTICAL, vr, vr)

    def set_palette(self, palette: QPalette) -> None:
        """Recompute the severity colours for a new palette (the view calls this on palette changes)."""
        colors = severity_colors(palette)
        if colors == self._colors:
            return
        self._colors = colors
        for pos in list(self._deco) + list(self._head):
            self._rebuild_deco(pos)
        if self._rows and self._cols:
            self.dataChanged.emit(self.index(0, 0), self.index(self._rows - 1, len(self._cols) - 1), [_BACKGROUND])
            self.headerDataChanged.emit(_VERTICAL, 0, self._rows - 1)

    # ------------------------------------------------------------------------------------- state queries
    def is_edited(self, row_id: int, column: str) -> bool:
        pos, c = self._pos_of(row_id), self._col_of.get(column)
        return pos >= 0 and c is not None and c in self._edits.get(pos, {})

    def original_value(self, row_id: int, column: str) -> Any:
        """The imported value of an edited cell (``None`` when the cell is not edited or was imported empty)."""
        pos, c = self._pos_of(row_id), self._col_of.get(column)
        if pos < 0 or c is None:
            return None
        return self._edits.get(pos, {}).get(c)

    def set_editable(self, editable: bool) -> None:
        """Cells accept edits (queued / in-review batches) or are read-only (approved / rejected ones)."""
        self._editable = editable
        self._item_flags = _EDITABLE_FLAGS if editable else _READONLY_FLAGS

    def cell_flags(self, row_id: int, column: str | None) -> list[Flag]:
        pos = self._pos_of(row_id)
        if column is None:
            return list(self._row_flags.get(pos, []))
        c = self._col_of.get(column)
        return list(self._cell_flags.get(pos, {}).get(c, []))

    def flagged_row_ids(self) -> np.ndarray:
        """Row ids that have at least one flag (row or cell), in frame order."""
        return self._ids[self._flagged_positions()]

    def value(self, row_id: int, column: str) -> Any:
        """The value the model currently shows (``None`` for missing)."""
        pos, c = self._pos_of(row_id), self._col_of.get(column)
        if pos < 0 or c is None:
            raise KeyError((row_id, column))
        return self._cols[c].value(pos)

    def _flagged_positions(self) -> np.ndarray:
        return np.array(sorted(set(self._cell_flags) | set(self._row_flags)), dtype=np.int64)

    # ---------------------------------------------------------------------------------- Qt model interface
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else self._rows

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._cols)

    def data(self, index, role=_DISPLAY):
        # Hot path: ~7 calls per painted cell. Cheapest checks first, no work for roles we do not answer.
        # (Overriding multiData() to answer all roles at once would be faster, but QModelRoleData.setData()
        # corrupts None's refcount in PySide6 6.12 and crashes the interpreter.)
        if role == _DISPLAY:
            r = index.row()
            perm = self._perm
            return self._fmts[index.column()](r if perm is None else perm.item(r))
        if role == _ALIGN:
            return self._aligns[index.column()]
        if role not in _STATE_ROLES:
            return None
        if role == _EDIT:
            return _edit_text(self._cols[index.column()].value(self._pos(index.row())))
        deco = self._deco
        if not deco:
            return None
        r = index.row()
        perm = self._perm
        cells = deco.get(r if perm is None else perm.item(r))
        if cells is None:
            return None
        cell = cells.get(index.column())
        if cell is None:
            return None
        if role == _BACKGROUND:
            return cell[0]
        if role == _FONT:
            return cell[1]
        return cell[2]  # tooltip

    def headerData(self, section, orientation, role=_DISPLAY):
        if role not in _HANDLED_ROLES:
            return None
        if orientation == _HORIZONTAL:
            if not 0 <= section < len(self._cols):
                return None
            if role == _DISPLAY:
                return self._names[section]
            if role == _TOOLTIP:
                t = self._column_types.get(self._names[section])
                return f"{self._names[section]}\ntype: {t}" if t else self._names[section]
            return None
        if not 0 <= section < self._rows:
            return None
        perm = self._perm
        pos = section if perm is None else perm.item(section)
        if role == _DISPLAY:
            v = self._vlabels[pos]
            return str(v.item() if isinstance(v, np.generic) else v)
        head = self._head.get(pos)
        if head is None:
            return None
        if role == _BACKGROUND:
            return head[0]
        if role == _TOOLTIP:
            return head[1] or None
        return None

    def flags(self, index):
        # Called once per painted cell: return a prebuilt value (building it with enum '|' costs ~3 us).
        return self._item_flags if index.isValid() else _NO_FLAGS

    def setData(self, index, value, role=_EDIT) -> bool:
        """Emit :attr:`editRequested` for a committed edit; never changes the data (returns False)."""
        if role != _EDIT or not index.isValid() or not self._editable:
            return False
        pos = self._pos(index.row())
        c = index.column()
        text = "" if value is None else str(value)
        if text == _edit_text(self._cols[c].value(pos)):
            return False  # nothing changed: do not create a no-op edit
        self.editRequested.emit(int(self._ids[pos]), self._names[c], text)
        return False

    # ------------------------------------------------------------------------------------------ row mapping
    def _pos(self, view_row: int) -> int:
        return view_row if self._perm is None else self._perm.item(view_row)

    def _view_row_of_pos(self, pos: int) -> int:
        if self._perm is None:
            return pos if 0 <= pos < self._n else -1
        if self._inv is None:
            inv = np.full(self._n, -1, dtype=np.int64)
            inv[self._perm] = np.arange(len(self._perm))
            self._inv = inv
        return int(self._inv[pos])

    def row_id_at(self, view_row: int) -> int:
        """Row id shown at ``view_row``."""
        if not 0 <= view_row < self._rows:
            raise IndexError(view_row)
        return int(self._ids[self._pos(view_row)])

    def view_row_of(self, row_id: int) -> int:
        """View row showing ``row_id``, or -1 if it is filtered out or unknown."""
        pos = self._pos_of(row_id)
        return -1 if pos < 0 else self._view_row_of_pos(pos)

    def index_of(self, row_id: int, column: str) -> QModelIndex:
        """Model index of a cell, invalid when the row is hidden."""
        vr, c = self.view_row_of(row_id), self._col_of.get(column, -1)
        return self.index(vr, c) if vr >= 0 and c >= 0 else QModelIndex()

    def column_name(self, column: int) -> str:
        return self._names[column]

    def column_index(self, name: str) -> int:
        return self._col_of.get(name, -1)

    def total_row_count(self) -> int:
        return self._n

    # --------------------------------------------------------------------------------------- sort & filter
    def sort(self, column: int, order=Qt.SortOrder.AscendingOrder) -> None:
        """Stable sort by one column (missing values last in both orders); ``column < 0`` restores frame order."""
        self._sort_col = column if 0 <= column < len(self._cols) else -1
        self._sort_order = Qt.SortOrder(order)
        self._relayout()

    def sort_column(self) -> tuple[int, Qt.SortOrder]:
        return self._sort_col, self._sort_order

    def set_filter_rows(self, rows: np.ndarray | Sequence[int] | None) -> None:
        """Show only some rows: a boolean mask over the frame rows (frame order) or a list of row ids.

        ``None`` clears the filter. Combines (AND) with :meth:`set_show_only_flagged`.
        """
        if rows is None:
            self._user_filter = None
        else:
            arr = np.asarray(rows)
            if arr.dtype == bool:
                if len(arr) != self._n:
                    raise ValueError(f"mask has {len(arr)} entries, the frame {self._n} rows")
                self._user_filter = np.flatnonzero(arr)
            else:
                self._user_filter = np.unique(self._positions_of(arr))
        self._relayout()

    def set_show_only_flagged(self, on: bool) -> None:
        """Show only rows that carry at least one flag (row- or cell-level)."""
        self._flagged_only = bool(on)
        self._relayout()

    def show_only_flagged(self) -> bool:
        return self._flagged_only

    def _compute_perm(self) -> np.ndarray | None:
        base: np.ndarray | None = self._user_filter
        if self._flagged_only:
            flagged = self._flagged_positions()
            base = flagged if base is None else np.intersect1d(base, flagged, assume_unique=True)
        if self._sort_col < 0:
            return base
        key, missing = self._cols[self._sort_col].sort_key()
        if base is not None:
            key = key[base]
            missing = None if missing is None else missing[base]
        if missing is not None and missing.any():
            valid = np.flatnonzero(~missing)
            order = valid[_stable_argsort(key[valid], self._sort_order)]
            order = np.concatenate([order, np.flatnonzero(missing)])
        else:
            order = _stable_argsort(key, self._sort_order)
        return order if base is None else base[order]

    def _relayout(self) -> None:
        old_perm = self._perm
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()  # after the signal: listeners create theirs in the slot
        old_pos = [(p, (p.row() if old_perm is None else int(old_perm[p.row()])), p.column()) for p in persistent]
        self._perm = self._compute_perm()
        self._inv = None
        self._rows = self._n if self._perm is None else len(self._perm)
        self._find_cache = None
        if old_pos:
            frm, to = [], []
            for p, pos, c in old_pos:
                vr = self._view_row_of_pos(pos)
                frm.append(p)
                to.append(self.index(vr, c) if vr >= 0 else QModelIndex())
            self.changePersistentIndexList(frm, to)
        self.layoutChanged.emit()
        self.viewRowsChanged.emit(self._rows, self._n)

    # -------------------------------------------------------------------------------------------------- find
    def find(
        self, text: str, start: tuple[int, int] | None = None, *, case_sensitive: bool = False, backwards: bool = False
    ) -> tuple[int, int] | None:
        """Next cell (view row, column) after ``start`` whose text contains ``text``, wrapping around.

        Text columns match by substring (case-insensitive by default); number columns match when ``text``
        parses as a number equal to the cell (as displayed). Each column is searched in one vectorised pass;
        the result is cached per text until the data, sort or filter change.
        """
        if not text or not self._rows or not self._cols:
            return None
        cache = self._find_cache
        if cache is None or cache[0] != text or cache[1] != case_sensitive:
            hits: list[np.ndarray | None] = []
            for col in self._cols:
                m = col.matches(text, case_sensitive)
                if self._perm is not None:
                    m = m[self._perm]
                nz = np.flatnonzero(m)
                hits.append(nz if len(nz) else None)
            cache = self._find_cache = (text, case_sensitive, hits)
        hits = cache[2]
        ncol = len(self._cols)
        if start is None:
            r0, c0 = (self._rows, 0) if backwards else (-1, ncol - 1)
        else:
            r0, c0 = start
        best: tuple[int, int] | None = None
        for wrap in (False, True):
            for c, nz in enumerate(hits):
                if nz is None:
                    continue
                if not backwards:
                    # first hit strictly after (r0, c0) in row-major order
                    lo = r0 + 1 if c <= c0 else r0
                    i = np.searchsorted(nz, 0 if wrap else lo)
                    if i < len(nz):
                        cand = (int(nz[i]), c)
                        if best is None or cand < best:
                            best = cand
                else:
                    hi = r0 - 1 if c >= c0 else r0
                    i = np.searchsorted(nz, self._rows - 1 if wrap else hi, side="right") - 1
                    if i >= 0:
                        cand = (int(nz[i]), c)
                        if best is None or cand > best:
                            best = cand
            if best is not None:
                return best
        return None


def _stable_argsort(key: np.ndarray, order: Qt.SortOrder) -> np.ndarray:
    if order == Qt.SortOrder.AscendingOrder:
        return np.argsort(key, kind="stable")
    # descending while keeping ties in frame order
    n = len(key)
    return (n - 1 - np.argsort(key[::-1], kind="stable"))[::-1]


def _same(a: Any, b: Any) -> bool:
    ma, mb = _is_missing(a), _is_missing(b)
    if ma or mb:
        return ma and mb
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return format_value(a) == format_value(b)
