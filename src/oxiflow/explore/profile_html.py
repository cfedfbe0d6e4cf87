"""A profile document as one self-contained HTML page: inline CSS and SVG charts, no script,
no font or stylesheet from the network, so it opens anywhere and can be mailed as a file."""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1d2430; background: #fff; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin: 0 0 .4rem; }
.meta { color: #5b6575; margin-bottom: 1.5rem; }
table.overview { border-collapse: collapse; width: 100%; }
.overview th, .overview td { padding: .3rem .5rem; border-bottom: 1px solid #e3e7ee; text-align: right;
       white-space: nowrap; max-width: 14rem; overflow: hidden; text-overflow: ellipsis; }
.overview th:nth-child(-n+2), .overview td:nth-child(-n+2) { text-align: left; }
.overview th { background: #f4f6f9; } .scroll { overflow-x: auto; margin-bottom: 2rem; }
section.col { border: 1px solid #e3e7ee; border-radius: 6px; padding: 1rem; margin-bottom: 1rem; }
.type { color: #5b6575; font-family: ui-monospace, monospace; font-size: .9em; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
dl { display: grid; grid-template-columns: auto auto; gap: .15rem 1rem; margin: 0; min-width: 16rem; }
dt { color: #5b6575; } dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-all; }
figure { margin: 0; } figcaption { color: #5b6575; font-size: .85em; margin-bottom: .2rem; }
svg text { font: 11px system-ui, sans-serif; fill: #1d2430; }
.bar { fill: #3b74c4; } .bar:hover { fill: #1d4f95; } .null { fill: #d9822b; } .track { fill: #e9edf3; }
"""


def render_html(doc: dict[str, Any]) -> str:
    """The page for a profile document (see ``oxiflow.explore.profile``)."""
    cols = doc["columns"]
    rows = doc["rows"]
    opts = doc["options"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Profile of {escape(str(doc['path']))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Profile of {escape(str(doc['path']))}</h1>",
        f'<p class="meta">{rows:,} rows · {len(cols)} columns · format {escape(doc["format"])} · '
        f"top {opts['top']} values, {opts['bins']} bins, distinct counts exact up to "
        f"{opts['exact_distinct_limit']:,} (≈ marks an estimate)</p>",
        _overview(cols),
    ]
    parts += [_section(i, c, rows) for i, c in enumerate(cols)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _overview(cols: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("column", "type", "nulls", "distinct", "min", "max", "mean", "stddev"))
    body = []
    for i, c in enumerate(cols):
        cells = [
            f'<td><a href="#col-{i}">{escape(c["name"])}</a></td>',
            f'<td class="type">{escape(c["type"])}</td>',
            f"<td>{c['null_pct']:.2f}%</td>",
            f"<td>{_distinct(c)}</td>",
            *(
                f'<td title="{escape(_text(c[k]))}">{escape(_text(c[k]))}</td>'
                for k in ("min", "max", "mean", "stddev")
            ),
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table class="overview"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _section(i: int, c: dict[str, Any], rows: int) -> str:
    stats = [
        ("rows with a value", f"{c['count']:,}"),
        ("nulls", f"{c['nulls']:,} ({c['null_pct']:.2f}%)"),
    ]
    if c["distinct"] is not None:
        stats.append(("distinct", _distinct(c) + ("" if c["distinct_exact"] else " (estimate)")))
    for key, label in (("min", "min"), ("max", "max"), ("mean", "mean"), ("stddev", "stddev (sample)")):
        if c[key] is not None:
            stats.append((label, _text(c[key])))
    if c["min_length"] is not None:
        stats.append(("length", f"{c['min_length']:,} – {c['max_length']:,}"))
    if c["non_finite"]:
        stats.append(("NaN / infinite", f"{c['non_finite']:,}"))
    if c["kind"] == "nested":
        stats.append(("note", "nested values: type and nulls only"))
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{v if k == 'distinct' else escape(v)}</dd>" for k, v in stats)
    charts = [f"<dl>{dl}</dl>", _null_bar(c, rows)]
    if c["histogram"]:
        charts.append(_histogram(c["histogram"]))
    if c["top"]:
        charts.append(_top_values(c["top"], rows, c["top_exact"]))
    return (
        f'<section class="col" id="col-{i}"><h2>{escape(c["name"])} <span class="type">{escape(c["type"])}</span>'
        f'</h2><div class="grid">{"".join(charts)}</div></section>'
    )


def _null_bar(c: dict[str, Any], rows: int, width: int = 200) -> str:
    share = c["nulls"] / rows if rows else 0.0
    filled = round(width * share, 1) if share == 0 else max(round(width * share, 1), 1)  # a trace stays visible
    return (
        f"<figure><figcaption>nulls</figcaption>"
        f'<svg width="{width}" height="16" role="img" aria-label="{share:.1%} null">'
        f'<rect class="track" width="{width}" height="16"/><rect class="null" width="{filled}" height="16">'
        f"<title>{c['nulls']:,} nulls ({share:.2%})</title></rect></svg></figure>"
    )


def _histogram(bins: list[dict[str, Any]], width: int = 380, height: int = 130) -> str:
    """Vertical bars, one per bin, labelled with the first lower and the last upper edge."""
    plot_h = height - 30
    peak = max(b["count"] for b in bins) or 1
    step = width / len(bins)
    bars = []
    for j, b in enumerate(bins):
        h = round(plot_h * b["count"] / peak, 1)
        tip = f"({_text(b['lower'])}, {_text(b['upper'])}]: {b['count']:,}"
        bars.append(
            f'<rect class="bar" x="{j * step + 1:.1f}" y="{plot_h - h + 4}" width="{max(step - 2, 1):.1f}" '
            f'height="{h}"><title>{escape(tip)}</title></rect>'
        )
    first, last = _short(bins[0]["lower"]), _short(bins[-1]["upper"])
    labels = (
        f'<text x="0" y="{height - 8}">{escape(first)}</text>'
        f'<text x="{width}" y="{height - 8}" text-anchor="end">{escape(last)}</text>'
    )
    return (
        f"<figure><figcaption>histogram ({len(bins)} bins, max {peak:,})</figcaption>"
        f'<svg width="{width}" height="{height}" role="img" aria-label="histogram">{"".join(bars)}{labels}</svg>'
        "</figure>"
    )


def _top_values(top: list[dict[str, Any]], rows: int, exact: bool | None, width: int = 380) -> str:
    """Horizontal bars: value, bar as its share of all rows, count."""
    row_h, label_w, count_w = 20, 130, 110
    bar_w = width - label_w - count_w
    items = []
    for j, t in enumerate(top):
        y = j * row_h
        w = round(bar_w * t["count"] / rows, 1) if rows else 0
        share = f" ({_percent(t['count'], rows)})" if rows else ""
        items.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(_short(t["value"], 18))}'
            f"<title>{escape(_text(t['value']))}</title></text>"
            f'<rect class="track" x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row_h - 6}"/>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w}" height="{row_h - 6}"/>'
            f'<text x="{width}" y="{y + 14}" text-anchor="end">{t["count"]:,}{share}</text>'
        )
    caption = "top values" + ("" if exact else " (candidates estimated, counts exact)")
    return (
        f"<figure><figcaption>{caption}</figcaption>"
        f'<svg width="{width}" height="{row_h * len(top)}" role="img" aria-label="top values">{"".join(items)}</svg>'
        "</figure>"
    )


def _percent(part: int, whole: int) -> str:
    share = 100 * part / whole
    return "<0.1%" if 0 < share < 0.1 else f"{share:.1f}%"


def _distinct(c: dict[str, Any]) -> str:
    if c["distinct"] is None:
        return ""
    return ("" if c["distinct_exact"] else "≈") + f"{c['distinct']:,}"


def _text(value: Any) -> str:
    """A value as plain text (the caller escapes it)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) >= 1e6 else f"{value:,.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value) if value != "" else '""'


def _short(value: Any, width: int = 24) -> str:
    text = _text(value)
    return text if len(text) <= width else text[: width - 1] + "…"
