"""The HTML form of the energy report: one self-contained file, inline CSS and SVG, no scripts.

Labels are Chinese first, then English. Every figure a reader (or a test) may check carries
``data-key="..."`` and ``data-value="<full precision>"`` next to its formatted text. It reads the typed
``Report`` (report/model.py) by attribute, as the JSON and CSV renderers do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from html import escape
from zoneinfo import ZoneInfo

from edge_agent.report.kpi import MIN_PROJECTION_DAYS
from edge_agent.report.model import DailyRow, HistoryRow, Report

__all__ = ["render_html"]

_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")

_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:2px solid #4e79a7;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#eef2f7;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#777;font-size:.9em}td.est{font-style:italic;background:#fff8e1}.bad{color:#c0392b}.warn{color:#b9770e;font-weight:bold}.good{color:#27ae60}
svg{display:block;margin:.5em 0}
"""


def _fmt(v: object, nd: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "是 yes" if v else "否 no"
    if isinstance(v, int | float):
        return f"{v:,.{nd}f}"
    return escape(str(v))


def _num(key: str, v: float | None, nd: int = 1, pct: bool = False) -> str:
    dv = "" if v is None else escape(repr(v))
    text = "—" if v is None else (f"{v * 100:.{nd}f} %" if pct else _fmt(v, nd))
    return f'<td class="n" data-key="{escape(key)}" data-value="{dv}">{text}</td>'


def _table(head: Sequence[str], rows: Sequence[str]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    return f"<table><tr>{th}</tr>{''.join(rows)}</table>"


def _bars_daily(
    daily: Sequence[DailyRow], codes: Sequence[str], labels: Mapping[str, str], *, monthly: bool = False
) -> str:
    """Stacked bars of electricity by end use per day (or per month, rows from ``_months``), the rest of
    the main meter as 'unmetered'."""
    if not daily:
        return '<p class="muted">无数据 No data</p>'
    w, h, left, bottom = 1000, 260, 60, 30
    series = [*codes, "unmetered"]
    totals = [float(d.values.get("total:01000") or 0.0) for d in daily]
    top = max(totals + [sum(float(d.values.get(c) or 0.0) for c in codes) for d in daily]) or 1.0
    bw = (w - left - 10) / len(daily)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 40}" role="img">']
    for i in range(5):
        y = h - bottom - (h - bottom - 10) * i / 4
        out.append(f'<line x1="{left}" x2="{w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(
            f'<text x="{left - 5}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{top * i / 4:,.0f}</text>'
        )
    for i, d in enumerate(daily):
        x = left + i * bw
        y = float(h - bottom)
        day = d.date.isoformat()
        parts = {c: float(d.values.get(c) or 0.0) for c in codes}
        parts["unmetered"] = max(0.0, totals[i] - sum(parts.values()))
        for j, c in enumerate(series):
            hh = (h - bottom - 10) * parts[c] / top
            y -= hh
            color = _PALETTE[j % len(_PALETTE)] if c != "unmetered" else "#bbb"
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 1, 0.5):.1f}" height="{hh:.1f}" '
                f'fill="{color}"><title>{escape(day)} {escape(labels.get(c, c))}: '
                f"{parts[c]:,.1f} kWh</title></rect>"
            )
        tick = day[:7] if monthly else day[5:]
        every = max(1, math.ceil(len(daily) * 36 / (w - left)))  # a label needs about 36 px
        if i % every == 0:
            out.append(f'<text x="{x:.1f}" y="{h - bottom + 14}" font-size="10">{escape(tick)}</text>')
    # the legend flows: each entry as wide as its label, a new line when the next would leave the box
    lx, ly = float(left), h + 10
    for j, c in enumerate(series):
        color = _PALETTE[j % len(_PALETTE)] if c != "unmetered" else "#bbb"
        text = labels.get(c, c)
        ew = 16 + _text_width(text, 11) + 14
        if lx + ew > w and lx > left:
            lx, ly = float(left), ly + 18
        out.append(f'<rect x="{lx:.1f}" y="{ly}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{lx + 16:.1f}" y="{ly + 11}" font-size="11">{escape(text)}</text>')
        lx += ew
    out.append("</svg>")
    svg = "".join(out)
    return svg.replace(f'height="{h + 40}"', f'height="{ly + 24}"', 1)


def _text_width(text: str, size: float) -> float:
    """Rough rendered width: CJK characters are square, Latin about 0.6 em."""
    return sum(size if ord(ch) > 0x2E80 else 0.6 * size for ch in text)


def _months(daily: Sequence[DailyRow]) -> list[DailyRow]:
    """The daily rows summed by calendar month (each row dated the 1st)."""
    acc: dict[date, dict[str, float]] = {}
    for d in daily:
        row = acc.setdefault(d.date.replace(day=1), {})
        for k, v in d.values.items():
            row[k] = row.get(k, 0.0) + float(v or 0.0)
    return [DailyRow(date=k, values=v) for k, v in sorted(acc.items())]


