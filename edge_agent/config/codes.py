"""MOHURD energy item codes (分类分项能耗编码) and building type letters, as data.

Source: MOHURD 2008 guidelines for itemized energy data of office and large public buildings
(see /work/shared/STANDARDS.md). A code has five characters: category (2 digits) + item (letter)
+ sub-item (digit) + sub-sub-item (letter), ``0`` where a level is unused, so ``01B1A`` (chilled-water
pumps) sits under ``01B10`` (plant), ``01B00`` (air conditioning) and ``01000`` (electricity).

Regions add their own codes (``01E00`` total electricity, ``01D1A`` IT equipment, ...): the national
tree is the default table and a site adds or relabels codes with ``energy_codes:`` in site.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

__all__ = [
    "BUILDING_TYPES",
    "CODE_PATTERN",
    "NATIONAL_CODES",
    "PROVINCE_PREFIXES",
    "EnergyCode",
    "ancestors",
    "category",
    "code_table",
    "is_code",
    "parent",
]

# Same shape as drivers.base.PointBase.energy_code, repeated here because drivers is a leaf we do
# not reach into for a private constant.
CODE_PATTERN = r"^[0-9]{2}[A-Z0][0-9A-Z][0-9A-Z]$"
_CODE_RE = re.compile(CODE_PATTERN)


@dataclass(frozen=True, slots=True)
class EnergyCode:
    code: str
    zh: str
    en: str
    source: Literal["national", "site"] = "national"

    @property
    def label(self) -> str:
        """Both languages, as reports print them; a site label given once is not repeated."""
        if not self.zh or self.zh == self.en:
            return self.en or self.zh
        return f"{self.zh} {self.en}" if self.en else self.zh


# (code, 中文, English). Category level codes end in 000; water (02000) is a category without items.
_NATIONAL: tuple[tuple[str, str, str], ...] = (
    ("01000", "电", "electricity"),
    ("01A00", "照明插座用电", "lighting and sockets"),
    ("01A10", "照明与插座", "lighting and sockets (rooms)"),
    ("01A20", "走廊与应急照明", "corridor and emergency lighting"),
    ("01A30", "室外景观照明", "outdoor lighting"),
    ("01B00", "空调用电", "air conditioning"),
    ("01B10", "冷热站", "cooling and heating plant"),
    ("01B1A", "冷冻泵", "chilled-water pumps"),
    ("01B1B", "冷却泵", "condenser-water pumps"),
    ("01B1C", "冷机", "chillers"),
    ("01B1D", "冷却塔", "cooling towers"),
    ("01B1E", "热水循环泵", "hot-water circulation pumps"),
    ("01B1F", "电锅炉", "electric boilers"),
    ("01B20", "空调末端", "air-conditioning terminal units"),
    ("01C00", "动力用电", "power"),
    ("01C10", "电梯", "lifts"),
    ("01C20", "水泵", "water pumps"),
    ("01C30", "通风机", "ventilation fans"),
    ("01D00", "特殊用电", "special loads"),
    ("01D10", "信息中心", "information / data centre"),
    ("01D20", "洗衣房", "laundry"),
    ("01D30", "厨房餐厅", "kitchen and canteen"),
    ("01D40", "游泳池", "swimming pool"),
    ("01D50", "健身房", "gym"),
    ("01D60", "其他特殊用电", "other special loads"),
    ("02000", "水", "water"),
    ("03000", "燃气", "gas"),
    ("04000", "集中供热量", "district heat"),
    ("05000", "集中供冷量", "district cooling"),
    ("06000", "其他能源", "other energy"),
    # Extended category list used by several provinces.
    ("07000", "煤", "coal"),
    ("08000", "液化石油气", "liquefied petroleum gas"),
    ("09000", "人工煤气", "manufactured gas"),
    ("10000", "汽油", "gasoline"),
    ("11000", "煤油", "kerosene"),
    ("12000", "柴油", "diesel"),
    ("13000", "可再生能源", "renewable energy"),
)

NATIONAL_CODES: Mapping[str, EnergyCode] = MappingProxyType(
    {code: EnergyCode(code=code, zh=zh, en=en) for code, zh, en in _NATIONAL}
)

# Building id: 6-digit administrative division + this letter + 3-digit serial, e.g. 370102A001.
BUILDING_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "A": "办公建筑 office",
        "B": "商场建筑 shopping mall",
        "C": "宾馆饭店建筑 hotel",
        "D": "文化教育建筑 education",
        "E": "医疗卫生建筑 medical",
        "F": "体育建筑 sports",
        "G": "综合建筑 mixed use",
        "H": "其他建筑 other",
    }
)

# First two digits of the GB/T 2260 administrative division code (provinces, HK, Macau, Taiwan).
PROVINCE_PREFIXES: frozenset[str] = frozenset(
    {"11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41", "42"}
    | {"43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82"}
)


def is_code(code: str) -> bool:
    """True when ``code`` has the five-character shape (whether or not any table lists it)."""
    return bool(_CODE_RE.match(code))


def category(code: str) -> str:
    """The category code of ``code``: ``01B1A`` -> ``01000``."""
    return code[:2] + "000"


def parent(code: str) -> str | None:
    """The next level up: ``01B1A`` -> ``01B10`` -> ``01B00`` -> ``01000`` -> None."""
    if code[4] != "0":
        return code[:4] + "0"
    if code[3] != "0":
        return code[:3] + "00"
    if code[2] != "0":
        return code[:2] + "000"
    return None


def ancestors(code: str) -> Iterator[str]:
    """Every level above ``code``, nearest first (for roll-ups in the ledger)."""
    up = parent(code)
    while up is not None:
        yield up
        up = parent(up)


def code_table(site_codes: Mapping[str, str] | None = None) -> dict[str, EnergyCode]:
    """The national table plus a site's additions; a site entry with a national code relabels it."""
    table = dict(NATIONAL_CODES)
    for code, label in (site_codes or {}).items():
        if not is_code(code):
            raise ValueError(f"energy code {code!r} is not five characters like 01A00")
        table[code] = EnergyCode(code=code, zh=label, en=label, source="site")
    return table
