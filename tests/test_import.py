"""`agroml import`: a folder-per-class collection becomes confirmed rows; bad files are counted, not fatal."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from agroml.core import config
from agroml.core.errors import UsageError
from agroml.data.importing import import_folder
from agroml.data.store import Store

MTIME = datetime(2025, 3, 14, 9, 30, tzinfo=UTC).timestamp()


def _image(path: Path, fmt: str = "JPEG", color: tuple[int, int, int] = (40, 140, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buf, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    os.utime(path, (MTIME, MTIME))
    return buf.getvalue()


@pytest.fixture
def collection(workdir: Path) -> Path:
    root = workdir / "maize_pests"
    _image(root / "aphids" / "a1.jpg")
    _image(root / "aphids" / "field2" / "a2.png", "PNG", (10, 10, 10))
    _image(root / "Fall Armyworm" / "f1.jpg", color=(90, 60, 30))
    _image(root / "healthy" / "h1.png", "PNG", (30, 160, 40))
    return root


def _settings() -> config.Settings:
    return config.resolve(environ={}, env_file=None)


def test_import_writes_confirmed_rows_with_labels_from_folder_names(collection):
    summary = import_folder(_settings(), collection, "pest")
    assert summary.classes == {"aphids": 2, "fall_armyworm": 1, "healthy": 1}
    assert (summary.upsert.inserted, summary.images, summary.skipped, summary.skipped_files) == (4, 4, {}, [])
    with Store(_settings().db_path) as store:
        rows = store.read("pest").set_index("image_url")
    assert len(rows) == 4
    assert set(rows["source"]) == {"import"}
    assert rows["user_confirmed"].all() and set(rows["feedback"]) == {"confirmed"}
    assert (rows["confidence"] == 1.0).all()
    assert (rows["created_at"] == datetime.fromtimestamp(MTIME, tz=UTC)).all()
    png = collection / "aphids" / "field2" / "a2.png"
    row = rows.loc[png.resolve().as_uri()]
    assert (row["predicted_label"], row["label"]) == ("aphids", "aphids")
    assert row["image_hash"] == hashlib.sha256(png.read_bytes()).hexdigest()
    assert json.loads(row["extra"])["relative_path"] == "maize_pests/aphids/field2/a2.png"
    assert rows.loc[(collection / "Fall Armyworm" / "f1.jpg").resolve().as_uri(), "label"] == "fall_armyworm"


def test_reimport_changes_nothing(collection):
    import_folder(_settings(), collection, "pest")
    again = import_folder(_settings(), collection, "pest")
    assert (again.upsert.inserted, again.upsert.updated, again.upsert.unchanged) == (0, 0, 4)


def test_bad_files_are_skipped_counted_and_listed_while_the_rest_imports(collection):
    good = (collection / "aphids" / "a1.jpg").read_bytes()
    (collection / "aphids" / "broken.jpg").write_bytes(good[: len(good) // 2])
    (collection / "healthy" / "notes.txt").write_text("taken at Molo, March")
    (collection / "README.md").write_text("maize pests")
    (collection / "healthy" / "gone.jpg").symlink_to(collection / "nowhere.jpg")
    summary = import_folder(_settings(), collection, "pest")
    assert summary.upsert.inserted == 4
    assert summary.skipped == {"not_an_image": 1, "not_in_class_folder": 1, "truncated": 1, "unreadable": 1}
    assert sorted(summary.skipped_files) == [
        ("README.md", "not_in_class_folder"),
        ("aphids/broken.jpg", "truncated"),
        ("healthy/gone.jpg", "unreadable"),
        ("healthy/notes.txt", "not_an_image"),
    ]
    assert summary.warnings[0] == (
        "skipped 4 file(s): 1 not_an_image, 1 not_in_class_folder, 1 truncated, 1 unreadable"
    )


def test_storage_classes_must_be_storage_conditions(workdir):
    root = workdir / "bags"
    _image(root / "Good" / "1.jpg")
    _image(root / "rotten" / "2.jpg")
    summary = import_folder(_settings(), root, "storage")
    assert summary.classes == {"good": 1}
    assert summary.skipped == {"unknown_label": 1}
    assert summary.warnings[-1] == "storage classes must be one of excellent, good, fair, poor, critical"


def test_a_folder_without_class_folders_is_a_clear_error(workdir):
    flat = workdir / "flat"
    _image(flat / "1.jpg")
    with pytest.raises(UsageError) as err:
        import_folder(_settings(), flat, "pest")
    assert str(err.value) == (
        f"no class folders in {flat}: the images must sit in one subfolder per class "
        "(arrange them as DIR/<class>/<image>, e.g. DIR/aphids/001.jpg)"
    )
    assert not Path("data/agroml.db").exists()


def test_cli_import_prints_classes_skips_and_next_steps(cli, collection):
    (collection / "healthy" / "notes.txt").write_text("not a photo")
    result = cli("import", str(collection), "--model", "pest")
    assert result.exit_code == 0, result.output
    assert "imported 4 rows from" in result.stdout
    assert "fall_armyworm" in result.stdout
    assert "healthy/notes.txt" in result.stdout and "not_an_image" in result.stdout
    assert "warning: skipped 1 file(s): 1 not_an_image" in result.stderr
    assert "agroml train --model pest" in result.stderr
    report = json.loads(cli("import", str(collection), "--model", "pest", "--json").stdout)
    assert (report["rows"], report["unchanged"], report["skipped"]) == (4, 4, {"not_an_image": 1})
    assert report["skipped_files"] == [{"path": "healthy/notes.txt", "reason": "not_an_image"}]


def test_cli_import_of_a_missing_folder_names_it_and_exits_2(cli):
    result = cli("import", "no/such/folder", "--model", "pest")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: import folder not found: no/such/folder "
        "(give a folder with one subfolder per class, e.g. DIR/aphids/*.jpg)"
    )
    assert result.stdout == ""


# --- hostile collections: links out of DIR, hidden folders, unicode names, huge files, killed runs ----
def test_links_are_followed_only_inside_the_folder_unless_asked(collection, workdir):
    private = workdir / "private"
    _image(private / "secret.jpg", color=(1, 2, 3))
    _image(private / "album" / "s2.jpg", color=(4, 5, 6))
    (collection / "aphids" / "leak.jpg").symlink_to(private / "secret.jpg")  # a file link leaving DIR
    (collection / "aphids" / "album").symlink_to(private / "album")  # a folder link leaving DIR
    (collection / "stolen").symlink_to(private)  # a class folder that is a link out
    (collection / "healthy" / "same.png").symlink_to(collection / "healthy" / "h1.png")  # inside: followed
    (collection / "healthy" / "loop").symlink_to(collection / "healthy")  # back up: walked once
    summary = import_folder(_settings(), collection, "pest")
    assert summary.classes == {"aphids": 2, "fall_armyworm": 1, "healthy": 2}
    assert ("aphids/leak.jpg", "link_outside_folder") in summary.skipped_files
    assert sorted(summary.skipped_folders) == [
        ("aphids/album", "link_outside_folder"),
        ("healthy/loop", "link_loop"),
        ("stolen", "link_outside_folder"),
    ]
    assert any(w.startswith("skipped 3 folder(s): ") for w in summary.warnings)
    with Store(_settings().db_path) as store:
        urls = set(store.read("pest")["image_url"])
    assert not any("private" in u for u in urls)
    followed = import_folder(_settings(), collection, "pest", follow_links=True)
    assert followed.classes == {"aphids": 4, "fall_armyworm": 1, "healthy": 2, "stolen": 2}
    assert followed.skipped_folders == [("healthy/loop", "link_loop")]


def test_hidden_folders_are_skipped_and_reported(collection):
    _image(collection / ".thumbnails" / "t.jpg")
    _image(collection / ".git" / "objects" / "x.jpg")
    _image(collection / "aphids" / ".cache" / "c.jpg")
    summary = import_folder(_settings(), collection, "pest")
    assert summary.classes == {"aphids": 2, "fall_armyworm": 1, "healthy": 1}
    assert sorted(summary.skipped_folders) == [
        (".git", "hidden_folder"),
        (".thumbnails", "hidden_folder"),
        ("aphids/.cache", "hidden_folder"),
    ]
    assert "skipped 3 folder(s): " in " ".join(summary.warnings)


def test_unicode_class_names_keep_their_letters_and_renames_are_reported(workdir):
    root = workdir / "Sammlung"
    for i, name in enumerate(["Blätterläuse", "Bla\u0308tterla\u0308use", "कीट पतंग", "Fall Armyworm", "aphids"]):
        _image(root / name / f"{i}.jpg", color=(i * 40, 100, 50))
    summary = import_folder(_settings(), root, "pest")
    # NFD "Bla\u0308tter..." and NFC "Blätter..." are one class
    assert summary.classes == {"aphids": 1, "blätterläuse": 2, "fall_armyworm": 1, "कीट_पतंग": 1}
    renames = next(w for w in summary.warnings if w.startswith("folder names normalized to labels: "))
    assert "'Blätterläuse' -> 'blätterläuse'" in renames and "'Fall Armyworm' -> 'fall_armyworm'" in renames
    assert "'aphids'" not in renames
    with Store(_settings().db_path) as store:
        assert set(store.read("pest")["label"]) == set(summary.classes)


def test_size_is_checked_before_reading_and_memory_stays_flat(collection, workdir):
    import subprocess
    import sys

    huge = collection / "aphids" / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB named .jpg (sparse: no disk used)
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across execve, so a child of a large pytest
    # process would report its parent's size; VmHWM belongs to the new program's own memory map.
    code = (
        "import re, sys\n"
        "from pathlib import Path\n"
        "from agroml.core import config\n"
        "from agroml.data.importing import import_folder\n"
        "s = import_folder(config.resolve(environ={}, env_file=None), sys.argv[1], 'pest')\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)\n"
        "print(s.skipped, int(hwm) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(collection)], cwd=workdir, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    skipped, peak_mb = out.stdout.rsplit(" ", 1)
    assert skipped == "{'too_large': 1}"
    assert int(peak_mb) < 400, f"peak {peak_mb} MB while importing a 1 GiB file"


def test_a_pipe_named_like_a_photo_is_skipped_not_opened(collection):
    os.mkfifo(collection / "aphids" / "pipe.jpg")
    summary = import_folder(_settings(), collection, "pest")
    assert ("aphids/pipe.jpg", "not_a_regular_file") in summary.skipped_files


def test_import_removes_temporary_files_a_killed_run_left_in_the_cache(collection):
    settings = _settings()
    import_folder(settings, collection, "pest")
    folder = next(p for p in settings.image_dir.iterdir() if p.is_dir())
    stale = [folder / ".abc.jpg.x1y2.tmp", settings.image_dir / ".index.tmp"]
    for path in stale:
        path.write_bytes(b"half an image")
    summary = import_folder(settings, collection, "pest")
    assert not any(p.exists() for p in stale)
    assert "removed 2 temporary file(s) that a killed run left in the image cache" in summary.warnings