def _hbars(
    items: Sequence[tuple[str, float, float | None]], unit: str, *, base: float = 0.0, ref_label: str = ""
) -> str:
    """Horizontal bars on their own axis from ``base``: (label, value, reference line or None).

    The label column is as wide as the longest label; the value is written after the bar, or inside it
    when it would leave the box; the reference line's label sits under the last bar, not over a label.
    """
    if not items:
        return ""
    lw = max(_text_width(label, 12) for label, _, _ in items) + 12
    w, row, vw = 720, 26, 110  # vw: room for the value text after the bar
    plot = w - lw - vw
    top = max([v for _, v, _ in items] + [r for _, _, r in items if r is not None])
    top = base + (top - base) * 1.08 if top > base else base + 1.0
    refs = [r for _, _, r in items if r is not None]
    height = row * len(items) + (24 if refs else 10)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" role="img">']

    def x_of(v: float) -> float:
        return lw + plot * max(0.0, min(v, top) - base) / (top - base)

    for i, (label, v, ref) in enumerate(items):
        y = 5 + i * row
        bw = x_of(v) - lw
        color = _PALETTE[i % len(_PALETTE)]
        if ref is not None:
            color = "#c0392b" if v > ref else "#59a14f"
        out.append(f'<text x="0" y="{y + 15}" font-size="12">{escape(label)}</text>')
        out.append(f'<rect x="{lw:.1f}" y="{y}" width="{bw:.1f}" height="{row - 8}" fill="{color}"/>')
        out.append(f'<text x="{lw + bw + 4:.1f}" y="{y + 14}" font-size="11">{v:,.2f} {escape(unit)}</text>')
    if refs:
        rx = x_of(refs[0])
        y_end = 5 + len(items) * row
        out.append(
            f'<line x1="{rx:.1f}" x2="{rx:.1f}" y1="3" y2="{y_end - 6}" stroke="#000" stroke-width="2"'
            ' stroke-dasharray="4 2"/>'
        )
        text = f"{ref_label} {refs[0]:,.2f}".strip()
        tx = min(rx, w - _text_width(text, 10) - 2)
        out.append(f'<text x="{tx:.1f}" y="{y_end + 8}" font-size="10">{escape(text)}</text>')
    if base:
        out.append(f'<text x="{lw:.1f}" y="{height - 2}" font-size="9" fill="#777">{base:g}</text>')
    out.append("</svg>")
    return "".join(out)


def render_html(report: Report) -> str:
    b, p = report.building, report.period
    title = f"{escape(b.name or b.building_id)} 能耗分析报告 Energy report {escape(p.label)}"
    h: list[str] = [
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>{title}</title><style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1>",
        f'<p class="muted">建筑编码 Building id {escape(b.building_id)}'
        f" · 网关 Gateway {escape(b.gateway_id)}"
        f" · 统计期 Period {escape(p.start.isoformat())} – {escape(p.end.isoformat())}"
        f" (不含 exclusive, {p.days} 天 days)"
        f" · 建筑面积 Floor area {_fmt(b.floor_area_m2, 0)} m² · 用能人数 Occupants {b.occupants}"
        + (
            f" (编制 establishment {b.establishment} + 其他 others {b.others})"
            if b.establishment is not None and b.others is not None
            else ""
        )
        + " · 生成 Generated "
        + escape(
            report.generated_at.astimezone(ZoneInfo(report.building.timezone)).isoformat(timespec="seconds")
        )
        + "</p>",
    ]
    sections = (_totals, _sources, _end_use, _last_year, _history, _kpis, _data_centre, _balance)
    for section in (*sections, _enforcement, _quality, _work_summary):
        h += section(report)
    h.append("</body></html>\n")
    return "\n".join(h)


def _totals(report: Report) -> list[str]:
    t = report.totals
    rows = [
        f"<tr><td>{escape(r.code)} {escape(r.zh)} {escape(r.en)}</td><td>{escape(_unit(r.unit))}</td>"
        + _num(f"category.{r.code}.total", r.total)
        + _num(f"category.{r.code}.estimated", r.estimated)
        + _num(f"category.{r.code}.kgce", r.kgce)
        + "</tr>"
        for r in t.by_category
    ]
    rows.append(
        '<tr><th colspan="4">综合能耗（折标煤）Total energy consumption (kgce)</th>'
        + _num("kgce.total", t.kgce)
        + "</tr>"
    )
    h = [
        "<h2>1 分类能耗 Totals by category</h2>",
        _table(["类别 Category", "单位 Unit", "总量 Total", "其中估算 Estimated", "折标煤 kgce"], rows),
    ]
    for lo in t.left_out:
        why = (
            "无折标系数 no coal factor (set coal_factors in site.yaml)"
            if lo.reason == "no_factor"
            else "单位与折标系数不符 unit differs from the factor's"
        )
        h.append(
            f'<p class="warn" data-key="kgce.left_out.{escape(lo.code)}" data-value="{lo.quantity!r}">'
            f"⚠ 未计入综合能耗 Not in the total: {escape(lo.code)} {escape(lo.zh)} {escape(lo.en)} "
            f"{_fmt(lo.quantity, 2)} {escape(_unit(lo.unit))}: {why}</p>"
        )
    return h


