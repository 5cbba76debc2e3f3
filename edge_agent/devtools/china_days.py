"""Write policies/china_days.py, the national calendar table, from the installed `holidays` package:
``python -m edge_agent.devtools.china_days`` after upgrading `holidays` (policies/calendar.py says why)."""

from __future__ import annotations

import sys
from pathlib import Path

from policies.calendar import installed_holidays, render_table

TABLE_PATH = Path(__file__).resolve().parents[2] / "policies" / "china_days.py"

if __name__ == "__main__":
    TABLE_PATH.write_text(render_table(), encoding="utf-8")
    sys.stdout.write(f"wrote {TABLE_PATH} from holidays {installed_holidays()}\n")
