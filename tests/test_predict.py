"""`agroml predict`: labels with probabilities from a saved run, each run with its own label map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_helpers import color_png, write_run

from agroml.core import config
from agroml.lifecycle.predicting import predict


@pytest.fixture
def images(workdir: Path) -> dict[str, Path]:
    files = {}
    for color in ("red", "green", "blue", "yellow"):
        path = workdir / f"{color}.png"
        path.write_bytes(color_png(color, size=24))
        files[color] = path
    return files


@pytest.fixture
def settings(workdir: Path):
    return config.resolve(env_file=None)


def test_predict_files_top_labels(settings, images):
    write_run(settings.models_dir, "pest", "run1", ["red", "green", "blue"], {"train": [], "val": [], "test": []})
    result = predict(settings, "pest", [str(images["green"]), str(images["red"])], top=2)
    assert result.run_id == "run1" and result.failed == 0
    green, red = result.predictions
    assert green.top[0]["label"] == "green" and len(green.top) == 2
    assert red.top[0]["label"] == "red" and red.top[0]["probability"] > 0.9
    assert red.top[0]["probability"] >= red.top[1]["probability"]


def test_predict_cli_json_and_top(cli, settings, images):
    write_run(settings.models_dir, "pest", "run1", ["red", "green", "blue"], {"train": [], "val": [], "test": []})
    result = cli("predict", str(images["blue"]), "--model", "pest", "--run", "run1", "--top", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (only,) = data["predictions"]
    assert only["ok"] and only["image"] == str(images["blue"])
    assert only["top"][0]["label"] == "blue" and len(only["top"]) == 3
    assert sum(t["probability"] for t in only["top"]) == pytest.approx(1.0, abs=1e-5)
    table = cli("predict", str(images["blue"]), "--model", "pest", "--top", "1")
    assert table.exit_code == 0
    assert table.stdout.startswith(f"{images['blue']}: blue ")


def test_unreadable_images_are_reported_and_the_rest_predicted(cli, settings, images, workdir):
    write_run(settings.models_dir, "pest", "run1", ["red", "green", "blue"], {"train": [], "val": [], "test": []})
    broken = workdir / "broken.jpg"
    broken.write_bytes(b"<html>not an image</html>")
    result = cli("predict", str(broken), str(images["red"]), str(workdir / "missing.png"), "--model", "pest", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["failed"] == 2
    bad, good, missing = data["predictions"]
    assert not bad["ok"] and bad["error"] == f"{broken}: not an image"
    assert good["ok"] and good["top"][0]["label"] == "red"
    assert not missing["ok"] and missing["error"] == f"{workdir / 'missing.png'}: no such file"
    assert "2 of 3 image(s) could not be read" in result.stderr


def test_label_map_survives_a_class_added_later(settings, images):
    """An older run keeps answering in its own classes after a newer run learns a fourth class."""
    old = write_run(settings.models_dir, "pest", "old", ["red", "green", "blue"], {"train": [], "val": [], "test": []})
    old_labels = (old / "labels.json").read_text()
    # the newer run's class order differs (alphabetical, with the new class): its outputs mean other things
    write_run(
        settings.models_dir,
        "pest",
        "new",
        ["blue", "green", "red", "yellow"],
        {"train": [], "val": [], "test": []},
        labels_as_dict=True,
    )
    assert (old / "labels.json").read_text() == old_labels
    for run, expected in (("old", {"red", "green", "blue"}), ("new", {"red", "green", "blue", "yellow"})):
        result = predict(settings, "pest", [str(images[c]) for c in ("red", "green", "blue")], ref=run, top=5)
        assert [p.top[0]["label"] for p in result.predictions] == ["red", "green", "blue"]
        assert set(result.classes) == expected
    assert predict(settings, "pest", [str(images["yellow"])], ref="new").predictions[0].top[0]["label"] == "yellow"
    old_answer = predict(settings, "pest", [str(images["yellow"])], ref="old").predictions[0]
    assert old_answer.top[0]["label"] in {"red", "green"}  # never a class the old model does not have
    # the default is the newest succeeded run
    assert predict(settings, "pest", [str(images["red"])]).run_id == "new"


def test_predict_production_after_promotion(cli, settings, images):
    write_run(settings.models_dir, "pest", "run1", ["red", "green", "blue"], {"train": [], "val": [], "test": []})
    assert cli("promote", "run1", "--model", "pest").exit_code == 0
    result = cli("predict", str(images["red"]), "--run", "production", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "run1" and data["model_path"].endswith("pest/production")


def test_urls_go_through_the_cache_and_the_host_allow_list(cli, settings, images, image_host, monkeypatch):
    write_run(settings.models_dir, "pest", "run1", ["red", "green", "blue"], {"train": [], "val": [], "test": []})
    url = image_host.add("/photos/leaf.png", images["green"].read_bytes(), "image/png")
    missing = image_host.url + "/photos/gone.png"
    refused = cli("predict", url, "--json")
    assert refused.exit_code == 1
    assert "not in AGROML_IMAGE_HOSTS" in json.loads(refused.stdout)["predictions"][0]["error"]
    monkeypatch.setenv("AGROML_IMAGE_HOSTS", image_host.url.split("//")[1])
    result = cli("predict", url, missing, "--json")
    assert result.exit_code == 1
    ok, gone = json.loads(result.stdout)["predictions"]
    assert ok["ok"] and ok["top"][0]["label"] == "green"
    assert not gone["ok"] and gone["error"].startswith("could not fetch: ")
    assert list(settings.image_dir.glob("*/*.png"))  # the photo is now in the cache
    again = cli("predict", url, "--json")  # a second ask is answered from the cache
    assert again.exit_code == 0
    assert sum(1 for r in image_host.requests if r.path == "/photos/leaf.png") == 1


def test_bad_top_or_no_model_is_a_clear_error(cli, settings, images):
    write_run(settings.models_dir, "pest", "run1", ["red", "green", "blue"], {"train": [], "val": [], "test": []})
    bad_top = cli("predict", str(images["red"]), "--top", "0")
    assert bad_top.exit_code == 2 and "error: --top 0 must be at least 1" in bad_top.stderr
    no_model = cli("predict", str(images["red"]), "--model", "disease")
    assert no_model.exit_code == 1
    assert "no succeeded disease run to use" in no_model.stderr
