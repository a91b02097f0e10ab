"""stats, export, pull and retrain against the loopback Supabase under mixed faults drawn from a seeded generator.

The promise under test: every run ends in exactly one of two ways. Either the exact data (what a run
against a clean server gives, for the table as it was before or after the one change of data the
run may meet: keyset pages make either snapshot possible, never a mix), or exit 1 with one line that
names the fault and its fix, and nothing partial left behind (no stdout, no export file that is not
whole, a store a clean rerun completes). Every injected fault the command survives shows as a
"retrying ..." line on stderr; a host that does not resolve or refuses connections is named as
such after 3 quick attempts, never with advice to allow longer retries.

retrain is run up to its pull step and the readiness check after it (AGROML_MIN_TOTAL above the table's
rows, so it ends "not ready", exit 0, before any training): its store and image cache must equal a clean
``pull``'s, or it exits 1 with its one-line reason naming the fault and its fix, and a clean rerun
completes the store. (The retrain command loads TensorFlow up front to keep its start-up noise off the
terminal, so the first retrain of a test process pays that once.)

Each run prints its seed (also in the test id); ``AGROML_FAULT_SEED=<seed>`` replays one run;
``--soak`` runs many more seeds; ``AGROML_FAULT_LOG=<file>`` appends each run's outcome and fault
counts as a JSON line (the figures in docs/RELIABILITY.md).
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from faultmix import FaultySupabase, Plan, draw_plan, forced_seed, record, seeds, seeds_of_kind
from supa_rows import add_empty_tables, add_pest_table, jpeg, pest_rows
from supaserver import Faults, closed_port

COMMANDS = ("stats", "export", "pull")
RETRAIN = "retrain"  # its own seeds, so the first three commands' default cases stay as they were
BASE_SEED = 20261202  # the default run's seeds come from this; --soak draws a fresh base and prints it
ROWS, PAGE = 48, 16
HTTP_TIMEOUT, SLOW_S = 0.6, 0.9  # a slow answer takes longer than the client's timeout
RETRY_LINE = re.compile(
    r"retrying in (\d+\.\d) s \(attempt (\d+)(?:/(\d+)|, giving up after [\d.]+ s)\): (.+)"
)  # the notice agroml/core/retry.py prints for every retry


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    forced = forced_seed()
    soak = metafunc.config.getoption("soak")
    cases: list[tuple[str, str, int]] = []
    if metafunc.function.__name__ == "test_mixed_faults_give_the_exact_data_or_one_clear_error":
        if forced is not None:
            cases = [(c, "any", forced) for c in COMMANDS]
        elif soak:
            base = int(time.time())
            print(f"soak base seed {base}")
            every = (*COMMANDS, RETRAIN)
            cases = [(every[i % 4], "any", s) for i, s in enumerate(seeds(base, 200))]
        else:
            mixed, outage = seeds_of_kind(BASE_SEED, "mixed", 8), seeds_of_kind(BASE_SEED, "outage", 4)
            cases = [(c, "any", s) for c, s in zip(COMMANDS * 2, mixed[:6], strict=True)]
            cases += [(c, "any", s) for c, s in zip(COMMANDS, outage[:3], strict=True)]
            cases += [(RETRAIN, "any", s) for s in (*mixed[6:], outage[3])]
    else:
        cases = [(c, k, 0) for c in (*COMMANDS, RETRAIN) for k in ("dns", "refused")]
    ids = [f"{c}-{draw_plan(s).kind if k == 'any' else k}-seed{s}" for c, k, s in cases]
    metafunc.parametrize("case", cases, ids=ids)


# --- the data, the server, one run -------------------------------------------------------------------------
def _rows(server: Any) -> list[dict[str, Any]]:
    return pest_rows(
        ROWS,
        seed=31,
        image_url=lambda i, rid: server.add_object("predictions", f"pest_images/pest_{rid}.jpg", jpeg(i)),
    )


def _server(state: str = "before", change_row: int = 0) -> tuple[FaultySupabase, list[dict[str, Any]]]:
    """A loopback project with the pest table (images in Storage) as it is before or after a change."""
    server = FaultySupabase()
    add_empty_tables(server)
    rows = sorted(_rows(server), key=lambda r: r["id"])  # change_row counts in id (page) order
    if state == "update":
        from faultmix import changed_row

        rows[change_row] = {**rows[change_row], **changed_row(rows[change_row])}
    elif state == "delete":
        del rows[change_row]
    add_pest_table(server, rows)
    return server, rows


def _env(server_url: str, key: str, data: Path, retry_s: float) -> dict[str, str]:
    return {
        "AGROML_MIN_TOTAL": str(10 * ROWS),  # retrain: pull, then "not ready", before any training
        "SUPABASE_URL": server_url,
        "SUPABASE_SERVICE_KEY": key,
        "AGROML_HASH_SALT": "pepper",
        "AGROML_PAGE_SIZE": str(PAGE),
        "AGROML_HTTP_TIMEOUT": str(HTTP_TIMEOUT),
        "AGROML_RETRY_BASE_SECONDS": "0.01",
        "AGROML_RETRY_MAX_SECONDS": str(retry_s),
        "AGROML_IMAGE_CONCURRENCY": "1",  # one request at a time: a seed replays the same faults
        "AGROML_DATA_DIR": str(data),
        "AGROML_LOG_DIR": str(data.parent / "logs"),
    }


def _argv(command: str, out: Path) -> list[str]:
    if command == "stats":
        return ["stats", "--source", "supabase", "--json"]
    if command == "export":
        return ["export", "--source", "supabase", "--scope", "all", "--format", "json", "--out", str(out), "--json"]
    if command == RETRAIN:
        return ["retrain", "--model", "pest", "--json"]
    return ["pull", "--model", "pest", "--json"]


def _run(cli: Any, command: str, env: dict[str, str], out: Path) -> Any:
    return cli(*_argv(command, out), env=env)


def _outcome(command: str, result: Any, env: dict[str, str], out: Path) -> Any:
    """What a successful run produced, in a form two runs (two servers, two ports) can be compared by."""
    if command == "stats":
        doc = json.loads(result.stdout)
        doc.pop("generated_at")
        return doc
    if command == RETRAIN:  # it stopped where it must, before training; its pull is compared as a pull
        (model,) = json.loads(result.stdout)["models"]
        assert model["outcome"] == "nothing_to_do" and model["reason"].startswith("not ready"), model
        assert model["run_id"] is None
        command = "pull"
    here = env["SUPABASE_URL"]
    if command == "export":
        return {_export_name(p): p.read_text().replace(here, "SERVER") for p in out.iterdir()}
    data = Path(env["AGROML_DATA_DIR"])
    store, (files, index) = _store(data / "agroml.db"), _cache(data / "images")
    store = [tuple(v.replace(here, "SERVER") if isinstance(v, str) else v for v in row) for row in store]
    return store, files, [(url.replace(here, "SERVER"), sha) for url, sha in index]


def _export_name(path: Path) -> str:
    return re.sub(r"_\d{8}T\d{6}Z.*", "", path.name)


def _store(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        cols = [c[1] for c in con.execute("PRAGMA table_info(predictions)")]
        keep = [c for c in cols if c not in ("pulled_at", "updated_at", "first_seen_at")]
        return con.execute(f"SELECT {', '.join(keep)} FROM predictions ORDER BY source, id").fetchall()
    finally:
        con.close()


def _cache(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    files = sorted(str(p.relative_to(root)) for p in root.glob("??/*") if p.is_file())
    con = sqlite3.connect(root / "index.db")
    try:
        return files, sorted(con.execute("SELECT url, sha256 FROM urls").fetchall())
    finally:
        con.close()


_REFERENCES: dict[tuple[str, str, int], Any] = {}


def _reference(cli: Any, workdir: Path, command: str, state: str, change_row: int) -> Any:
    """The outcome of a clean run against the table in ``state`` (computed once per session and state);
    retrain's is a clean pull's (retrain stops after pulling)."""
    command = "pull" if command == RETRAIN else command
    key = (command, state, change_row if state != "before" else 0)
    if key not in _REFERENCES:
        server, _ = _server(state, change_row)
        try:
            tag = f"ref-{command}-{state}-{change_row}"
            out, env = workdir / tag / "out", _env(server.url, server.service_key, workdir / tag / "data", 5)
            result = _run(cli, command, env, out)
            assert result.exit_code == 0, result.output
            _REFERENCES[key] = _outcome(command, result, env, out)
        finally:
            server.stop()
    return _REFERENCES[key]


# --- the checks ----------------------------------------------------------------------------------------------
def _diff(got: Any, wants: dict[str, Any]) -> str:
    """Where ``got`` differs from each clean outcome (first few differences), for the failure message."""

    def walk(a: Any, b: Any, path: str, out: list[str]) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{path}.{k}", out)
        elif isinstance(a, str) and isinstance(b, str) and a != b:
            ga, gb = set(a.splitlines()), set(b.splitlines())
            here, there = sorted(ga - gb)[:2], sorted(gb - ga)[:2]
            out.append(f"{path}: lines only here {here!r:.300}; only in clean {there!r:.300}")
        elif a != b:
            out.append(f"{path}: {a!r:.80} != {b!r:.80}")

    parts = []
    for state, want in wants.items():
        found: list[str] = []
        walk(got, want, "", found)
        parts.append(f"vs {state}: " + "; ".join(found[:6]))
    return " | ".join(parts)


def _retry_lines(stderr: str) -> list[re.Match[str]]:
    lines = [line for line in stderr.splitlines() if line.startswith("retrying")]
    matches = [RETRY_LINE.fullmatch(line) for line in lines]
    assert all(matches), f"a retry notice not in the agreed shape: {lines}"
    return [m for m in matches if m]


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"want exactly one error line, got: {stderr[-3000:]}"
    assert re.fullmatch(r"error: .+ \(.+\)", errors[0]), errors[0]  # message, then the fix in parentheses
    assert "Traceback" not in stderr
    return errors[0]


def _failure_line(command: str, result: Any) -> str:
    """The one line a failed run gives, as ``error: <message> (<fix>)``.

    retrain is a scheduler's command: its result (stdout, --json) and its log say why it failed, in one
    line ``retrain <type> failed: <message> (<fix>)``, which the log file repeats as its one ``error:`` line."""
    if command != RETRAIN:
        return _one_error_line(result.stderr)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not any(line.startswith("error:") for line in result.stderr.splitlines()), result.stderr[-3000:]
    (model,) = json.loads(result.stdout)["models"]
    assert model["outcome"] == "failed" and model["run_id"] is None, model
    reason = model["reason"]
    assert "\n" not in reason and reason.startswith("retrain pest failed: "), reason
    logged = [line.split(" ", 1)[1] for line in Path(model["log"]).read_text().splitlines() if " error: " in line]
    line = "error: " + reason.removeprefix("retrain pest failed: ")
    assert logged == [line], (logged, line)  # the log says it once, the same way (no traceback: not a bug)
    assert re.fullmatch(r"error: .+ \(.+\)", line), line
    return line


def _nothing_partial(command: str, result: Any, out: Path, reference: Any, here: str) -> None:
    if command != RETRAIN:  # retrain prints its result (the failure); nothing else
        assert result.stdout.strip() == "", "a failed run must print no data"
    if command == "export" and out.exists():
        for p in out.iterdir():  # a file that is there is whole: a model type finished before the fault
            assert not p.name.endswith(".tmp"), p.name
            assert p.read_text().replace(here, "SERVER") == reference[_export_name(p)], p.name


def test_mixed_faults_give_the_exact_data_or_one_clear_error(cli, workdir, case):
    command, kind, seed = case
    plan: Plan = draw_plan(seed, None if kind == "any" else kind)
    print(f"seed {seed} ({command}): replay with AGROML_FAULT_SEED={seed}; plan {plan.describe()}")
    change_row = random.Random(seed).randrange(ROWS)
    server, rows = _server()
    started = time.monotonic()
    try:
        if plan.kind in ("dns", "refused"):  # a whole-run fault drawn in --soak: the same promise as below
            _check_unreachable(cli, workdir, command, plan.kind, seed)
            return
        target = rows[change_row]
        server.arm(plan, SLOW_S, "pest_predictions", target)
        out = workdir / "out"
        retry_s = 1.5 if plan.kind == "outage" else 20
        env = _env(server.url, server.service_key, workdir / "data", retry_s)
        result = _run(cli, command, env, out)
        faults = server.fault_counts()
        state = plan.change if server.changed else "before"
        wall = time.monotonic() - started
        _judge(cli, workdir, command, plan, result, env, out, faults, state, change_row, wall, server)
    finally:
        server.stop()


def _judge(
    cli: Any,
    workdir: Path,
    command: str,
    plan: Plan,
    result: Any,
    env: dict[str, str],
    out: Path,
    faults: dict[str, int],
    state: str,
    change_row: int,
    wall: float,
    server: FaultySupabase,
) -> None:
    """Exactly one of the two allowed outcomes, and every survived fault said out loud."""
    seed = plan.seed
    lines = _retry_lines(result.stderr)
    entry = {"test": "faults", "command": command, "seed": seed, "plan": plan.kind, "faults": faults}
    entry.update(exit=result.exit_code, retries=len(lines), wall_s=round(wall, 2), change=state)
    if result.exit_code == 0:
        got = _outcome(command, result, env, out)
        wants = {s: _reference(cli, workdir, command, s, change_row) for s in {"before", state}}
        entry["outcome"] = "exact" if got in wants.values() else "WRONG"
        record(entry)
        assert got in wants.values(), f"seed {seed}: no clean run's data (change {state}): {_diff(got, wants)}"
        assert plan.kind != "outage", "an outage cannot end in success"
        # every fault the run lived through was said out loud (one line per retry, none silent)
        assert len(lines) >= sum(faults.values()), (faults, result.stderr[-2000:])
    else:
        entry["outcome"] = "clear_error"
        record(entry)
        assert result.exit_code == 1, result.output
        line = _failure_line(command, result)
        if plan.kind == "outage":
            assert f"{plan.outage_status} from {server.url.split('//')[1]}" in line, line
            assert "AGROML_RETRY_MAX_SECONDS" in line  # here more time may help, and the fix says so
        _nothing_partial(command, result, out, _reference(cli, workdir, command, "before", 0), env["SUPABASE_URL"])
        if command in ("pull", RETRAIN) and not server.changed:  # what a failed pull left, a clean rerun completes
            server.plan, server.faults = None, Faults()
            rerun = _run(cli, command, env, out)
            assert rerun.exit_code == 0, rerun.output
            assert _outcome(command, rerun, env, out) == _reference(cli, workdir, command, "before", 0)
    for m in lines:  # a 429's Retry-After is honoured (the server asks for 1 s)
        if m.group(4).startswith("429 from"):
            assert float(m.group(1)) >= 1.0, m.group(0)


def test_an_unreachable_host_is_named_within_3_attempts(cli, workdir, case):
    """A name that does not resolve or a port that refuses: 3 quick attempts, each shown, then the host named."""
    command, kind, seed = case
    _check_unreachable(cli, workdir, command, kind, seed)


def _check_unreachable(cli: Any, workdir: Path, command: str, kind: str, seed: int) -> None:
    port = closed_port()
    host = f"127.0.0.1:{port}" if kind == "refused" else f"agroml-fault-{port}.invalid"
    what = "connection refused" if kind == "refused" else "name not found (DNS)"
    out = workdir / "out"
    env = _env(f"http://{host}", "a-key-that-is-never-checked", workdir / "data", retry_s=600)
    started = time.monotonic()
    result = _run(cli, command, env, out)
    wall = round(time.monotonic() - started, 2)
    record({"test": "unreachable", "command": command, "seed": seed, "plan": kind, "exit": result.exit_code,
            "outcome": "clear_error" if result.exit_code == 1 else "WRONG", "wall_s": wall})  # fmt: skip
    assert result.exit_code == 1, result.output
    line = _failure_line(command, result)
    assert re.fullmatch(
        rf"error: could not reach Supabase at {re.escape(host)} \({re.escape(what)}; 3 attempts in [\d.]+ s\) "
        rf"\(check SUPABASE_URL \(http://{re.escape(host)}\) and this machine's network\)",
        line,
    ), line
    assert "AGROML_RETRY_MAX_SECONDS" not in result.stderr  # more time would not help: never advised
    lines = _retry_lines(result.stderr)
    assert [(m.group(2), m.group(3), m.group(4)) for m in lines] == [
        ("2", "3", f"{host}: {what}"),
        ("3", "3", f"{host}: {what}"),
    ]
    assert command == RETRAIN or result.stdout.strip() == ""
    assert not (out.exists() and any(out.iterdir()))


def test_stats_reads_a_live_table_once_so_its_numbers_come_from_one_moment(cli, workdir):
    """A farmer's answer changing between stats' two passes (feedback counts, then where the model is
    wrong) once gave a report that matched no state of the table; now each table is read once."""
    server, rows = _server()
    try:
        corrected = next(i for i, r in enumerate(rows) if r["user_confirmed"] is False and r["actual_pest"])
        pages = ROWS // PAGE + 1  # the last page is the empty one that ends the read
        server.arm(Plan(seed=0, kind="mixed", change="update", change_at=pages + 1), SLOW_S, "pest_predictions",
                   rows[corrected])  # fmt: skip
        env = _env(server.url, server.service_key, workdir / "data", 5)
        result = _run(cli, "stats", env, workdir / "out")
        assert result.exit_code == 0, result.output
        pest_reads = [r for r in server.requests if r.path == "/rest/v1/pest_predictions"]
        assert len(pest_reads) == pages + 1  # one read of the rows, then model_types' 1-row probe
        assert server.changed  # the change landed after the read: the report is the table before it
        got = _outcome("stats", result, env, workdir / "out")
        assert got == _reference(cli, workdir, "stats", "before", corrected)
    finally:
        server.stop()