def _sources(report: Report) -> list[str]:
    """Meters and imported bills side by side; nothing when the period has no bill."""
    src = report.sources
    if not src.rows:
        return []
    rows = [
        f"<tr><td>{escape(r.code)} {escape(r.zh)} {escape(r.en)}</td><td>{escape(_unit(r.unit))}</td>"
        + _num(f"sources.{r.code}.meter", r.meter)
        + _num(f"sources.{r.code}.bill", r.bill)
        + _num(f"sources.{r.code}.difference", r.difference)
        + _num(f"sources.{r.code}.difference_share", r.difference_share, pct=True)
        + f'<td data-key="sources.{escape(r.code)}.used">'
        + ("账单 bill" if r.used == "bill" else "表计 meter")
        + _coverage_note(r.meter_coverage)
        + "</td></tr>"
        for r in src.rows
    ]
    used = "账单 bills" if src.statistics_source == "bill" else "表计 meters"
    return [
        "<h2>1a 表计与账单 Meters and bills</h2>",
        f'<p class="muted">统计口径 Statistics use: {used} (ledger.statistics_source); '
        "无表计或表计覆盖不足95%的类别使用账单 a category without meters, or whose meters cover less "
        "than 95 % of the period, uses its bills</p>",
        _table(
            [
                "类别 Category",
                "单位 Unit",
                "表计 Meters",
                "账单 Bills",
                "差额 Difference",
                "差额率 Difference %",
                "采用 Used",
            ],
            rows,
        ),
    ]


# The audit trail's finding kinds, as the report's reader knows them; an unknown kind prints as it is.
_FINDING_LABELS = {
    "tamper": "篡改/对抗 tamper (tamper)",
    "tamper_closed": "篡改已结束 tamper closed (tamper_closed)",
    "masked_write": "被更高优先级占用 masked write (masked_write)",
    "counter_step": "计量跳变（数据质量） counter step, data quality (counter_step)",
    "clock_offset": "时钟偏差 clock offset (clock_offset)",
    "uplink_refused": "上传被拒 uplink refused (uplink_refused)",
    "exempt": "豁免 exemption (exempt)",
}


def _coverage_note(share: float | None) -> str:
    if share is None or share >= 0.95:
        return ""
    return f' <span class="muted">(表计覆盖 meters cover {share * 100:.0f} %)</span>'


def _end_use(report: Report) -> list[str]:
    t = report.totals
    rows = [
        f"<tr><td>{escape(r.code)} {escape(r.zh)} {escape(r.en)}</td>"
        + _num(f"end_use.{r.code}.total", r.total)
        + _num(f"end_use.{r.code}.share", r.share, pct=True)
        + "</tr>"
        for r in t.by_end_use
    ]
    split = {cov.code[:2] for cov in report.coverage if cov.end_use_total}
    rows += [
        f"<tr><td>{escape(c)} 未分项 not sub-metered remainder</td>"
        + _num(f"unmetered.{c}", v)
        + "<td></td></tr>"
        for c, v in t.unmetered.items()
        if c[:2] in split  # a category without end-use meters has no "remainder" (water)
    ]
    labels = {r.code: f"{r.zh} {r.en}" for r in t.by_end_use}
    labels["unmetered"] = "未分项 unmetered"
    elec = [r for r in t.by_end_use if r.code.startswith("01")]
    h = [
        "<h2>2 分项能耗 End use (分项计量)</h2>",
        _table(["分项 End use", "总量 Total", "占比 Share"], rows),
        _hbars([(f"{r.zh} {r.en}", float(r.total or 0), None) for r in elec], "kWh"),
    ]
    codes = [r.code for r in elec]
    if report.period.kind in ("quarter", "year"):
        h += [
            "<h3>逐月用电 Monthly electricity (kWh)</h3>",
            _bars_daily(_months(report.daily), codes, labels, monthly=True),
        ]
    if report.period.kind != "year":  # a year of daily bars is unreadable: the CSV has the days
        h += ["<h3>逐日用电 Daily electricity (kWh)</h3>", _bars_daily(report.daily, codes, labels)]
    return h


def _last_year(report: Report) -> list[str]:
    ly = report.last_year
    rows = [
        f"<tr><td>{escape(r.code)} {escape(r.zh)} {escape(r.en)}</td>"
        + _num(f"yoy.{r.code}.this_year", r.this_year)
        + _num(f"yoy.{r.code}.last_year", r.last_year)
        + _num(f"yoy.{r.code}.change", r.change, pct=True)
        + "</tr>"
        for r in ly.by_category
    ]
    h = [
        f"<h2>3 同比 Same period last year ({escape(ly.period)})</h2>",
        _table(["类别 Category", "本期 This period", "去年同期 Last year", "变化 Change"], rows),
    ]
    if all(r.last_year is None for r in ly.by_category):
        h.append('<p class="muted">账本中没有去年同期数据 No ledger data for last year\'s period.</p>')
    return h


_SIDE_MARK = {"this": "本期 this period", "last_year": "去年 last year", "baseline": "基准年 baseline"}


def _hnum(key: str, v: float | None, *, complete: bool = True, estimated: bool = False, nd: int = 1) -> str:
    """A history figure: ``*`` when its period misses months, ``~`` (and shaded) when it holds estimates."""
    dv = "" if v is None else escape(repr(v))
    text = "—" if v is None else _fmt(v, nd) + ("" if complete else "*") + ("~" if estimated else "")
    cls = "n est" if estimated and v is not None else "n"
    return (
        f'<td class="{cls}" data-key="{escape(key)}" data-value="{dv}"'
        f' data-estimated="{1 if estimated else 0}">{text}</td>'
    )


