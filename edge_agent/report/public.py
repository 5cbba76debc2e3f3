"""The public summary (定期公示): one page for a lobby screen or the institution's website.

In plain Chinese: the period's and the year's energy use per m² and per person, against the annual
target and against the same period last year. It only lays out figures the report already holds (KPIs
come from edge_agent/report/kpi.py through the Report); it computes none. Where the gateway's meters have
no data for last year's period (a gateway installed this year), electricity and water are compared from
the report's history analysis instead (imported bills, edge_agent/report/analysis.py), both figures shown
and an estimated one (``report --fill``) marked ~. Sized for a 1280 x 720 screen;
it also fits the 1280 x 633 that a 720-pixel browser window leaves: nothing scrolls, nothing is cut
(tests/integration/test_report_public.py checks it in headless Chromium).
"""

from __future__ import annotations

from html import escape

from edge_agent.report.model import HistoryRow, KpiFigure, Report

__all__ = ["PUBLIC_SIZE", "render_public"]

PUBLIC_SIZE = (1280, 720)

_CSS = """
*{box-sizing:border-box;margin:0;padding:0}
html,body{width:100%;height:100%;overflow:hidden}
body{font-family:"Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","Microsoft YaHei",sans-serif;
 background:#f4f7f2;color:#1d2b1f;display:flex;flex-direction:column;padding:20px 36px;gap:12px}
h1{font-size:30px;font-weight:700}
.sub{font-size:18px;color:#4b5d4e}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:14px;flex:1;min-height:0}
.card{background:#fff;border-radius:14px;padding:18px 24px;box-shadow:0 1px 4px rgba(0,0,0,.08);
 display:flex;flex-direction:column;gap:4px;min-height:0;overflow:hidden}
.card h2{font-size:22px;color:#2f6b3a}
.big{font-size:36px;font-weight:700}
.unit{font-size:18px;font-weight:400;color:#4b5d4e;margin-left:6px}
.line{font-size:18px}
.good{color:#2f6b3a}.bad{color:#b3431d}
.foot{font-size:14px;color:#6b7a6d}
"""


def _num(v: float | None, nd: int = 2) -> str:
    return "—" if v is None else f"{v:,.{nd}f}"


def _vs_target(f: KpiFigure | None) -> str:
    if f is None or f.target is None:
        return '<p class="line">未设定年度目标</p>'
    if f.projection is None:
        return f'<p class="line">年度目标 {_num(f.target)}{escape(f.unit)}；数据尚少，暂不预测全年</p>'
    ok = f.on_track is True
    word = "预计可完成目标" if ok else "预计超出目标，需继续节能"
    cls = "good" if ok else "bad"
    return (
        f'<p class="line">年度目标 {_num(f.target)}，全年预计 {_num(f.projection)}：'
        f'<span class="{cls}" data-key="public.on_track.{escape(f.key)}">{word}</span></p>'
    )


_UNIT_ZH = {"kWh": "千瓦时", "m3": "立方米"}
EST = "~"  # an estimated figure (a month filled by report --fill), explained in the page's foot


def _word(change: float) -> str:
    word, cls = ("下降", "good") if change < 0 else ("上升", "bad") if change > 0 else ("持平", "good")
    pct = "" if change == 0 else f" {abs(change) * 100:.1f}%"
    return f'<span class="{cls}">{word}{pct}</span>'


def _change(change: float | None, what: str, key: str) -> str:
    text = "：去年同期无数据" if change is None else f"比去年同期{_word(change)}"
    return f'<p class="line" data-key="public.change.{key}" data-source="ledger">{what}{text}</p>'


def _history_change(r: HistoryRow, what: str) -> str:
    """This period against last year's from the history analysis: both figures, then the change (none
    between incomplete periods)."""
    unit = _UNIT_ZH.get(r.unit, r.unit)

    def fig(v: float | None, side: str) -> str:
        return f"{_num(v, 0)}{EST if side in r.estimated_in else ''}"

    verdict = "：" + _word(r.change) if r.change is not None else "（数据不全，不作比较）"
    est = int(bool({"this", "last_year"} & set(r.estimated_in)))
    return (
        f'<p class="line" data-key="public.change.{escape(r.energy_type)}" data-source="history" '
        f'data-estimated="{est}">{what} {fig(r.quantity, "this")}，去年同期 {fig(r.last_year, "last_year")} '
        f"{escape(unit)}{verdict}</p>"
    )


