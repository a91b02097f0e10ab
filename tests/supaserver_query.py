"""PostgREST query semantics for the loopback Supabase server (tests/supaserver.py).

Kept apart from the HTTP layer so the rules that matter for agroml's correctness are in one place and
read like the server's own: typed comparisons (a timestamp is compared as a timestamp, a uuid as a
uuid, a number as a number, never as text), SQL three-valued logic (NULL matches no comparison, and
`not.eq` does not match NULL either), default null placement (ASC NULLS LAST, DESC NULLS FIRST), and
a B-tree-like index: a query ordered by a column with a lower bound on it (keyset paging) starts
scanning at the bound, while `offset` walks over every skipped row. That makes deep offsets cost
more than keyset pages here too, as they do in PostgreSQL, so benchmarks through this server are
honest about the difference.
"""

from __future__ import annotations

import bisect
import difflib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

# Column types the fake understands; inferred from the rows unless given explicitly.
TYPES = ("bigint", "integer", "numeric", "boolean", "timestamptz", "date", "uuid", "text", "jsonb")
_PG_TYPE_NAMES = {
    "bigint": "bigint",
    "integer": "integer",
    "numeric": "numeric",
    "boolean": "boolean",
    "uuid": "uuid",
    "timestamptz": "timestamp with time zone",
    "date": "date",
    "jsonb": "json",
    "text": "text",
}
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COMPARISONS = {"eq", "neq", "gt", "gte", "lt", "lte"}
_OPERATORS = _COMPARISONS | {"like", "ilike", "in", "is"}
_RESERVED_PARAMS = {
    "select",
    "order",
    "limit",
    "offset",
    "or",
    "and",
    "not.or",
    "not.and",
    "apikey",
    "columns",
    "on_conflict",
}


class PgError(Exception):
    """An error answer in PostgREST's shape: HTTP status plus the {code, details, hint, message} body."""

    def __init__(self, status: int, code: str | None, message: str, details: Any = None, hint: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.hint = status, code, message, details, hint

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "hint": self.hint, "message": self.message}


def _parse_error(kind: str, text: str, details: str) -> PgError:
    return PgError(400, "PGRST100", f'"failed to parse {kind} ({text})" (line 1, column {len(text) + 1})', details)


# --------------------------------------------------------------------------------------------------- types


def infer_type(values: list[Any]) -> str:
    """The PostgreSQL type a column of these JSON values most plausibly has (all non-null values agree)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "text"
    if all(isinstance(v, bool) for v in vals):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "bigint"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
        return "numeric"
    if all(isinstance(v, (dict, list)) for v in vals):
        return "jsonb"
    if all(isinstance(v, str) for v in vals):
        if all(_UUID_RE.match(v) for v in vals):
            return "uuid"
        if all(_TS_RE.match(v) for v in vals):
            return "timestamptz"
        if all(_DATE_RE.match(v) for v in vals):
            return "date"
        return "text"
    return "jsonb"


def _parse_ts(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # Supabase sessions run in UTC


def parse_literal(type_: str, text: str) -> Any:
    """A filter value (always text on the wire) as the column's type, or PostgreSQL's 22P02/22007 error."""
    try:
        if type_ in ("bigint", "integer"):
            if not re.fullmatch(r"\s*[+-]?\d+\s*", text):
                raise ValueError
            return int(text)
        if type_ == "numeric":
            return float(text)
        if type_ == "boolean":
            low = text.strip().lower()
            if low in ("t", "true", "y", "yes", "on", "1"):
                return True
            if low in ("f", "false", "n", "no", "off", "0"):
                return False
            raise ValueError
        if type_ == "timestamptz":
            return _parse_ts(text)
        if type_ == "date":
            return date.fromisoformat(text.strip())
        if type_ == "uuid":
            return uuid.UUID(text.strip()).bytes
        if type_ == "jsonb":
            return json.dumps(json.loads(text), sort_keys=True)
        return text
    except ValueError:
        code = "22007" if type_ in ("timestamptz", "date") else "22P02"
        raise PgError(400, code, f'invalid input syntax for type {_PG_TYPE_NAMES[type_]}: "{text}"') from None


def typed_value(type_: str, value: Any) -> Any:
    """A stored JSON value as a comparable Python value of the column's type (None stays None)."""
    if value is None:
        return None
    if type_ in ("bigint", "integer", "numeric", "boolean"):
        return value
    if type_ == "timestamptz":
        return _parse_ts(value)
    if type_ == "date":
        return date.fromisoformat(value)
    if type_ == "uuid":
        return uuid.UUID(value).bytes
    if type_ == "jsonb":
        return json.dumps(value, sort_keys=True)
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------------------------------- table