def _side(key: str, r: HistoryRow, side: str, v: float | None, nd: int = 1) -> str:
    """``_hnum`` of one side (this, last_year, baseline) of a history row, with that side's marks."""
    complete = {"this": r.complete, "last_year": r.last_year_complete, "baseline": r.baseline_complete}[side]
    return _hnum(key, v, complete=complete, estimated=side in r.estimated_in, nd=nd)


def _hname(r: HistoryRow) -> str:
    return f"{escape(r.zh)} {escape(r.energy_type)}"


def _history(report: Report) -> list[str]:
    """Year over year and against the baseline year, from imported bills and history and the meters."""
    hist = report.history
    if hist is None:
        return []
    base = hist.baseline_year
    rows = []
    for r in hist.rows:
        k = f"history.{r.period}.{r.energy_type}"
        rows.append(
            f"<tr><td>{escape(r.period)}</td><td>{_hname(r)}</td><td>{escape(_unit(r.unit))}</td>"
            + _side(f"{k}.quantity", r, "this", r.quantity)
            + _num(f"{k}.kgce", r.kgce)
            + _side(f"{k}.last_year", r, "last_year", r.last_year)
            + _num(f"{k}.change", r.change, pct=True)
            + _num(f"{k}.change_kgce", r.change_kgce)
            + "</tr>"
        )
    h = [
        f"<h2>3a 历史数据同比分析 History: year over year ({hist.year})</h2>",
        '<p class="muted">来源 Sources: 导入的账单和历史数据 imported bills and history'
        f" ({hist.imported_entries} 条 entries), 以及表计整月数据 and whole months of meter data"
        f" ({hist.meter_months}) where nothing was imported. 方法 Method: edge_agent/report/analysis.py."
        " 同比只在两期数据完整时计算 a change is given only between two complete periods.</p>",
        _table(
            [
                *("期间 Period", "能源 Energy", "单位 Unit", "本期 This period", "折标煤 kgce"),
                *("去年同期 Last year", "同比 Change", "同比增减 Δ kgce"),
            ],
            rows,
        ),
    ]
    if base is not None:
        rows = []
        for r in hist.rows:
            k = f"history.{r.period}.{r.energy_type}"
            rows.append(
                f"<tr><td>{escape(r.period)}</td><td>{_hname(r)}</td><td>{escape(_unit(r.unit))}</td>"
                + _side(f"{k}.baseline", r, "baseline", r.baseline)
                + _num(f"{k}.baseline_kgce", r.baseline_kgce)
                + _num(f"{k}.change_vs_baseline", r.change_vs_baseline, pct=True)
                + _num(f"{k}.change_vs_baseline_kgce", r.change_vs_baseline_kgce)
                + "</tr>"
            )
        h += [
            f"<h3>较基准年 Against the baseline year {base}</h3>",
            _table(
                [
                    *("期间 Period", "能源 Energy", "单位 Unit", f"基准年 Baseline {base}", "折标煤 kgce"),
                    *("较基准 Change", "较基准增减 Δ kgce"),
                ],
                rows,
            ),
        ]
    own = [r for r in hist.rows if r.period == report.period.label and r.energy_type in ("total", "water")]
    own.sort(key=lambda r: r.energy_type != "total")
    rows = []
    for r in own:
        k = f"history.{r.period}.{r.energy_type}"
        figures = [
            ("per_person", "人均 per person", r.per_person, r.last_year_per_person, r.baseline_per_person)
        ]
        if r.energy_type == "total":
            figures.insert(0, ("per_m2", "单位面积 per m²", r.per_m2, r.last_year_per_m2, r.baseline_per_m2))
        unit = "kgce" if r.energy_type == "total" else "m³"
        for key, label, this, last, bl in figures:
            rows.append(
                f"<tr><td>{_hname(r)} {label} ({unit}/{'m²' if key == 'per_m2' else '人 person'})</td>"
                + _side(f"{k}.{key}", r, "this", this, 3)
                + _side(f"{k}.last_year_{key}", r, "last_year", last, 3)
                + _side(f"{k}.baseline_{key}", r, "baseline", bl, 3)
                + "</tr>"
            )
    if rows:
        h += [
            "<h3>单位面积与人均 Per m² and per person</h3>",
            _table(
                ["指标 Figure", "本期 This period", "去年同期 Last year", f"基准年 Baseline {base or '—'}"],
                rows,
            ),
            '<p class="muted">往年按当前建筑面积和用能人数计'
            " past years over today's floor area and persons.</p>",
        ]
    h.append(
        '<p class="muted">* 数据不完整（有缺月）incomplete: a month without data,'
        " no change computed against it."
        + (
            " ~ 含估算月份 includes estimated months (shaded): " + escape(", ".join(hist.methods))
            if hist.methods
            else (
                " 未估算缺月 missing months not estimated (report --fill estimates them)."
                if not hist.filled
                else ""
            )
        )
        + "</p>"
    )
    for t, d in sorted(hist.fuel_density.items()):
        h.append(
            f'<p class="muted" data-key="history.density.{escape(t)}" data-value="{d!r}">'
            f"燃油按密度折算 {escape(t)} in litres at {d:g} kg/L ({escape(hist.density_source)})</p>"
        )
    for lo in hist.left_out:
        h.append(f'<p class="warn">⚠ 未折标准煤 No kgce: {escape(lo)}</p>')
    return h


