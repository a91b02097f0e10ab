"""Mixed faults for the reliability suite: one seeded draw decides everything that goes wrong in a run.

The loopback server (tests/supaserver.py) already injects per-request faults (error statuses, dropped
connections, bodies cut short of their Content-Length, slow answers). This module adds what a run of
a whole command meets on a real network and the base server does not do by itself:

- 429 answers that carry ``Retry-After`` (the client must wait at least that long);
- a JSON body cut short *with a matching Content-Length* (only the parser can tell);
- the data changing under a read: a row's feedback updated, or a row deleted, just before the n-th
  PostgREST request (so between two pages, or between a failed attempt and its retry);
- a whole-run fault: a host name that does not resolve, or a port that refuses connections.

A :class:`Plan` is drawn from ``random.Random(seed)``; the same seed gives the same plan and (with one
image worker) the same sequence of faults, so a failing seed replays with ``AGROML_FAULT_SEED=<seed>``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from typing import Any

from supaserver import FakeSupabase, Faults
from supaserver_http import Reply, RequestLog

#: Per-request fault kinds, as counted in the request log (plus the two this module adds).
REQUEST_KINDS = ("503", "429", "500", "slow", "drop", "truncate", "bad_json")
RUN_KINDS = ("dns", "refused")
CHANGE_KINDS = ("update", "delete")


@dataclass
class Plan:
    """What goes wrong in one run. ``kind`` is "mixed" (per-request faults, maybe a change of data),
    "outage" (every request fails with ``outage_status``: the run must fail naming it), "dns" or "refused"."""

    seed: int
    kind: str
    error_rate: float = 0.0
    statuses: tuple[int, ...] = ()
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    slow_rate: float = 0.0
    bad_json_rate: float = 0.0
    change: str | None = None  # "update" | "delete" | None
    change_at: int = 0  # before the change_at-th PostgREST request (1-based)
    outage_status: int = 0

    def faults(self, slow_s: float) -> Faults:
        return Faults(
            seed=self.seed,
            error_rate=self.error_rate,
            error_statuses=self.statuses,
            drop_rate=self.drop_rate,
            truncate_rate=self.truncate_rate,
            slow_rate=self.slow_rate,
            slow_s=slow_s,
        )

    def describe(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (0, 0.0, (), None)})


def draw_plan(seed: int, kind: str | None = None) -> Plan:
    """A plan from ``seed``: rates of each fault between a little and a lot, a change of data half the time.

    ``kind`` forces the plan's kind (tests); otherwise mostly mixed. The seed alone names the plan."""
    rng = random.Random(seed)
    drawn = rng.choices(["mixed", "outage", "dns", "refused"], weights=[14, 2, 2, 2])[0]
    kind = kind or drawn
    plan = Plan(seed=seed, kind=kind)
    if kind == "outage":
        plan.outage_status = rng.choice((503, 500, 429))
    if kind != "mixed":
        return plan
    plan.statuses = tuple(rng.sample((503, 429, 500), k=rng.randint(1, 3)))
    plan.error_rate = rng.uniform(0.05, 0.25)
    plan.drop_rate = rng.uniform(0.0, 0.08)
    plan.truncate_rate = rng.uniform(0.0, 0.08)
    plan.slow_rate = rng.uniform(0.0, 0.06)
    plan.bad_json_rate = rng.uniform(0.0, 0.08)
    plan.change = rng.choice((None, *CHANGE_KINDS))
    plan.change_at = rng.randint(1, 8)
    return plan


def seeds(base: int, n: int) -> list[int]:
    """``n`` run seeds from a base seed (so one number names a whole session's runs)."""
    rng = random.Random(base)
    return [rng.randrange(1, 2**31) for _ in range(n)]


def seeds_of_kind(base: int, kind: str, n: int) -> list[int]:
    """The first ``n`` seeds from ``base`` whose drawn plan is of ``kind`` (so the seed alone replays the plan)."""
    found = [s for s in seeds(base, 400) if draw_plan(s).kind == kind]
    return found[:n]


def forced_seed() -> int | None:
    """AGROML_FAULT_SEED: replay one run's seed instead of drawing them."""
    value = os.environ.get("AGROML_FAULT_SEED", "").strip()
    return int(value) if value else None