class Table:
    """Rows of one table plus caches (typed columns, sorted orders) rebuilt when the rows change."""

    def __init__(self, name: str, columns: list[str], types: dict[str, str] | None = None):
        self.name, self.columns, self.explicit_types = name, list(columns), dict(types or {})
        bad = {t for t in self.explicit_types.values() if t not in TYPES}
        if bad:
            raise ValueError(f"unknown column types {sorted(bad)}; use one of {TYPES}")
        self.rows: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self._typed: dict[str, list[Any]] = {}
        self._types: dict[str, str] = {}
        self._orders: dict[tuple, tuple[list[int], int, int]] = {}

    def add(self, rows: list[dict[str, Any]]) -> None:
        with self.lock:
            for row in rows:
                extra = set(row) - set(self.columns)
                if extra:
                    raise ValueError(f"table {self.name!r} has no columns {sorted(extra)}; add_table() them first")
            self.rows.extend({c: row.get(c) for c in self.columns} for row in rows)
            self.changed()

    def changed(self) -> None:
        with self.lock:
            self._typed.clear()
            self._types.clear()
            self._orders.clear()

    def column_type(self, column: str) -> str:
        with self.lock:
            if column not in self._types:
                self._types[column] = self.explicit_types.get(column) or infer_type([r[column] for r in self.rows])
            return self._types[column]

    def typed(self, column: str) -> list[Any]:
        with self.lock:
            if column not in self._typed:
                type_ = self.column_type(column)
                self._typed[column] = [typed_value(type_, r[column]) for r in self.rows]
            return self._typed[column]

    def order(self, spec: tuple[tuple[str, bool, bool], ...]) -> tuple[list[int], int, int]:
        """Row indices sorted by spec ((column, desc, nulls_first), ...) and the leading column's non-null span."""
        with self.lock:
            if spec not in self._orders:
                idx = list(range(len(self.rows)))
                for column, desc, nulls_first in reversed(spec):  # stable multi-pass sort, last key first
                    col = self.typed(column)
                    # rank nulls so that after the (possibly reversed) sort they land where asked
                    null_rank = (0 if nulls_first else 1) if not desc else (1 if nulls_first else 0)
                    idx.sort(
                        key=lambda i, col=col, nr=null_rank: (nr, None) if col[i] is None else (1 - nr, col[i]),
                        reverse=desc,
                    )
                lead = self.typed(spec[0][0])
                non_null = [p for p, i in enumerate(idx) if lead[i] is not None]
                span = (non_null[0], non_null[-1] + 1) if non_null else (0, 0)
                self._orders[spec] = (idx, *span)
            return self._orders[spec]

    def missing_column(self, column: str) -> PgError:
        close = difflib.get_close_matches(column, self.columns, n=1)
        hint = f'Perhaps you meant to reference the column "{self.name}.{close[0]}".' if close else None
        return PgError(400, "42703", f"column {self.name}.{column} does not exist", None, hint)


# --------------------------------------------------------------------------------------------------- filters


@dataclass
class Leaf:
    column: str
    op: str
    negate: bool
    value: Any  # typed literal, a list of them for `in`, a compiled regex for like, a keyword for `is`


@dataclass
class Logic:
    kind: str  # "and" | "or"
    negate: bool
    children: list[Any] = field(default_factory=list)


def _split_top(text: str) -> list[str]:
    """Split on commas outside double quotes and parentheses (PostgREST's list syntax)."""
    parts, depth, quoted, escaped, cur = [], 0, False, False, []
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def _like_regex(pattern: str, ignore_case: bool) -> re.Pattern:
    out = []
    for ch in pattern:
        out.append(".*" if ch in "*%" else "." if ch == "_" else re.escape(ch))
    return re.compile("^" + "".join(out) + "$", re.S | (re.I if ignore_case else 0))