def _work_summary(report: Report) -> list[str]:
    """The data section of the annual work summary (annual reports only)."""
    ws = report.work_summary
    if ws is None:
        return []
    h = [f"<h2>9 年度工作总结（数据部分）Annual work summary: data ({ws.year})</h2>"]
    rows = [
        f"<tr><td>{escape(k.zh)} {escape(k.en)}</td><td>{escape(_unit(k.unit))}</td>"
        + _num(f"summary.target.{k.key}", k.target, 2)
        + _hnum(f"summary.achieved.{k.key}", k.achieved, complete=k.complete, estimated=k.estimated, nd=3)
        + _num(f"summary.share.{k.key}", k.share_of_target, pct=True)
        + f"<td>{_fmt(k.met)}</td>"
        + f"<td>{'历史分析 history' if k.source == 'history' else '账本 ledger'}</td></tr>"
        for k in ws.targets
    ]
    h += [
        "<h3>目标与完成 Targets and achieved</h3>",
        _table(
            [
                *("指标 KPI", "单位 Unit", "年度目标 Target", "完成 Achieved", "占目标 Of target"),
                *("达标 Met", "来源 From"),
            ],
            rows,
        ),
    ]
    rows = [
        f"<tr><td>{_hname(r)} ({'kgce' if r.energy_type == 'total' else 'm³'})</td>"
        + _side(f"summary.{r.energy_type}.this", r, "this", r.quantity)
        + _side(f"summary.{r.energy_type}.last_year", r, "last_year", r.last_year)
        + _num(f"summary.{r.energy_type}.change", r.change, pct=True)
        + _side(f"summary.{r.energy_type}.baseline", r, "baseline", r.baseline)
        + _num(f"summary.{r.energy_type}.change_vs_baseline", r.change_vs_baseline, pct=True)
        + "</tr>"
        for r in (ws.total, ws.water)
        if r is not None
    ]
    base = ws.baseline_year or "—"
    if rows:
        h += [
            "<h3>同比与较基准 Against last year and the baseline</h3>",
            _table(
                [
                    *("项目 Item", "本年 This year", "上年 Last year", "同比 Change"),
                    *(f"基准年 Baseline {base}", "较基准 Change"),
                ],
                rows,
            ),
        ]
    else:
        h.append(
            '<p class="muted">无历史数据 No history: import past years with edge-agent ledger import.</p>'
        )
    rows = [
        f"<tr><td>{escape(m.zh)} {escape(m.en)}</td>"
        + _num(f"summary.measure.{m.key}", m.count, 0)
        + _num(f"summary.measure.{m.key}.saving_kgce", m.saving_kgce)
        + "</tr>"
        for m in ws.measures
    ]
    h += [
        "<h3>节能措施（审计记录）Measures recorded by the agent (audit trail)</h3>",
        _table(["措施 Measure", "次数 Count", "估算节能 Saving (kgce)"], rows),
    ]
    methods = sorted({m.saving_method for m in ws.measures})
    h += [f'<p class="muted">{escape(m)}</p>' for m in methods]
    h.append(f'<p class="muted">审计记录 Audit records in the year: {ws.audit_records}</p>')
    return h


def _kpis(report: Report) -> list[str]:
    kpi = report.kpi
    h = [
        f"<h2>4 年度指标 KPIs against annual targets ({kpi.year})</h2>",
        f'<p class="muted">年初至 Year to {escape(kpi.ytd_end.isoformat())} (不含 exclusive),'
        " 有数据天数 days with data"
        f" {kpi.days_covered}; 预测方法 projection: {escape(kpi.projection_method)}."
        f" 目标来源 Targets: {escape(kpi.targets_source or '-')}</p>",
    ]
    if kpi.days_covered < MIN_PROJECTION_DAYS:
        h.append(
            f'<p class="warn" data-key="kpi.no_projection" data-value="{kpi.days_covered}">'
            f"数据不足 {MIN_PROJECTION_DAYS} 天，不作全年预测 Fewer than {MIN_PROJECTION_DAYS} days of data"
            f" ({kpi.days_covered}): no projection for the year.</p>"
        )
    rows = []
    for r in kpi.rows:
        cls = "" if r.on_track is None else (' class="good"' if r.on_track else ' class="bad"')
        rows.append(
            f"<tr><td>{escape(r.zh)} {escape(r.en)}</td><td>{escape(_unit(r.unit))}</td>"
            + _num(f"kpi.{r.key}.to_date", r.to_date, 3)
            + _num(f"kpi.{r.key}.target", r.target, 2)
            + _num(f"kpi.{r.key}.share_of_target", r.share_of_target, pct=True)
            + _num(f"kpi.{r.key}.projection", r.projection, 3)
            + f"<td{cls}>{_fmt(r.on_track)}</td></tr>"
        )
    h.append(
        _table(
            [
                *("指标 KPI", "单位 Unit", "年累计 To date", "年度目标 Target", "已用 Used"),
                *("全年预测 Projection", "达标 On track"),
            ],
            rows,
        )
    )
    for r in kpi.rows:  # one small chart per KPI, each on its own axis with its own target
        if not r.target:
            continue
        bars = [("年累计 To date", float(r.to_date or 0), r.target)]
        if r.projection is not None:
            bars.append(("全年预测 Projection", float(r.projection), r.target))
        h.append(f"<h3>{escape(r.zh)} {escape(r.en)} ({escape(_unit(r.unit))})</h3>")
        h.append(_hbars(bars, _unit(r.unit), ref_label="目标 target"))
    rows = [
        f"<tr><td>{escape(f.code)} {escape(f.zh)} {escape(f.en)}</td><td>{escape(_unit(f.unit))}</td>"
        + _num(f"factor.{f.code}", f.kgce_per_unit, 5)
        + f"<td>{escape(f.edition)}</td><td>{escape(f.source)}</td></tr>"
        for f in kpi.factors
    ]
    h.append(_table(["能源 Energy", "单位 Unit", "折标系数 kgce/unit", "版本 Edition", "说明 Note"], rows))
    h.append(
        "<p>本期 This period: "
        f"<span data-key='kpi.period_kgce' data-value='{kpi.period_kgce!r}'>"
        f"{_fmt(kpi.period_kgce)}</span>"
        f" kgce, {_fmt(kpi.period_kgce_per_m2, 3)} kgce/m², {_fmt(kpi.period_kgce_per_person, 2)}"
        " kgce/person</p>"
    )
    return h


