"""File modes: what a serving account must read follows the umask; the store (farmer ids, the hash salt) is 0600.

One tiny real training (the cheapest `agroml train` there is), then two promotions (production/ and
archive/) and a --plot chart, all under umask 027; the demo store and its cached images are made under it
too. Why 027 alone: it tells every wrong answer apart. Files must come out 0640: mkstemp's 0600 fails it,
and so does a hard-coded 0644 (or 0666 & ~022); folders 0750.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

TRAIN = ("train", "--model", "pest", "--weights", "none", "--image-size", "32", "--epochs", "2", "--min-per-class", "2")
RUN_FILES = (
    "model.keras",
    "labels.json",
    "config.json",
    "metrics.json",
    "split.json",
    "history.csv",
    "curves.png",
    "confusion_matrix.png",
    "MODEL_CARD.md",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """The process umask while the test's data is made (listed first, so it is set before demo_data runs)."""
    saved = os.umask(0o027)
    yield 0o027
    os.umask(saved)


@pytest.mark.slow
@pytest.mark.e2e
def test_run_folders_production_plots_and_images_follow_the_umask_and_the_store_is_0600(
    umask, demo_data, cli, workdir, monkeypatch
):
    monkeypatch.setenv("AGROML_MIN_TOTAL", "10")
    trained = cli(*TRAIN, "--json")
    assert trained.exit_code == 0, trained.output
    run = Path(json.loads(trained.stdout)["path"])
    assert cli("promote", run.name, "--model", "pest").exit_code == 0
    twin = run.with_name(run.name + "-twin")  # the same model under another run id: promoting it archives the first
    shutil.copytree(run, twin)
    config = json.loads((twin / "config.json").read_text())
    (twin / "config.json").write_text(json.dumps({**config, "run_id": twin.name}))
    assert cli("promote", str(twin), "--model", "pest", "--force").exit_code == 0
    chart = cli("distribution", "--model", "pest", "--by", "season", "--plot", "charts/seasons.png")
    assert chart.exit_code == 0, chart.output

    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    pest = workdir / "models" / "pest"
    folders = [run, pest / "production", pest / "archive", pest / "archive" / run.name, workdir / "charts"]
    assert {f.name: oct(mode(f)) for f in folders} == {f.name: oct(dir_mode) for f in folders}
    files = [run / name for name in RUN_FILES]
    files += [pest / "production" / name for name in (*RUN_FILES, "PROMOTED.json")]
    files += [pest / "archive" / run.name / "PROMOTED.json", workdir / "charts" / "seasons.png"]
    images = sorted((workdir / "data" / "images").glob("??/*.*"))
    assert images
    files += images[:5]
    wrong = {str(f): oct(mode(f)) for f in files if mode(f) != file_mode}
    assert wrong == {}, f"expected {oct(file_mode)}"

    store = workdir / "data" / "agroml.db"
    assert mode(store) == 0o600
    assert not [p.name for p in store.parent.glob("agroml.db-*") if mode(p) != 0o600]