def parse_leaf(table: Table, column: str, expr: str, raw: str, kind: str = "filter") -> Leaf:
    """`[not.]op.value` for `column`, typed against the column; PGRST100 when it does not parse."""
    negate = False
    if expr.startswith("not."):
        negate, expr = True, expr[4:]
    op, dot, value = expr.partition(".")
    if not dot or op not in _OPERATORS:
        raise _parse_error(kind, raw, f'unexpected "{op[:1] or expr[:1]}" expecting "not" or operator (eq, gt, ...)')
    if column not in table.columns:
        raise table.missing_column(column)
    type_ = table.column_type(column)
    if op == "is":
        word = value.lower()
        if word not in ("null", "not_null", "true", "false", "unknown"):
            raise _parse_error(kind, raw, f'unexpected "{value[:1]}" expecting null or trilean value')
        return Leaf(column, op, negate, word)
    if op == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise _parse_error(kind, raw, 'unexpected end of input expecting "("')
        inner = value[1:-1]
        items = [] if inner == "" else [_unquote(v) for v in _split_top(inner)]
        return Leaf(column, op, negate, [parse_literal(type_, v) for v in items])
    if op in ("like", "ilike"):
        if type_ != "text":
            raise PgError(
                400,
                "42883",
                f"operator does not exist: {_PG_TYPE_NAMES[type_]} ~~ unknown",
                None,
                "No operator matches the given name and argument types. You might need to add explicit type casts.",
            )
        return Leaf(column, op, negate, _like_regex(value, op == "ilike"))
    return Leaf(column, op, negate, parse_literal(type_, _unquote(value) if kind == "logic tree" else value))


def parse_logic(table: Table, kind: str, negate: bool, body: str, raw: str) -> Logic:
    """The body of or=(...)/and=(...): items are `col.op.value`, `or(...)`, `and(...)`, `not.or(...)`."""
    if not (body.startswith("(") and body.endswith(")")) or body.count("(") < 1:
        raise _parse_error("logic tree", raw, 'unexpected end of input expecting "("')
    node = Logic(kind, negate)
    for item in _split_top(body[1:-1]):
        item = item.strip()
        m = re.match(r"^(not\.)?(and|or)(\(.*\))$", item, re.S)
        if m:
            node.children.append(parse_logic(table, m.group(2), bool(m.group(1)), m.group(3), raw))
            continue
        if item.startswith('"'):
            end = item.find('"', 1)
            column, rest = item[1:end], item[end + 2 :]
        else:
            column, _, rest = item.partition(".")
        if not column or not rest:
            raise _parse_error("logic tree", raw, f'unexpected "{item[:1] or ")"}" expecting field name')
        node.children.append(parse_leaf(table, column, rest, raw, "logic tree"))
    if not node.children:
        raise _parse_error("logic tree", raw, 'unexpected ")" expecting field name')
    return node


def evaluate(node: Any, table: Table, i: int) -> bool | None:
    """SQL three-valued logic: True, False or None (NULL, which a WHERE clause treats as not matching)."""
    if isinstance(node, Logic):
        results = [evaluate(child, table, i) for child in node.children]
        if node.kind == "and":
            out = False if False in results else (None if None in results else True)
        else:
            out = True if True in results else (None if None in results else False)
        return out if not node.negate or out is None else not out
    v = table.typed(node.column)[i]
    op = node.op
    if op == "is":
        word = node.value
        out = {
            "null": v is None,
            "not_null": v is not None,
            "unknown": v is None,
            "true": v is True,
            "false": v is False,
        }[word]
        return not out if node.negate else out
    if v is None:
        return None
    if op == "in":
        out = v in node.value
    elif op in ("like", "ilike"):
        out = bool(node.value.match(v))
    elif op == "eq":
        out = v == node.value
    elif op == "neq":
        out = v != node.value
    elif op == "gt":
        out = v > node.value
    elif op == "gte":
        out = v >= node.value
    elif op == "lt":
        out = v < node.value
    else:
        out = v <= node.value
    return not out if node.negate else out


def _bound(node: Any, column: str, low: bool) -> Any:
    """A value every matching row's `column` is >= (low) or <= (not low), derived from the filter tree."""
    if isinstance(node, Leaf):
        if node.column != column or node.negate:
            return None
        if node.op in (("gt", "gte", "eq") if low else ("lt", "lte", "eq")):
            return node.value
        if node.op == "in" and node.value:
            return min(node.value) if low else max(node.value)
        return None
    if node.negate:
        return None
    bounds = [_bound(child, column, low) for child in node.children]
    known = [b for b in bounds if b is not None]
    if node.kind == "and":
        return (max(known) if low else min(known)) if known else None
    if known and len(known) == len(bounds):
        return min(known) if low else max(known)
    return None


# --------------------------------------------------------------------------------------------------- query