def _data_centre(report: Report) -> list[str]:
    dc = report.data_centre
    rows = [
        "<tr><td>数据中心总电量 Data-centre electricity (kWh)</td>"
        + _num("dc.total_kwh", dc.total_kwh)
        + "</tr>",
        "<tr><td>IT设备电量 IT load (kWh)</td>" + _num("dc.it_kwh", dc.it_kwh) + "</tr>",
        "<tr><td>电能利用效率 PUE</td>" + _num("dc.pue", dc.pue, 3) + "</tr>",
        "<tr><td>占总用电 Share of electricity</td>"
        + _num("dc.share_of_electricity", dc.share_of_electricity, pct=True)
        + "</tr>",
    ]
    h = ["<h2>5 数据中心 Data centre</h2>", _table(["项目 Item", "数值 Value"], rows)]
    if dc.pue is None:
        h.append(
            '<p class="muted">未配置IT负载表 No IT-load meter (it_load: true under meters:): no PUE.</p>'
        )
    else:
        tg = dc.pue_targets
        h.append(
            f'<p class="muted">参考 Reference: 全国平均 national average {tg.national_average},'
            f" 新建大型 new large centres {tg.new_large}</p>"
        )
        h.append(
            _hbars(
                [(m.month, float(m.pue), tg.national_average) for m in dc.monthly if m.pue is not None],
                "",
                base=1.0,  # a PUE is never below 1: the bars start there
                ref_label="全国平均 national average",
            )
        )
    return h


def _balance(report: Report) -> list[str]:
    meters = {m.point: m for m in report.meters}

    def name(pid: str) -> str:
        m = meters.get(pid)
        return m.name if m is not None and m.name else pid

    def remainder(children: Sequence[str]) -> str:
        # Under a data centre the IT meter is the child: the rest is its cooling, UPS losses, lighting
        if children and all(meters[c].it_load for c in children if c in meters):
            return "非IT负荷 non-IT load"
        return "未计量 not sub-metered"

    rows = [
        f"<tr><td>{escape(name(r.point))}</td><td>{escape(', '.join(name(c) for c in r.children))}</td>"
        + _num(f"balance.{r.point}.parent_total", r.parent_total)
        + _num(f"balance.{r.point}.children_total", r.children_total)
        + f"<td>{escape(remainder(r.children))}</td>"
        + _num(f"balance.{r.point}.unmetered", r.unmetered)
        + _num(f"balance.{r.point}.unmetered_share", r.unmetered_share, pct=True)
        + "</tr>"
        for r in report.balance
    ]
    h = [
        "<h2>6 计量平衡与覆盖 Meter balance and coverage</h2>",
        _table(
            [
                *("上级表 Meter", "下级表 Sub-meters", "上级 Parent", "下级合计 Children"),
                *("差额 Remainder", "差额电量 Remainder energy", "占比 Share"),
            ],
            rows,
        ),
    ]
    # 分项计量 coverage only where a main meter has end-use meters (a water main alone is not "0 %")
    rows = [
        f"<tr><td>{escape(name(r.point))} ({escape(r.code)})</td>"
        + _num(f"coverage.{r.point}", r.coverage, pct=True)
        + "</tr>"
        for r in report.coverage
        if r.end_use_total
    ]
    h.append(_table(["总表 Main meter", "分项计量覆盖率 End-use coverage"], rows))
    return h


_HVAC_RULES = {
    "hvac.after_hours": "下班后关闭空调 AC switched off after hours",
    "hvac.after_hours_off": "下班后关闭空调 AC switched off after hours",
    "hvac.window_open": "开窗关闭空调 AC off with a window open",
    "hvac.mode": "运行模式纠正 Mode corrected",
    "hvac.power": "空调开关 AC power",
}


