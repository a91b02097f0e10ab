"""The command line's surface: one result shape, choices from the library, dates, seeds, help, tables.

Each test drives the real CLI (CliRunner, or a subprocess where the terminal, file descriptors or the
import list matter) on a real store or registry; only the far side of the wire is faked.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
from model_helpers import add_rows, color_png, write_run

from agroml.cli import export as export_cli
from agroml.cli import main as cli_main
from agroml.cli import options
from agroml.cli import stats as stats_cli
from agroml.core import config, schema
from agroml.data import analysis, exporting
from agroml.lifecycle.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
CLI_DIR = ROOT / "agroml" / "cli"
#: The commands that take the [--since, --until) window.
WINDOW_COMMANDS = ("stats", "distribution", "export", "pull")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGROML_", "SUPABASE_", "COLUMNS"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def _agroml(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agroml", *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=300
    )


def _on_a_terminal(*args: str, cwd: Path, columns: int) -> str:
    """`agroml ARGS` with stdout and stderr on a pseudo-terminal ``columns`` wide: what a user sees."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agroml", *args],
        cwd=cwd,
        env=_env(COLUMNS=str(columns), NO_COLOR="1"),
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=120)
    os.close(leader)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", errors="replace")).replace("\r", "")


@pytest.fixture
def few_rows(workdir):
    """Settings of a store with a few pest rows (cheaper than the demo data set)."""
    settings = config.resolve(env_file=None)
    add_rows(settings, "pest", [(f"r{i}", "aphids" if i % 2 else "healthy", "red") for i in range(6)])
    return settings


# --- one shape of result --------------------------------------------------------------------------
def test_commands_render_through_emit_and_name_the_flag_json_():
    """No command repeats the warnings / JSON / tables block: only output.py prints JSON; --json is json_."""
    for path in sorted(CLI_DIR.glob("*.py")):
        if path.name == "output.py":
            continue
        for func in ast.walk(ast.parse(path.read_text())):
            if isinstance(func, ast.FunctionDef):
                calls = [n for n in ast.walk(func) if isinstance(n, ast.Attribute) and n.attr == "print_json"]
                assert not calls, f"{path.name}:{func.name} prints JSON itself instead of output.emit"
    for name in cli_main.COMMANDS:
        command = cli_main.load_command(name)
        flags = {p.name: p.opts for p in command.params}
        if any("--json" in opts for opts in flags.values()):
            assert "--json" in flags.get("json_", []), f"`agroml {name}`: --json is not the parameter json_"


def test_choices_come_from_the_library_constants():
    assert [m.value for m in options.ModelType] == list(schema.MODEL_TYPES)
    assert [m.value for m in options.ModelTypeOrAll] == [*schema.MODEL_TYPES, "all"]
    assert [m.value for m in options.SourceName] == list(schema.SOURCES)
    assert [m.value for m in export_cli.Format] == list(exporting.FORMATS)
    assert [m.value for m in export_cli.Scope] == list(exporting.SCOPES)
    assert [m.value for m in stats_cli.ByKey] == list(analysis.DISTRIBUTION_KEYS)


def test_stats_and_distribution_return_results_with_to_dict_and_warnings(few_rows):
    from agroml.data.sources import LocalSource

    source = LocalSource(few_rows)
    try:
        stats = analysis.stats_report(source, ["pest"])
        dist = analysis.distribution_report(source, "pest", "season")
    finally:
        source.close()
    for report in (stats, dist):
        data = report.to_dict()
        assert data["warnings"] is report.warnings and json.loads(json.dumps(data)) == data
    assert list(stats.to_dict()) == ["generated_at", "source", "since", "until", "models", "warnings"]
    assert "plot" not in dist.to_dict()  # appears only once a chart is written, as before


# --- help -------------------------------------------------------------------------------------------
def test_top_level_summaries_are_the_docstrings_first_lines():
    """`agroml --help` lists commands from a static table (no import): it must say what each docstring says."""
    registered = set()
    for module in {m for m, _ in cli_main.COMMANDS.values()}:
        tree = ast.parse((CLI_DIR / f"{module}.py").read_text())
        registered |= {
            n.args[0].value
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "command" and n.args
        }
    assert registered == set(cli_main.COMMANDS), "a command module registers a command the table does not list"
    for name, (_, summary) in cli_main.COMMANDS.items():
        doc = inspect.cleandoc(cli_main.load_command(name).help or "")
        assert doc.splitlines()[0] == summary, f"agroml {name}: the --help summary drifted from its docstring"


