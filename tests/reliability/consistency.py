"""One consistency check for everything agroml keeps on disk, used after every kill in test_kills.py.

After a SIGKILL and the rerun (or the next command), a working folder must hold:

- a store that SQLite finds whole, with the row counts of a clean run (per source and model type);
- an image cache where every file's name is the SHA-256 of its bytes, no temporary file is left, every
  hash the index or the store names has its file, and every file is named by one of them;
- a registry with no run left "running" whose process is gone (a status read marks it interrupted);
- run folders without a ``.partial`` folder or file anywhere under models/;
- a production model, where there is one, that loads and predicts (checked in a child process, so the
  test process never pays for TensorFlow);
- export files that are whole (they parse to the end) or absent, and no temporary export file.

Each check returns nothing and raises AssertionError naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path


def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def store_counts(db: Path) -> dict[tuple[str, str], int]:
    """Rows per (source, model type); the store must pass SQLite's integrity check."""
    con = _ro(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{db}: integrity check failed"
        rows = con.execute("SELECT source, model_type, count(*) FROM predictions GROUP BY 1, 2").fetchall()
        return {(s, m): n for s, m, n in rows}
    finally:
        con.close()


def check_store(db: Path, want: dict[tuple[str, str], int]) -> None:
    got = store_counts(db)
    assert got == want, f"store rows per (source, model): {got} != clean run's {want}"


def check_image_cache(image_dir: Path, db: Path | None = None) -> int:
    """Every cached file is named by its hash and referenced; every reference has its file. Returns the file count."""
    if not image_dir.exists():
        return 0
    leftovers = [
        p
        for p in image_dir.rglob("*")
        if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith(".")) and not p.name.endswith(".lock")
    ]  # a lock file stays by design (filelock); a temporary download does not
    assert not leftovers, f"temporary files left in the cache: {leftovers[:5]}"
    files: dict[str, Path] = {}
    for path in image_dir.glob("??/*"):
        if not path.is_file():
            continue
        sha = path.name.split(".", 1)[0]
        assert path.parent.name == sha[:2], f"{path}: not in its hash's folder"
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        assert actual == sha, f"{path}: its bytes hash to {actual}, not its name"
        files[sha] = path
    named: set[str] = set()
    index = image_dir / "index.db"
    if index.exists():
        con = _ro(index)
        try:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{index}: integrity check failed"
            for url, sha, ext in con.execute("SELECT url, sha256, ext FROM urls"):
                assert sha in files, f"index names {url} -> {sha}.{ext}, which is not in the cache"
                named.add(sha)
        finally:
            con.close()
    if db is not None and db.exists():
        con = _ro(db)
        try:
            for (sha,) in con.execute("SELECT DISTINCT image_hash FROM predictions WHERE image_hash IS NOT NULL"):
                assert sha in files, f"the store names image {sha}, which is not in the cache"
                named.add(sha)
        finally:
            con.close()
    orphans = sorted(set(files) - named)
    assert not orphans, f"{len(orphans)} cached files nothing names (e.g. {files[orphans[0]]})"
    return len(files)


def check_registry(models_dir: Path) -> Counter[str]:
    """No run left "running" once a status read has looked (a dead owner's run becomes interrupted)."""
    db = models_dir / "registry.db"
    if not db.exists():
        return Counter()
    from agroml.lifecycle.registry import Registry

    with Registry(models_dir) as registry:
        registry.status()  # what `agroml status` does: marks the runs whose process is gone
    con = _ro(db)
    try:
        states = Counter(state for (state,) in con.execute("SELECT state FROM runs"))
    finally:
        con.close()
    assert states["running"] == 0, f"runs left running after a status read: {dict(states)}"
    return states


def check_run_folders(models_dir: Path) -> None:
    if not models_dir.exists():
        return
    partial = [p for p in models_dir.rglob("*") if ".partial" in p.name]
    assert not partial, f".partial left under models/: {partial[:5]}"


_PREDICT = """
import sys, json
import numpy as np, keras
from pathlib import Path
folder = Path(sys.argv[1])
labels = json.loads((folder / "labels.json").read_text())
model = keras.saving.load_model(folder / "model.keras", compile=False)
size = int(model.inputs[0].shape[1] or 32)
out = model.predict(np.zeros((1, size, size, 3), dtype="uint8"), verbose=0)
n = len(labels["classes"]) if isinstance(labels, dict) and "classes" in labels else len(labels)
assert out.shape == (1, n), (out.shape, n)
print("ok")
"""


def check_production(models_dir: Path, model_type: str) -> bool:
    """The production model, if there is one, loads and predicts one image. Returns whether there was one."""
    folder = models_dir / model_type / "production"
    if not folder.exists():
        return False
    proc = subprocess.run([sys.executable, "-c", _PREDICT, str(folder)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
    return True


def check_exports(exports_dir: Path) -> int:
    """Every export file parses to its end; no temporary file. Returns how many rows the files hold."""
    if not exports_dir.exists():
        return 0
    return sum(check_exports_file(path) for path in exports_dir.iterdir())


def check_exports_file(path: Path) -> int:
    """Rows in one export file, read to its end (a cut file fails to parse); no temporary name."""
    assert not path.name.endswith(".tmp"), f"temporary export left: {path}"
    if path.suffix == ".json":
        return sum(1 for line in path.read_text().splitlines() if json.loads(line) is not None)
    if path.suffix == ".csv":
        import csv

        with path.open(newline="") as fh:
            return max(0, sum(1 for _ in csv.reader(fh, strict=True)) - 1)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.read_table(path).num_rows)
    raise AssertionError(f"not an export file: {path}")


def check_all(
    workdir: Path, store_want: dict[tuple[str, str], int] | None = None, production: tuple[str, ...] = ()
) -> dict[str, object]:
    """Every check on a working folder with the default layout (data/, models/, exports/); a summary."""
    data, models = workdir / "data", workdir / "models"
    if store_want is not None:
        check_store(data / "agroml.db", store_want)
    images = check_image_cache(data / "images", data / "agroml.db")
    states = check_registry(models)
    check_run_folders(models)
    loaded = [m for m in production if check_production(models, m)]
    return {
        "images": images,
        "runs": dict(states),
        "production": loaded,
        "export_rows": check_exports(workdir / "exports"),
    }