def kill_seeds(config: Any, base_seed: int, soak_runs: int = 5) -> list[int]:
    """The seeds a kill test runs: the one forced by the environment (a replay), ``soak_runs`` from
    the clock with ``--soak`` (printed, so a failure replays), else one fixed seed from ``base_seed``."""
    import time

    forced = forced_seed()
    if forced is not None:
        return [forced]
    if config.getoption("soak"):
        base = int(time.time())
        print(f"soak base seed {base}")
        return seeds(base, soak_runs)
    return seeds(base_seed, 1)


class FaultySupabase(FakeSupabase):
    """FakeSupabase plus Retry-After on 429, parseable-length bad JSON, and one change of data mid-read."""

    def __init__(self, **kw: Any) -> None:
        self.plan: Plan | None = None
        self.change_table = ""
        self.change_row: dict[str, Any] = {}
        self.changed = False
        self.retry_after = "1"
        self._extra_rng = random.Random(0)
        self._rest_seen = 0
        self.extra_faults: list[RequestLog] = []  # the requests whose answer this module cut to bad JSON
        super().__init__(**kw)

    def arm(self, plan: Plan, slow_s: float, table: str, row: dict[str, Any]) -> None:
        """Start a run under ``plan``; ``row`` (of ``table``) is the one a change updates or deletes."""
        self.plan, self.change_table, self.change_row = plan, table, row
        self.changed, self._rest_seen, self.extra_faults = False, 0, []
        self._extra_rng = random.Random(plan.seed ^ 0x5EED)
        self.requests.clear()
        if plan.kind == "outage":
            self.faults = Faults(seed=plan.seed, burst=10**9, error_statuses=(plan.outage_status,))
        else:
            self.faults = plan.faults(slow_s)

    def _error_reply(self, path: str, status: int) -> Reply:
        reply = super()._error_reply(path, status)
        if status == 429:  # a real gateway says how long to back off
            reply.headers = {**reply.headers, "Retry-After": self.retry_after}
        return reply

    def handle(self, req: RequestLog) -> Reply:
        plan = self.plan
        if plan is not None and req.path.startswith("/rest/"):
            self._rest_seen += 1
            if plan.change and not self.changed and self._rest_seen >= plan.change_at:
                self._apply_change(plan.change)
        reply = super().handle(req)
        if (
            plan is not None
            and req.path.startswith("/rest/")
            and reply.status < 300
            and len(reply.body) > 2
            and self._extra_rng.random() < plan.bad_json_rate
        ):
            # a whole answer by its length that is not whole JSON: only the parser can notice
            reply = Reply(reply.status, reply.body[: len(reply.body) // 2], reply.content_type, reply.headers)
            self.extra_faults.append(req)
        return reply

    def _apply_change(self, change: str) -> None:
        self.changed = True
        match = {"id": self.change_row["id"]}
        if change == "update":
            self.update_rows(self.change_table, match, changed_row(self.change_row))
        else:
            self.delete_rows(self.change_table, match)

    def fault_counts(self) -> dict[str, int]:
        """Faults injected in this run, per kind (REQUEST_KINDS); a request counts once (each costs one retry)."""
        counts: dict[str, int] = {}
        for r in self.requests:
            if r.fault == "error":
                kind = str(r.status)
            elif r.fault:
                kind = r.fault
            else:
                continue
            counts[kind] = counts.get(kind, 0) + 1
        for r in self.extra_faults:  # one request, one fault: a bad-JSON answer also cut short counts once
            if not r.fault:
                counts["bad_json"] = counts.get("bad_json", 0) + 1
        return counts


def changed_row(row: dict[str, Any]) -> dict[str, Any]:
    """The update a change applies: a farmer's answer changes (a correction becomes a confirmation, anything
    else becomes a correction), so every number that reads feedback or corrections moves."""
    if row.get("user_confirmed") is False and row.get("actual_pest"):
        return {"user_confirmed": True, "actual_pest": None}
    other = "aphids" if row.get("pest_detected") != "Aphids" else "stem_borer"
    return {"user_confirmed": False, "actual_pest": other}


#: Read at import: the tests' workdir fixture clears every AGROML_* variable before a test runs.
_LOG = os.environ.get("AGROML_FAULT_LOG")


def record(entry: dict[str, Any]) -> None:
    """Append one run's outcome to AGROML_FAULT_LOG (the figures in docs/RELIABILITY.md come from it)."""
    path = _LOG
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