def test_top_level_help_imports_no_command_module_nor_heavy_packages(workdir):
    code = (
        "import runpy, sys\n"
        "sys.argv = ['agroml', '--help']\n"
        "try:\n    runpy.run_module('agroml', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=_env(), capture_output=True, text=True)
    assert "stats" in done.stdout and "doctor" in done.stdout
    loaded = set(done.stderr.split())
    for heavy in ("pandas", "numpy", "pyarrow", "tensorflow", "matplotlib", "agroml.data.records", "agroml.cli.stats"):
        assert heavy not in loaded, f"`agroml --help` imports {heavy}"


ODD = re.compile(r"<bool>|<list\[|range>|%Y|\{\w+\}|<datetime>")


@pytest.mark.parametrize("name", ["", *cli_main.COMMANDS])
def test_help_is_h_too_and_shows_no_odd_types(cli, name):
    args = [name] if name else []
    long = cli(*args, "--help")
    short = cli(*args, "-h")
    assert long.exit_code == short.exit_code == 0
    assert short.output == long.output
    odd = ODD.findall(long.output)
    assert not odd, f"`agroml {name} --help` shows {odd}"


# --- dates ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "utc"),
    [
        ("2025-03-01T10:00:00Z", "2025-03-01T10:00:00+00:00"),
        ("2025-03-01T13:00:00+03:00", "2025-03-01T10:00:00+00:00"),
        ("2025-03-01T05:30:00-04:30", "2025-03-01T10:00:00+00:00"),
        ("2025-03-01", "2025-03-01T00:00:00+00:00"),
        ("2025-03-01T10:00:00", "2025-03-01T10:00:00+00:00"),  # naive: UTC
        ("2025-03-01 10:00", "2025-03-01T10:00:00+00:00"),
    ],
)
@pytest.mark.parametrize("command", ["stats", "distribution"])
def test_since_and_until_take_iso_8601_with_or_without_a_zone(cli, few_rows, command, given, utc):
    result = cli(command, "--since", given, "--until", "2026-01-01T00:00:00+00:00", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["since"], report["until"]) == (utc, "2026-01-01T00:00:00+00:00")


BAD_WINDOWS = {
    "before pandas' range": (["--since", "0001-01-01"], "outside the dates"),
    "after pandas' range": (["--until", "9999-12-31"], "outside the dates"),
    "an offset past year 1": (["--since", "0001-01-01T00:00:00+03:00"], "outside the dates"),
    "an offset past year 9999": (["--until", "9999-12-31T23:59:59-05:00"], "outside the dates"),
    "since after until": (["--since", "2025-03-02", "--until", "2025-03-01"], "is not before --until"),
    "since equal to until": (["--since", "2025-03-01T03:00:00+03:00", "--until", "2025-03-01"], "is not before"),
    "not a date": (["--since", "yesterday"], "not an ISO 8601 date"),
}


@pytest.mark.parametrize("bad", BAD_WINDOWS, ids=list(BAD_WINDOWS))
@pytest.mark.parametrize("command", WINDOW_COMMANDS)
def test_every_window_command_refuses_a_bad_window_in_one_line(
    cli, workdir, supabase_server, monkeypatch, command, bad
):
    monkeypatch.setenv("SUPABASE_URL", supabase_server.url)
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", supabase_server.service_key)
    args, says = BAD_WINDOWS[bad]
    result = cli(command, *args, "--json")
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.stderr.split())
    assert "Traceback" not in result.output and result.stdout == ""
    assert supabase_server.requests == [], "the window was checked after going to the network"
    assert not (workdir / "exports").exists(), "an empty export was written"


def test_the_window_check_is_the_library_s_own(few_rows, tmp_path):
    """The API calls the library directly: export_records and pull refuse an empty window too."""
    from agroml.core.errors import UsageError
    from agroml.data.pulling import pull
    from agroml.data.sources import LocalSource

    out = tmp_path / "exports"
    source = LocalSource(few_rows)
    try:
        with pytest.raises(UsageError, match="not before"):
            exporting.export_records(source, "pest", since="2025-03-02", until="2025-03-01", out_dir=out)
    finally:
        source.close()
    with pytest.raises(UsageError, match="outside the dates"):
        pull(few_rows, "pest", since="0001-01-01")
    assert not out.exists()


# --- seeds ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", "-99999999999999999999"])
@pytest.mark.parametrize("name", ["demo", "train"])
def test_a_negative_seed_is_refused_wherever_seed_is_taken(cli, workdir, name, seed):
    command = cli_main.load_command(name)
    assert any("--seed" in p.opts for p in command.params), f"`agroml {name}` takes no --seed"
    extra = ["--model", "pest"] if name == "train" else []
    result = cli(name, *extra, "--seed", seed)
    assert result.exit_code == 2, result.output
    assert "--seed" in result.output and "Traceback" not in result.output
    assert not (workdir / "data").exists()