def render_public(report: Report) -> str:
    b, p, k = report.building, report.period, report.kpi
    rows = {f.key: f for f in k.rows}
    changes = {y.code: y for y in report.last_year.by_category}
    hist = {
        r.energy_type: r
        for r in (report.history.rows if report.history else ())
        if r.period == p.label and r.last_year is not None
    }

    from_history: list[HistoryRow] = []

    def vs_last_year(code: str, etype: str, what: str) -> str:
        y = changes.get(code)
        if (y is None or y.last_year is None) and etype in hist:  # no meter data last year: the bills'
            from_history.append(hist[etype])
            return _history_change(hist[etype], what)
        return _change(y.change if y else None, what, etype)

    compared = vs_last_year("01000", "electricity", "用电量") + vs_last_year("02000", "water", "用水量")
    foot = "数据来自本楼能耗监测网关的计量数据，按公共机构能耗统计口径计算。"
    if from_history:
        foot += "去年同期为导入的历史账单等数据"
        if any({"this", "last_year"} & set(r.estimated_in) for r in from_history):
            foot += f"，带 {EST} 的为缺月估算值"
        foot += "。"
    name = escape(b.name or b.building_id)
    period_zh = {"month": "本月", "quarter": "本季度", "year": "本年度"}[p.kind]
    m2, person, water = rows.get("kgce_per_m2"), rows.get("kgce_per_person"), rows.get("water_m3_per_person")
    cards = [
        (
            f"{period_zh}（{escape(p.label)}）",
            f'<p class="big" data-key="public.period_kgce_per_m2">{_num(k.period_kgce_per_m2, 3)}'
            '<span class="unit">千克标准煤/平方米</span></p>'
            '<p class="line">人均 <b data-key="public.period_kgce_per_person">'
            f"{_num(k.period_kgce_per_person)}</b> 千克标准煤/人</p>" + compared,
        ),
        (
            f"{k.year}年累计（截至 {escape(k.ytd_end.isoformat())} 前）",
            f'<p class="big" data-key="public.ytd_kgce_per_m2">{_num(m2.to_date if m2 else None, 3)}'
            '<span class="unit">千克标准煤/平方米</span></p>'
            + _vs_target(m2)
            + f'<p class="line">人均 <b data-key="public.ytd_kgce_per_person">'
            f"{_num(person.to_date if person else None)}</b> 千克标准煤/人</p>" + _vs_target(person),
        ),
        (
            "用水",
            f'<p class="big">{_num(water.to_date if water else None)}'
            '<span class="unit">立方米/人（本年累计）</span></p>' + _vs_target(water),
        ),
        (
            "说明",
            f'<p class="line">建筑面积 {_num(k.floor_area_m2, 0)} 平方米，'
            f"用能人数 {k.occupants} 人（含编外人员）。</p>"
            + "".join(
                f'<p class="line">{escape(f.zh)}按 {f.kgce_per_unit:g} 千克标准煤/{escape(f.unit)} 折算</p>'
                for f in k.factors
            )
            + '<p class="line">水不计入能耗。</p>',
        ),
    ]
    body = "".join(f'<section class="card"><h2>{t}</h2>{c}</section>' for t, c in cards)
    return (
        '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{name} 能耗公示 {escape(p.label)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{name} 能源消耗公示</h1>"
        f'<p class="sub">统计期 {escape(p.start.isoformat())} 至 {escape(p.end.isoformat())}（不含）'
        f" · 建筑编码 {escape(b.building_id)}</p>"
        f'<div class="grid">{body}</div>'
        f'<p class="foot" data-key="public.foot">{foot}</p>'
        "</body></html>\n"
    )
