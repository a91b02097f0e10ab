"""Every image format the importer accepts trains and predicts: import -> train -> predict, end to end.

Why a whole run: the pipeline decodes inside tf.data's iterator, where one file it cannot read ends
the run as failed (an RGB WebP did, when the decoder asked for four channels). One tiny training over
every format and pixel mode (tests/image_formats.py) proves the importer, the training decode and
predict agree on what is an image.
"""

from __future__ import annotations

import json
from pathlib import Path

import image_formats
import pytest


@pytest.mark.slow
@pytest.mark.e2e
def test_every_accepted_format_imports_trains_and_predicts(cli, workdir, monkeypatch):
    monkeypatch.setenv("AGROML_MIN_TOTAL", "10")
    folder = workdir / "photos"
    files = []
    for label, colours in (("red_leaf", ((200, 40, 30), (160, 30, 20))), ("blue_leaf", ((30, 60, 200), (20, 90, 160)))):
        for name, data, _ in image_formats.cases(*colours):
            path = folder / label / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            files.append(path)
    imported = cli("import", folder, "--model", "pest", "--json")
    assert imported.exit_code == 0, imported.output
    summary = json.loads(imported.stdout)
    assert summary["skipped"] == {} and summary["rows"] == len(files)

    trained = cli(
        "train", "--model", "pest", "--weights", "none", "--image-size", "32", "--epochs", "1",
        "--min-per-class", "2", "--json",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    config = json.loads((Path(json.loads(trained.stdout)["path"]) / "config.json").read_text())
    assert config["skipped"] == {}  # no image left out as unsupported or corrupt
    assert sum(sum(config["counts"][split].values()) for split in ("train", "val", "test")) == len(files)

    predicted = cli("predict", *files, "--model", "pest", "--json")
    assert predicted.exit_code == 0, predicted.output
    answers = json.loads(predicted.stdout)["predictions"]
    assert [a["image"] for a in answers] == [str(f) for f in files]
    assert all(a["ok"] and a["top"][0]["label"] in ("red_leaf", "blue_leaf") for a in answers), answers