@dataclass
class Query:
    projection: list[tuple[str, str, bool]]  # (output key, column, cast to text)
    where: Logic
    order: tuple[tuple[str, bool, bool], ...]
    limit: int | None
    offset: int


def _as_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": ")) if not isinstance(value, bool) else str(value).lower()


def _parse_int(kind: str, text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise _parse_error(kind, text, f'unexpected "{text[:1]}" expecting digit')
    return int(text)


def parse_query(table: Table, params: dict[str, list[str]]) -> Query:
    """Validate and compile the query string the way PostgREST does, raising PgError on the first problem."""
    projection: list[tuple[str, str, bool]] = []
    for raw_select in params.get("select", ["*"])[-1:]:
        for item in _split_top(raw_select or "*"):
            item = item.strip()
            if item == "*":
                projection.extend((c, c, False) for c in table.columns)
                continue
            if "(" in item:
                rel = item.split("(")[0].split(":")[-1].strip("!")
                raise PgError(
                    400,
                    "PGRST200",
                    f"Could not find a relationship between '{table.name}' and '{rel}' in the schema cache",
                    None,
                    None,
                )
            base, _, cast = item.partition("::")  # only ::text is modelled (a number comes back as a string)
            alias, _, column = base.partition(":") if ":" in base else ("", "", base)
            column = _unquote(column)
            if column not in table.columns:
                raise table.missing_column(column)
            projection.append((_unquote(alias) or column, column, cast == "text"))
    where = Logic("and", False)
    for key, values in params.items():
        for value in values:
            if key in ("or", "and", "not.or", "not.and"):
                where.children.append(parse_logic(table, key.split(".")[-1], key.startswith("not."), value, value))
            elif key not in _RESERVED_PARAMS:
                where.children.append(parse_leaf(table, _unquote(key), value, value))
    order: list[tuple[str, bool, bool]] = []
    for raw_order in params.get("order", [])[-1:]:
        for item in _split_top(raw_order):
            parts = item.split(".")
            column, mods = _unquote(parts[0]), parts[1:]
            desc, nulls_first = False, None
            for mod in mods:
                if mod in ("asc", "desc"):
                    desc = mod == "desc"
                elif mod in ("nullsfirst", "nullslast"):
                    nulls_first = mod == "nullsfirst"
                else:
                    raise _parse_error(
                        "order",
                        raw_order,
                        f'unexpected "{mod[:1]}" expecting "asc", "desc", "nullsfirst" or "nullslast"',
                    )
            if column not in table.columns:
                raise table.missing_column(column)
            order.append((column, desc, desc if nulls_first is None else nulls_first))
    limit = _parse_int("limit", params["limit"][-1]) if "limit" in params else None
    offset = _parse_int("offset", params["offset"][-1]) if "offset" in params else 0
    return Query(projection, where, tuple(order), limit, offset)


@dataclass
class Result:
    rows: list[dict[str, Any]]
    offset: int
    total: int | None  # None unless a count was asked for
    scanned: int  # rows the scan touched: the cost a real database would pay


def execute(table: Table, query: Query, *, visible: bool, max_rows: int | None, count: bool) -> Result:
    """Run the query: filter, order, offset, limit capped by max_rows, and the exact count when asked."""
    limit = query.limit
    if max_rows is not None:
        limit = max_rows if limit is None else min(limit, max_rows)
    with table.lock:
        if not visible:  # row-level security with no policy for this role: every row is hidden
            candidates: Any = []
        elif not query.order:
            candidates = range(len(table.rows))
        else:
            idx, lo, hi = table.order(query.order)
            candidates = idx
            column, desc, _ = query.order[0]
            bound = _bound(query.where, column, low=not desc)
            if bound is not None:
                col = table.typed(column)
                pred = (lambda i: col[i] <= bound) if desc else (lambda i: col[i] >= bound)
                start = bisect.bisect_left(idx, True, lo=lo, hi=hi, key=pred)
                candidates = idx[start:hi]  # rows outside the non-null span cannot satisfy a bound
        out, matched, scanned = [], 0, 0
        for i in candidates:
            if not count and limit is not None and len(out) >= limit:
                break  # without a count nothing past the page needs looking at (a LIMIT stops the scan)
            scanned += 1
            if query.where.children and evaluate(query.where, table, i) is not True:
                continue
            matched += 1
            if matched > query.offset and (limit is None or len(out) < limit):
                row = table.rows[i]
                out.append({key: _as_text(row[col]) if text else row[col] for key, col, text in query.projection})
        return Result(out, query.offset, matched if count else None, scanned)
