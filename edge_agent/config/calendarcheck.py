"""Is the working-day calendar complete for this year and the next? (issue 13, item 6)

The `holidays` package publishes China's make-up working days (调休) only once the State Council has
announced them; until then a year has holidays and no make-up days, and the weekends that will be
working days count as weekends. `check`, `policy explain` and `status` warn about it, naming
`calendar.extra_working_days`. Needs today's date, so it is not part of `load_config` (which stays
deterministic): the caller passes `today`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import date

from edge_agent.config.load import ConfigIssue, LoadedConfig
from edge_agent.config.yamlmarks import YamlSyntaxError, load_yaml
from policies.calendar import Calendar, calendar_gaps

__all__ = ["calendar_issues", "calendar_warnings", "working_days"]


def calendar_warnings(cfg: LoadedConfig, today: date) -> list[str]:
    """A sentence per year (this one and the next) with holidays but no make-up working days."""
    years = (today.year, today.year + 1)
    return calendar_gaps(Calendar.from_policy(cfg.policy.calendar, years=years), years)


def calendar_issues(cfg: LoadedConfig, today: date) -> list[ConfigIssue]:
    """The same, as warnings positioned at policy.yaml's `calendar.extra_working_days` (or the nearest
    enclosing key that is written)."""
    texts = calendar_warnings(cfg, today)
    if not texts:
        return []
    rel = os.path.relpath(cfg.policy_path)
    name = rel if not rel.startswith("..") else os.path.normpath(cfg.policy_path)
    try:
        mark = load_yaml(cfg.policy_path, file=name).mark(["calendar", "extra_working_days"])
        line, col = mark.line, mark.col
    except (OSError, YamlSyntaxError):  # changed since it was loaded: still warn, at the top
        line, col = 1, 1
    where = "calendar.extra_working_days"
    return [ConfigIssue(name, line, col, where, text, severity="warning") for text in texts]


def working_days(cfg: LoadedConfig) -> Callable[[date], bool]:
    """The site's working-day test (national calendar with the policy's overrides), as the policies use it:
    the ledger takes comparable days for a gap's profile from it."""
    return Calendar.from_policy(cfg.policy.calendar, years=()).is_working_day