def test_every_seed_option_is_non_negative():
    for name in cli_main.COMMANDS:
        for param in cli_main.load_command(name).params:
            if "--seed" in param.opts:
                assert param.min == 0 and param.max is None, f"`agroml {name} --seed` is not any int >= 0"


def test_a_large_seed_is_a_seed(cli, workdir):
    result = cli("demo", "--model", "pest", "--n", "2", "--seed", str(2**70), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["seed"] == 2**70


# --- tables -----------------------------------------------------------------------------------------
LONG_ID = "20260301T101500Z-efficientnetb0-a-rather-long-experiment-name"


@pytest.fixture
def long_run(workdir):
    settings = config.resolve(env_file=None)
    with Registry(settings.models_dir) as registry:
        handle = registry.start("pest", LONG_ID, "efficientnetb0", {"epochs": 3})
        handle.finish("succeeded", metrics={"test": {"accuracy": 0.5, "macro_f1": 0.25}}, path=workdir / "m" / LONG_ID)
    return str(workdir / "m" / LONG_ID)


@pytest.mark.parametrize("columns", [40, 60, 100, 250])
def test_runs_never_cuts_a_run_id_or_path_on_a_terminal(workdir, long_run, columns):
    seen = _on_a_terminal("runs", cwd=workdir, columns=columns)
    assert LONG_ID in seen, seen
    assert "…" not in seen
    if long_run in "".join(seen.split()):  # the path is shown: then whole, on one line
        assert long_run in seen
    else:
        assert "agroml runs --json" in seen  # the hint says where the paths are


def test_runs_piped_keeps_ids_and_paths_whole_whatever_columns_says(workdir, long_run):
    done = _agroml("runs", cwd=workdir, COLUMNS="60")
    assert done.returncode == 0, done.stderr
    assert LONG_ID in done.stdout and long_run in done.stdout and "…" not in done.stdout


# --- TensorFlow's start-up noise ----------------------------------------------------------------------
NOISE_LINES = [
    "2025-01-01 10:00:00.000000: I tensorflow/core/util/port.cc:153] oneDNN custom operations are on.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1700000000.000000   12345 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
    "E0000 00:00:1700000000.000000   12345 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
]


def test_the_stderr_filter_drops_tensorflow_noise_and_keeps_real_errors(workdir):
    code = (
        "import os\n"
        "from agroml.cli.quiet import stderr_filtered\n"
        "with stderr_filtered():\n"
        f"    for line in {NOISE_LINES!r}:\n"
        "        os.write(2, (line + '\\n').encode())\n"
        "    os.write(2, b'E0000 some_op.cc:1] a real error: out of memory\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=_env(), capture_output=True, text=True)
    assert done.stderr == "E0000 some_op.cc:1] a real error: out of memory\nafter\n"


def test_doctor_and_predict_show_no_tensorflow_noise_but_their_errors(workdir):
    doctor = _agroml("doctor", "--offline", cwd=workdir)
    settings = config.resolve(env_file=None)
    write_run(settings.models_dir, "pest", "run1", ["red", "green"], {"train": [], "val": [], "test": []})
    (workdir / "ok.png").write_bytes(color_png("red"))
    predict = _agroml("predict", "ok.png", "nonexist.jpg", cwd=workdir)
    for done in (doctor, predict):
        noise = [line for line in done.stderr.splitlines() if _is_noise(line)]
        assert noise == [], noise
    assert "agroml doctor" in doctor.stdout
    assert predict.returncode == 1
    assert predict.stderr.count("nonexist.jpg") == 1, predict.stderr  # said once
    assert "error: nonexist.jpg: no such file" in predict.stderr
    assert "ok.png: red" in predict.stdout


def _is_noise(line: str) -> bool:
    return any(marker in line for marker in ("oneDNN", "absl::InitializeLog", "cuInit", "cuda drivers", "cudart"))


def test_predict_names_a_missing_file_once(cli, workdir):
    settings = config.resolve(env_file=None)
    write_run(settings.models_dir, "pest", "run1", ["red", "green"], {"train": [], "val": [], "test": []})
    result = cli("predict", "nonexist.jpg")
    assert result.exit_code == 1
    assert result.stderr.count("no such file") == 1 and result.stderr.count("nonexist.jpg") == 1, result.stderr
    data = json.loads(cli("predict", "nonexist.jpg", "--json").stdout)  # the JSON keeps the library's shape
    assert data["predictions"][0]["error"] == "nonexist.jpg: no such file" and data["warnings"]