def _enforcement(report: Report) -> list[str]:
    enf = report.enforcement
    h = ["<h2>7 节能管控 Enforcement (audit trail)</h2>"]
    rows = [
        f"<tr><td>{escape(z.zone)}</td>"
        + _num(f"enforcement.zone.{z.zone}.summer_26", z.summer_26, 0)
        + _num(f"enforcement.zone.{z.zone}.winter_20", z.winter_20, 0)
        + "</tr>"
        for z in enf.setpoint_corrections
    ]
    rows.append(
        "<tr><th>合计 Total</th>"
        + _num("enforcement.summer_26_total", sum(z.summer_26 for z in enf.setpoint_corrections), 0)
        + _num("enforcement.winter_20_total", sum(z.winter_20 for z in enf.setpoint_corrections), 0)
        + _num("enforcement.setpoint_corrections_total", enf.setpoint_corrections_total, 0)
        + "</tr>"
    )
    h.append(
        _table(
            [
                *("区域 Zone", "夏季≥26 °C 纠正 Summer corrections", "冬季≤20 °C 纠正 Winter corrections"),
                "合计 Both",
            ],
            [r.replace("</tr>", "<td></td></tr>") if i < len(rows) - 1 else r for i, r in enumerate(rows)],
        )
    )
    if enf.hvac_other:
        h.append(
            _table(
                ["空调管控 HVAC action", "次数 Count"],
                [
                    f"<tr><td>{escape(_HVAC_RULES.get(rule, rule))}</td>"
                    + _num(f"enforcement.hvac.{rule}", n, 0)
                    + "</tr>"
                    for rule, n in enf.hvac_other.items()
                ],
            )
        )
    rows = [
        f"<tr><td>{escape(z.zone)}</td>" + _num(f"enforcement.lights.{z.zone}", z.count, 0) + "</tr>"
        for z in enf.lights_off
    ]
    rows.append(
        "<tr><th>合计 Total</th>" + _num("enforcement.lights_off_total", enf.lights_off_total, 0) + "</tr>"
    )
    h.append(_table(["区域 Zone", "关灯次数 Lights switched off"], rows))
    rows = [
        "<tr><td>篡改/对抗 Tamper findings</td>" + _num("enforcement.tamper", len(enf.tamper), 0) + "</tr>",
        "<tr><td>写入失败 Failed writes</td>"
        + _num("enforcement.failed_writes", enf.failed_writes, 0)
        + "</tr>",
        "<tr><td>拒绝写入 Refused by the safety envelope</td>"
        + _num("enforcement.refused", sum(enf.refused.values()), 0)
        + "</tr>",
    ]
    rows += [
        f"<tr><td>发现 Finding: {escape(_FINDING_LABELS.get(k, k))}</td>"
        + _num(f"enforcement.findings.{k}", v, 0)
        + "</tr>"
        for k, v in enf.findings.items()
    ]
    h.append(_table(["事项 Item", "次数 Count"], rows))
    if enf.tamper:
        h.append(
            _table(
                ["时间 Time", "点 Point", "区域 Zone", "原因 Reason"],
                [
                    f"<tr><td>{escape(x.ts)}</td><td>{escape(x.point)}</td><td>{escape(x.zone)}</td>"
                    f"<td>{escape(x.reason)}</td></tr>"
                    for x in enf.tamper[:50]
                ],
            )
        )
    h.append("<h3>豁免区域 Exemptions in force</h3>")
    h.append(
        _table(
            ["区域 Zone", "原因 Reason", "截止 Until"],
            [
                f"<tr><td data-key='exemption.{escape(e.zone)}'>{escape(e.zone)}</td>"
                f"<td>{escape(e.reason)}</td><td>{escape(e.until.isoformat() if e.until else '—')}</td></tr>"
                for e in enf.exemptions
            ],
        )
    )
    if not enf.records:
        h.append('<p class="muted">本期无审计记录 No audit records in the period.</p>')
    return h


_EVENT_NAMES = {
    "rollover": "计数器翻转 Counter rollover",
    "counter_reset": "计数器复位 Counter reset",
    "counter_backwards": "计数器倒退 Counter backwards",
    "rebaseline": "重设基准 Re-baselined",
    "step": "跳变剔除 Step excluded",
    "step_booked": "跳变计入 Step booked as energy",
    "meter_replaced": "换表 Meter replaced",
    "clock_held": "时钟不可信暂存 Held (clock untrusted)",
    "invalid": "无效读数 Invalid readings",
    "out_of_order": "乱序读数 Out-of-order readings",
}


