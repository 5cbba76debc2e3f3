"""Working-day calendar: China's statutory holidays and make-up working days, with site overrides.

Built from the `holidays` package (data, no I/O). The package publishes make-up working weekends (调休)
in ``weekend_workdays``, a set that spans many years, so it is filtered by year here.

Importing ``holidays.countries.china`` imports every country's module (about 17 MB of a running agent's
memory, issue 18), so ``policies/china_days.py`` holds the package's answer for the years around now,
written by ``python -m edge_agent.devtools.china_days`` from the installed package. It is used only
while that same version of ``holidays`` is installed; any other year or version asks the package.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from typing import Literal

from policies.model import CalendarPolicy

__all__ = [
    "TABLE_YEARS",
    "Calendar",
    "DayInfo",
    "DayKind",
    "calendar_gaps",
    "installed_holidays",
    "national_year",
    "render_table",
]

DayKind = Literal["working", "weekend", "holiday", "makeup_working"]

_LABELS: dict[str, str] = {
    "working": "working day",
    "weekend": "weekend",
    "holiday": "holiday",
    "makeup_working": "make-up working day",
}


@dataclass(frozen=True, slots=True)
class DayInfo:
    day: date
    kind: DayKind
    name: str | None = None  # holiday name, or what makes a weekend a working day
    source: Literal["national", "site", "weekday"] = "weekday"

    @property
    def working(self) -> bool:
        return self.kind in ("working", "makeup_working")

    def describe(self) -> str:
        text = _LABELS[self.kind]
        if self.name:
            text += f" {self.name}"
        if self.source == "site":
            text += " (site calendar)"
        return text


@dataclass(frozen=True, slots=True)
class _Year:
    holidays: Mapping[date, str]
    workdays: frozenset[date]


def _bilingual(zh: object, en: str) -> str:
    z = str(zh) if zh else ""
    return f"{z} {en}" if z and z != en else en


def national_year(year: int) -> _Year:
    """China's holidays and make-up working days of ``year`` as the installed ``holidays`` has them."""
    from holidays.countries.china import China  # imports every country: only when the table lacks the year

    cn = China(years=year)  # type: ignore[no-untyped-call]  # default category: public holidays (half_day ignored)
    zh = China(years=year, language="zh_CN")  # type: ignore[no-untyped-call]
    return _Year(
        # Chinese name first, as the rest of the output: "国庆节 National Day"
        holidays={d: _bilingual(zh.get(d), str(name)) for d, name in cn.items() if d.year == year},
        workdays=frozenset(d for d in cn.weekend_workdays if d.year == year),
    )


def installed_holidays() -> str | None:
    try:
        return metadata.version("holidays")
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def _table() -> dict[int, _Year] | None:
    """policies/china_days.py as years, or None when it was written from another ``holidays`` version."""
    from policies import china_days

    if installed_holidays() != china_days.HOLIDAYS_VERSION:
        return None
    names = china_days.NAMES
    return {
        year: _Year(
            holidays={date(year, int(md[:2]), int(md[2:])): names[i] for md, i in hols},
            workdays=frozenset(date(year, int(md[:2]), int(md[2:])) for md in work.split()),
        )
        for year, (hols, work) in china_days.YEARS.items()
    }


TABLE_YEARS = range(2000, 2041)  # the years policies/china_days.py holds


