"""A season in seconds: the building model stepped over weeks or months with coarser sub-steps.

``Building.step`` sub-steps at most 60 s, which costs about a second per simulated week; a quarter for
a ledger test or a report demo needs to be faster. :func:`fast_advance` does what ``Building.advance_to``
does (script events at their exact times, exact exponentials for the rooms, rectangle-rule meter
integrals) with sub-steps of up to ``substep_s`` (default 300 s), about 5x faster. The meters stay exact
integrals of the model's own power, so ``Meter.integral`` is still the truth a ledger is checked against;
only the room temperatures (and so the AC power) follow the 60 s model a little less closely.

:func:`season` yields the building at every ``step_s`` (15 minutes by default) from ``start`` to ``end``;
a front end (``sim.modbus_map.BuildingModbus.refresh``) turns each state into the registers a client
would read at that moment. Deterministic for a seed.

This uses the model's internal step helpers (``_events_between``, ``_integrate``, ``_apply``): it lives
in ``sim/`` with the model and must follow it if ``Building.step`` changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from sim.building import Building

__all__ = ["DEFAULT_SUBSTEP_S", "fast_advance", "season"]

DEFAULT_SUBSTEP_S = 300.0


def fast_advance(b: Building, to: datetime, *, substep_s: float = DEFAULT_SUBSTEP_S) -> None:
    """Step ``b`` from its current time to ``to`` like ``Building.advance_to``, sub-steps <= substep_s."""
    if to.tzinfo is None:
        raise ValueError("to must be an aware datetime")
    if to > b.now:
        b.advance_to(to, max_substep_s=substep_s)


def season(
    *,
    start: datetime,
    end: datetime,
    seed: int = 0,
    step_s: float = 900.0,
    substep_s: float = DEFAULT_SUBSTEP_S,
    building: Building | None = None,
) -> Iterator[Building]:
    """Yield the building at ``start``, ``start + step_s``, ... up to ``end`` (inclusive when on a step).

    Pass ``building`` to continue one that is already running (e.g. the Simulator's); it must be at
    ``start``. The same object is yielded each time: read what you need before the next iteration.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be aware datetimes")
    b = building if building is not None else Building(seed=seed, start=start)
    if b.now != start:
        raise ValueError(f"the building is at {b.now.isoformat()}, not at start {start.isoformat()}")
    step = timedelta(seconds=step_s)
    t = start
    yield b
    while t + step <= end:
        t += step
        fast_advance(b, t, substep_s=substep_s)
        yield b
