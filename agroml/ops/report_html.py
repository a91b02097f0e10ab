"""HTML building blocks of the monitoring page: sections, tables, embedded images, a heatmap table.

Every string that comes from data (labels, crops, farm locations, run ids, errors, model cards) is
hostile: it goes through :func:`esc` and nowhere else. The page declares a Content-Security-Policy
that allows no script, no network and only ``data:`` images, so even a slip would load nothing.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

#: No script, no fetch, no external style or font; images only from the page itself (data: URIs).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}
header{background:#0b3d2e;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85;font-size:13px}main{max-width:1180px;margin:0 auto;padding:12px 20px 40px}
nav{font-size:13px;margin:12px 0}nav a{margin-right:12px;color:#0b5d46}
section{overflow-x:auto;background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12)}
section{padding:14px 20px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 10px}
th,td{border-bottom:1px solid #e3e7ea;padding:3px 9px;text-align:right;white-space:nowrap}
th{background:#eef2f4}td.k,th.k{text-align:left}td.k{white-space:normal;overflow-wrap:break-word;max-width:420px}img{max-width:100%;height:auto;display:block}
.ok{color:#1a7f37;font-weight:600}.no{color:#b35900;font-weight:600}.muted{color:#667;font-size:12px}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;white-space:pre-wrap;max-height:520px}
.warn{background:#fff4e0;border-left:4px solid #e08a00;padding:6px 10px;font-size:13px;margin:6px 0}
"""


def esc(value: Any) -> str:
    """Any value as HTML text (quotes too: safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}%}"


def interval(block: dict[str, Any]) -> str:
    if block.get("ci_low") is None:
        return "—"
    return f"{block['ci_low']:.0%}–{block['ci_high']:.0%}"


def section(key: str, title: str, body: str) -> str:
    """A page section; ``data-section`` names it for readers and for the browser test."""
    return f'<section id="{esc(key)}" data-section="{esc(key)}"><h2>{esc(title)}</h2>\n{body}\n</section>\n'


def image(png: bytes, alt: str) -> str:
    """A PNG embedded as a data URI: the page needs no other file and no network."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    """A table whose first ``left`` columns are text (left-aligned), the rest numbers; every cell escaped."""
    head = "".join(f"<th{' class=k' if i < left else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=k' if i < left else ''}>{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def heatmap(rows: dict[str, dict[str, int]], columns: Sequence[str], trainable: dict[str, dict[str, int]]) -> str:
    """Class x season counts as a table whose cells are shaded by their count ("rows (trainable)")."""
    peak = max((v for r in rows.values() for v in r.values()), default=0) or 1
    head = '<th class="k">class</th>' + "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for label, row in rows.items():
        cells = []
        for c in columns:
            n = int(row.get(c, 0))
            shade = round(235 - 150 * n / peak)  # light to mid blue; text stays readable
            train = int(trainable.get(label, {}).get(c, 0))
            cells.append(f'<td style="background:rgb({shade},{shade + 10},255)">{n} ({train})</td>')
        body.append(f'<tr><td class="k">{esc(label)}</td>{"".join(cells)}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def warnings_block(warnings: Sequence[str]) -> str:
    return "".join(f'<div class="warn">{esc(w)}</div>' for w in warnings)


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    """The whole document: self-contained (inline style, data-URI images), no script."""
    links = "".join(f'<a href="#{esc(k)}">{esc(t)}</a>' for k, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name=viewport content="width=device-width, initial-scale=1"><link rel=icon href="data:,">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>\n"
        f"<main><nav>{links}</nav>\n{body}</main></body></html>\n"
    )