def render_table(years: Iterable[int] = TABLE_YEARS) -> str:
    """The text of policies/china_days.py from the installed ``holidays`` package."""
    built = {y: national_year(y) for y in years}
    names = sorted({n for y in built.values() for n in y.holidays.values()})
    index = {n: i for i, n in enumerate(names)}
    lines = [
        '"""China\'s holidays and make-up working days by year, as the `holidays` version below has them.',
        "",
        "Written by `python -m edge_agent.devtools.china_days`; do not edit (policies/calendar.py: why).",
        '"""',
        "# ruff: noqa: E501",
        "# fmt: off",
        "",
        f"HOLIDAYS_VERSION = {json.dumps(installed_holidays())}",
        "",
        "NAMES: tuple[str, ...] = (",
        *(f"    {json.dumps(n, ensure_ascii=False)}," for n in names),
        ")",
        "",
        "# year: ((MMDD, index into NAMES) per holiday, the make-up working days: MMDD separated by spaces)",
        "YEARS: dict[int, tuple[tuple[tuple[str, int], ...], str]] = {",
    ]
    for y, data in built.items():
        hols = "".join(f'("{d:%m%d}", {index[n]}), ' for d, n in sorted(data.holidays.items()))
        work = " ".join(f"{d:%m%d}" for d in sorted(data.workdays))
        lines.append(f'    {y}: (({hols.rstrip()}), "{work}"),')
    lines.append("}")
    return "\n".join(lines) + "\n"


class Calendar:
    """Pure, deterministic day classification. Site lists override the national calendar."""

    def __init__(
        self,
        *,
        years: Iterable[int],
        extra_holidays: Mapping[date, str] | None = None,
        extra_working_days: Mapping[date, str] | None = None,
    ) -> None:
        self._extra_holidays = dict(extra_holidays or {})
        self._extra_working = dict(extra_working_days or {})
        both = sorted(set(self._extra_holidays) & set(self._extra_working))
        if both:
            raise ValueError(f"{both[0].isoformat()} is both a site holiday and a site working day")
        # Years outside `years` are computed on first use: deterministic data, so the cache is invisible.
        self._years: dict[int, _Year] = {}
        for y in sorted(set(years)):
            self._years[y] = self._build_year(y)

    @classmethod
    def from_policy(cls, policy: CalendarPolicy, *, years: Iterable[int]) -> Calendar:
        return cls(
            years=years,
            extra_holidays={d.date: d.name for d in policy.extra_holidays},
            extra_working_days={d.date: d.name for d in policy.extra_working_days},
        )

    @staticmethod
    def _build_year(year: int) -> _Year:
        table = _table()
        y = table.get(year) if table is not None else None
        return y if y is not None else national_year(year)

    def _year(self, year: int) -> _Year:
        y = self._years.get(year)
        if y is None:
            y = self._years[year] = self._build_year(year)
        return y

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(sorted(self._years))

    def day_info(self, d: date) -> DayInfo:
        if d in self._extra_holidays:
            return DayInfo(d, "holiday", self._extra_holidays[d], "site")
        weekend = d.weekday() >= 5
        if d in self._extra_working:
            return DayInfo(d, "makeup_working" if weekend else "working", self._extra_working[d], "site")
        y = self._year(d.year)
        if d in y.holidays:
            return DayInfo(d, "holiday", y.holidays[d], "national")
        if d in y.workdays:
            return DayInfo(d, "makeup_working", "调休", "national")
        return DayInfo(d, "weekend" if weekend else "working")

    def day_kind(self, d: date) -> DayKind:
        return self.day_info(d).kind

    def is_working_day(self, d: date) -> bool:
        return self.day_info(d).working

    def makeup_days_missing(self, year: int) -> int:
        """The number of national holidays in `year` when the national calendar has no make-up working
        days (调休) for it and the site lists none either (the year's calendar is not published yet);
        0 when the year looks complete."""
        y = self._year(year)
        if y.workdays or not y.holidays or any(d.year == year for d in self._extra_working):
            return 0
        return len(y.holidays)


def calendar_gaps(calendar: Calendar, years: Iterable[int]) -> list[str]:
    """One warning per year whose national calendar has holidays but no published make-up working days."""
    out: list[str] = []
    for year in sorted(set(years)):
        n = calendar.makeup_days_missing(year)
        if n:
            out.append(
                f"the national calendar for {year} has {n} holidays but no make-up working days (调休) "
                "published yet: weekends that will be working days are treated as weekends. List them "
                "under calendar.extra_working_days when the State Council publishes them"
            )
    return out