def _quality(report: Report) -> list[str]:
    q = report.quality
    ev = q.events
    rows = []
    for unit, u in q.by_unit.items():
        rows.append(
            f"<tr><td>估算占比 Estimated share, main meters ({escape(_unit(unit))})</td>"
            + _num(f"quality.unit.{unit}.estimated_share", u.estimated_share, 3, pct=True)
            + "</tr>"
        )
        rows.append(
            f"<tr><td>剔除（未计入）Excluded, not booked ({escape(_unit(unit))})</td>"
            + _num(f"quality.unit.{unit}.excluded", u.excluded, 2)
            + "</tr>"
        )
    rows += [
        "<tr><td>已分摊缺口 Gaps allocated (by profile or linearly, estimated, counted)</td>"
        + _num("quality.gaps_filled", q.gaps_filled, 0)
        + "</tr>",
        f"<tr><td>长缺口 Long gaps (&gt; {q.max_gap_intervals} intervals)</td>"
        + _num("quality.long_gaps", q.long_gaps, 0)
        + "</tr>",
        f"<tr><td>异常值 Outliers ({escape(q.outlier_policy)})</td>"
        + _num("quality.outliers", q.outliers, 0)
        + "</tr>",
    ]
    for k, label in _EVENT_NAMES.items():
        rows.append(f"<tr><td>{escape(label)}</td>" + _num(f"quality.events.{k}", ev.get(k, 0), 0) + "</tr>")
    for m in report.meters:  # a gateway whose clock never synchronised: the energy waits, it is not lost
        if m.held:
            rows.append(
                f"<tr><td>时钟不可信暂存（未计入）Held, clock untrusted, not booked yet: "
                f"{escape(m.name or m.point)} ({escape(_unit(m.unit))})</td>"
                + _num(f"quality.held.{m.point}", m.held, 2)
                + "</tr>"
            )
    for pid, energy in q.unallocated_energy.items():  # databases written before gaps were allocated
        rows.append(
            f"<tr><td>未分配 Unallocated (old data) {escape(pid)}</td>"
            + _num(f"quality.unallocated.{pid}", energy, 2)
            + "</tr>"
        )
    h = ["<h2>8 数据质量 Data quality</h2>", _table(["项目 Item", "数值 Value"], rows)]
    long_gaps = [g for g in q.gaps if g.missing_intervals > q.max_gap_intervals]
    if long_gaps:
        unit_of = {m.point: m.unit for m in report.meters}
        h.append("<h3>长缺口 Long gaps (energy allocated and counted as estimated)</h3>")
        h.append(
            _table(
                [
                    *("表 Meter", "开始 From", "结束 To"),
                    *("缺失时段 Missing intervals", "电量 Energy", "单位 Unit", "分配方法 Allocated by"),
                ],
                [
                    f"<tr><td>{escape(g.point)}</td><td>{escape(g.start.strftime('%Y-%m-%d %H:%M'))}</td>"
                    f"<td>{escape(g.end.strftime('%Y-%m-%d %H:%M'))}</td>"
                    + _num(f"gap.{g.point}.{g.start.isoformat()}.missing", g.missing_intervals, 0)
                    + _num(f"gap.{g.point}.{g.start.isoformat()}.energy", g.energy, 2)
                    + f"<td>{escape(_unit(unit_of.get(g.point, '')))}</td>"
                    f"<td>{escape(_GAP_METHODS.get(g.method, g.method))}</td></tr>"
                    for g in long_gaps
                ],
            )
        )
    if q.steps:
        h.append("<h3>计数跳变 Counter steps detected (excluded unless booked)</h3>")
        h.append(
            _table(
                [
                    *("表 Meter", "时间 At", "跳变前 From", "跳变后 To"),
                    *("剔除量 Excluded", "单位 Unit", "状态 Status"),
                ],
                [
                    f"<tr><td>{escape(x.point)}</td><td>{escape(x.at.strftime('%Y-%m-%d %H:%M'))}</td>"
                    + _num(f"step.{x.point}.{x.at.isoformat()}.from", x.from_value, 2)
                    + _num(f"step.{x.point}.{x.at.isoformat()}.to", x.to_value, 2)
                    + _num(f"step.{x.point}.{x.at.isoformat()}.amount", x.amount, 2)
                    + f"<td>{escape(_unit(x.unit))}</td>"
                    f"<td>{escape(_STEP_STATUS.get(x.status, x.status))}</td></tr>"
                    for x in q.steps
                ],
            )
        )
    rows = [
        f"<tr><td>{escape(m.name or m.point)}<br><span class='muted'>{escape(m.point)}</span></td>"
        f"<td>{escape(m.code)}</td><td>{escape(m.zone or '')}</td>"
        f"<td>{escape(_unit(m.unit))}</td>"
        + _num(f"meter.{m.point}.total", m.total, 2)
        + _num(f"meter.{m.point}.estimated", m.estimated, 2)
        + _num(f"meter.{m.point}.estimated_share", m.estimated_share, 2, pct=True)
        + _num(f"meter.{m.point}.excluded", m.excluded, 2)
        + _num(f"meter.{m.point}.pending_steps", m.pending_steps, 2)
        + _num(f"meter.{m.point}.held", m.held, 2)
        + _num(f"meter.{m.point}.coverage", q.slot_coverage.get(m.point), 1, pct=True)
        + "</tr>"
        for m in report.meters
    ]
    h.append(
        _table(
            [
                *("表 Meter", "编码 Code", "区域 Zone", "单位 Unit", "总量 Total", "估算 Estimated"),
                *("估算占比 Est. share", "剔除（未计入）Excluded", "其中待确认 of which pending"),
                "暂存 Held (clock untrusted)",
                "时段覆盖 Slot coverage",
            ],
            rows,
        )
    )
    return h


_GAP_METHODS = {"profile": "同类日曲线 profile of comparable days", "linear": "线性 linear"}
_STEP_STATUS = {
    "pending": "待确认 pending (meter confirm|book)",
    "confirmed": "已确认非能耗 confirmed, not energy",
    "booked": "已计入 booked as estimated",
}


def _unit(unit: str) -> str:
    return unit.replace("m3", "m³").replace("m2", "m²")
