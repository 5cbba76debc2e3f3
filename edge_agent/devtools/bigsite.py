"""A large Modbus site for the scale benchmarks: N bench units x M float32 points on simulator endpoints.

The text is what an integrator would write (one mapping per point, flow style), so `check` of it measures
what a real 10,000-point site.yaml costs: the YAML composer, the models and the site checks.
"""

from __future__ import annotations

__all__ = ["bench_site_yaml"]

FIRST_UNIT = 100  # the simulator's bench units start here (sim/bench.py)


def bench_site_yaml(*, devices: int, points: int, endpoints: list[tuple[str, int]], interval_s: float) -> str:
    """site.yaml text: ``devices`` units spread over ``endpoints``, ``points`` float32 values each."""
    lines = [
        "gateway_id: gw-bench-01",
        'building_id: "370102A001"',
        "name: bench site",
        "timezone: Asia/Shanghai",
        "location: {lat: 36.65, lon: 117.12}",
        "floor_area_m2: 8600",
        "occupants: 320",
        "zones:",
        "  - {id: f1, name: 1F, perimeter: true}",  # the zones config/policy.yaml names
        "  - {id: f2, name: 2F}",
        "  - {id: f3, name: 3F}",
        "  - {id: dc, name: data centre, kind: data_centre}",
        "devices:",
    ]
    per_endpoint = -(-devices // len(endpoints))
    for n in range(devices):
        host, port = endpoints[n // per_endpoint]
        unit = FIRST_UNIT + n % per_endpoint
        lines += [
            "  - protocol: modbus",
            f"    id: bench-{n}",
            f"    host: {host}",
            f"    port: {port}",
            f"    unit_id: {unit}",
            f"    interval_s: {interval_s:g}",
            "    points:",
        ]
        lines += [
            f"      - {{id: b{n}.p{i}, name: point {i}, address: {2 * i}, type: float32, unit: kW}}"
            for i in range(points)
        ]
    return "\n".join(lines) + "\n"
