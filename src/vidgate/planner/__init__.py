"""Workload planning: what a traffic mix costs on the catalog, how fast it is, what a single
model would cost instead, when self-hosting pays, and a replay through the sandbox.

* :mod:`~vidgate.planner.workload` — WORKLOAD.yaml (errors name the field and the line)
* :mod:`~vidgate.planner.plan` — per-class routing, costs, latency, SLA, baselines
* :mod:`~vidgate.planner.breakeven` — self-hosting break-even volumes
* :mod:`~vidgate.planner.charts` — PNG charts (optional matplotlib: ``vidgate[plan]``)
* :mod:`~vidgate.planner.simulate` — replay through a real gateway against the sandbox
"""

from vidgate.planner.breakeven import BreakEven, break_even
from vidgate.planner.plan import PlanReport, plan
from vidgate.planner.workload import Workload, WorkloadError, load_workload, parse_workload

__all__ = [
    "BreakEven",
    "PlanReport",
    "Workload",
    "WorkloadError",
    "break_even",
    "load_workload",
    "parse_workload",
    "plan",
]
