"""SIGKILL of the real `python -m agroml ...` process at a random moment, then a rerun: nothing lost, nothing half.

For each command a clean run in a folder of its own gives the reference (its row counts) and its wall
time T; then the same command, in a second folder, is killed at a moment drawn from a seeded generator
in [0.15 T, T] (it may also finish first: counted, still checked), run again to the end, and the folder
must pass tests/reliability/consistency.py: store rows equal to the clean run's, image cache and index
consistent, no run left "running", no .partial, a production model that loads and predicts, exports
whole or absent.

Default run: one kill per command (seeds from BASE_SEED); ``--soak``: five each, from a fresh base seed;
``AGROML_FAULT_SEED=<seed>`` replays one. The heavy ones (TensorFlow: train, promote, rollback, publish,
the API's background training) are marked e2e. ``AGROML_FAULT_LOG=<file>`` gets one JSON line per kill.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from consistency import check_all, check_exports_file, store_counts
from faultmix import kill_seeds, record

BASE_SEED = 16_2026
#: Each light test starts 3-4 Python processes (seconds each on idle cores); on a machine shared by many
#: they can take minutes, and a slow machine is not what these tests are about.
pytestmark = pytest.mark.timeout(900)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kill_seed" not in metafunc.fixturenames:
        return
    chosen = kill_seeds(metafunc.config, BASE_SEED)
    metafunc.parametrize("kill_seed", chosen, ids=[f"seed{s}" for s in chosen])


def _agroml(folder: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agroml", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _finish(folder: Path, env: dict[str, str], *args: str, timeout: float = 900) -> float:
    """Run to the end (must exit 0); returns its wall time."""
    started = time.monotonic()
    proc = _agroml(folder, env, *args)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave a child running past its test
        proc.communicate()
        raise AssertionError(f"agroml {' '.join(args)} did not finish in {timeout} s") from None
    assert proc.returncode == 0, f"agroml {' '.join(args)} failed: {err.decode()[-2000:]}"
    return time.monotonic() - started


def kill_then_rerun(
    folder: Path,
    env: dict[str, str],
    args: tuple[str, ...],
    seed: int,
    clean_s: float,
    rerun: tuple[str, ...] | None = None,
    **entry: Any,
) -> dict[str, Any]:
    """Kill `agroml ARGS` at a seeded moment of [0.15, 1] x clean_s, then run ``rerun`` (default: ARGS
    again) to the end."""
    at = random.Random(seed).uniform(0.15, 1.0) * clean_s
    print(f"seed {seed}: kill `agroml {' '.join(args)}` at {at:.2f} s of {clean_s:.2f} s; AGROML_FAULT_SEED={seed}")
    proc = _agroml(folder, env, *args)
    try:
        proc.wait(timeout=at)
        killed = False  # it finished first: the rerun and the checks still apply
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = True
    finally:
        if proc.stderr:
            proc.stderr.close()
    assert not killed or proc.returncode == -signal.SIGKILL
    rerun_s = _finish(folder, env, *(rerun or args))
    out = {"test": "kill", "command": args[0], "seed": seed, "at_s": round(at, 2), "killed": killed}
    out.update(clean_s=round(clean_s, 2), rerun_s=round(rerun_s, 2), **entry)
    return out


@pytest.fixture
def base_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGROML_", "SUPABASE_"))}
    env.update(AGROML_HASH_SALT="pepper", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _folders(workdir: Path) -> tuple[Path, Path]:
    clean, killed = workdir / "clean", workdir / "killed"
    clean.mkdir()
    killed.mkdir()
    return clean, killed


def _checked(killed: Path, clean: Path, entry: dict[str, Any], production: tuple[str, ...] = ()) -> None:
    want = store_counts(clean / "data" / "agroml.db") if (clean / "data" / "agroml.db").exists() else None
    summary = check_all(killed, want, production)
    entry.update(consistent=True, **{k: v for k, v in summary.items() if k != "runs"})
    record(entry)


# --- the light commands: no TensorFlow --------------------------------------------------------------------
def test_kill_demo(workdir, base_env, kill_seed):
    clean, killed = _folders(workdir)
    args = ("demo", "--n", "40", "--seed", "3")
    clean_s = _finish(clean, base_env, *args)
    entry = kill_then_rerun(killed, base_env, args, kill_seed, clean_s)
    _checked(killed, clean, entry)


def _class_folder(root: Path, n_per_class: int = 20) -> Path:
    from model_helpers import color_png

    for name in ("red", "green", "blue", "yellow", "cyan"):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            (root / name / f"{i:03d}.png").write_bytes(color_png(name, size=48, seed=i))
    return root


def test_kill_import(workdir, base_env, kill_seed):
    clean, killed = _folders(workdir)
    photos = _class_folder(workdir / "photos")
    args = ("import", str(photos), "--model", "pest")
    clean_s = _finish(clean, base_env, *args)
    entry = kill_then_rerun(killed, base_env, args, kill_seed, clean_s)
    _checked(killed, clean, entry)


def test_kill_export(workdir, base_env, kill_seed):
    clean, killed = _folders(workdir)
    for folder in (clean, killed):
        _finish(folder, base_env, "demo", "--n", "30", "--seed", "1")
    args = ("export", "--scope", "all", "--format", "csv", "--source", "local")
    clean_s = _finish(clean, base_env, *args)
    entry = kill_then_rerun(killed, base_env, args, kill_seed, clean_s)
    _checked(killed, clean, entry)
    # the rerun wrote one whole file per model type; a file the killed run finished is whole too
    want = {_model_of(p): check_exports_file(p) for p in (clean / "exports").iterdir()}
    got = [(_model_of(p), check_exports_file(p)) for p in (killed / "exports").iterdir()]
    assert {m for m, _ in got} == set(want) and all(n == want[m] for m, n in got), (got, want)


def _model_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


def test_kill_pull(workdir, base_env, kill_seed):
    from supa_rows import add_empty_tables, add_pest_table, jpeg, pest_rows
    from supaserver import Faults, start_server

    server = start_server()
    try:
        add_empty_tables(server)
        rows = pest_rows(
            240,
            seed=kill_seed % 1000,
            image_url=lambda i, rid: server.add_object("predictions", f"pest_images/pest_{rid}.jpg", jpeg(i)),
        )
        add_pest_table(server, rows)
        server.faults = Faults(delay_s=0.01)  # each request a little slow, so the kill lands mid-pull
        env = {**base_env, "SUPABASE_URL": server.url, "SUPABASE_SERVICE_KEY": server.service_key}
        env.update(AGROML_PAGE_SIZE="20", AGROML_IMAGE_CONCURRENCY="2", AGROML_RETRY_BASE_SECONDS="0.01")
        clean, killed = _folders(workdir)
        clean_s = _finish(clean, env, "pull")
        entry = kill_then_rerun(killed, env, ("pull",), kill_seed, clean_s)
        _checked(killed, clean, entry)
        assert store_counts(killed / "data" / "agroml.db") == {("supabase", "pest"): 240}
    finally:
        server.stop()


# --- the model's life: TensorFlow in every process (minutes on 2 cores: e2e) ------------------------------
TRAIN = ("train", "--model", "pest", "--weights", "none", "--image-size", "32", "--epochs", "1", "--seed", "0")


def _newest_run(models: Path) -> str:
    from agroml.lifecycle.registry import Registry

    with Registry(models) as registry:
        return next(r.run_id for r in registry.runs("pest") if r.state == "succeeded")


def _published_whole(server: Any) -> bool:
    """The bucket's production.json names files that are all there with their sha256 and size."""
    import hashlib
    import json

    manifest = json.loads(server.objects[("models", "pest/production.json")].data)
    for entry in manifest["files"].values():
        obj = server.objects.get(("models", entry["path"]))
        if obj is None or hashlib.sha256(obj.data).hexdigest() != entry["sha256"] or len(obj.data) != entry["size"]:
            return False
    return True


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_kill_train_promote_rollback_publish(workdir, base_env, kill_seed):
    """Each step killed once at a seeded moment, then run again: a whole model serves and is published whole."""
    from supaserver import start_server

    from agroml.lifecycle.locating import folder_run_id

    server = start_server()
    try:
        server.add_bucket("models", public=False)
        env = {**base_env, "SUPABASE_URL": server.url, "SUPABASE_SERVICE_KEY": server.service_key}
        env.update(AGROML_RETRY_BASE_SECONDS="0.01", AGROML_SOURCE="local")
        env.update(AGROML_MIN_TOTAL="10", AGROML_MIN_PER_CLASS="2")  # the demo's 40 pest rows: ~20 trainable
        folder, models = workdir, workdir / "models"
        _finish(folder, env, "demo", "--model", "pest", "--n", "40", "--seed", "0")
        rng = random.Random(kill_seed)
        entries = []

        train_s = _finish(folder, env, *TRAIN)  # run a: the clean timing, and a model to promote
        first = _newest_run(models)
        entries.append(kill_then_rerun(folder, env, TRAIN, rng.randrange(2**31), train_s))
        second = _newest_run(models)
        assert second != first

        promote_s = _finish(folder, env, "promote", first, "--model", "pest", "--force")
        args = ("promote", second, "--model", "pest", "--force")
        entries.append(kill_then_rerun(folder, env, args, rng.randrange(2**31), promote_s))
        # a rollback is not idempotent (a second one goes one model further back), so after its kill the
        # next command is `history`, which finishes or undoes the journaled step; then roll back if needed
        rollback = ("rollback", "--model", "pest")
        history = ("history", "--model", "pest")
        entries.append(kill_then_rerun(folder, env, rollback, rng.randrange(2**31), promote_s, rerun=history))
        if folder_run_id(models / "pest" / "production") == second:
            _finish(folder, env, *rollback)
        assert folder_run_id(models / "pest" / "production") == first
        publish_s = _finish(folder, env, "publish", "--model", "pest")
        entries.append(kill_then_rerun(folder, env, ("publish", "--model", "pest"), rng.randrange(2**31), publish_s))

        summary = check_all(folder, None, production=("pest",))
        assert summary["production"] == ["pest"]
        assert _published_whole(server)
        for entry in entries:
            entry.update(consistent=True)
            record(entry)
    finally:
        server.stop()
