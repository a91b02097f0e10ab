"""Training data: minimums, splits, corrupt images, the tf.data pipeline, and usage errors of `agroml train`.

These run no training (fast); tests/test_train_models.py trains real models.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from shape_photos import add_shapes, corrupt

from agroml.core import config
from agroml.core.errors import NotEnoughDataError, TrainingError, UsageError
from agroml.images.pixels import CORRUPT
from agroml.training.data import Example, load_training_data, make_dataset, split_examples


@pytest.fixture
def settings(workdir):
    return config.resolve({"min_total": 20, "min_per_class": 5}, env_file=None)


def test_too_little_data_exits_1_naming_short_classes_and_minimum(cli, settings):
    add_shapes(settings, {"circle": 6, "square": 2, "triangle": 3})
    result = cli("train", "--model", "pest", "--weights", "none", "--min-per-class", "5")
    assert result.exit_code == 1
    assert (
        "only 6 trainable pest images with a cached, readable image (minimum 100, AGROML_MIN_TOTAL); "
        "classes under the minimum of 5: square (2), triangle (3)"
    ) in result.stderr
    assert not (settings.models_dir / "pest").exists()


def test_strict_fails_on_a_small_class_instead_of_leaving_it_out(settings):
    add_shapes(settings, {"circle": 12, "square": 12, "triangle": 4})
    with pytest.raises(NotEnoughDataError, match=r"classes under the minimum of 5 images: triangle \(4\)"):
        load_training_data(settings, "pest", strict=True)
    data = load_training_data(settings, "pest")
    assert data.classes == ["circle", "square"]
    assert data.dropped_classes == {"triangle": 4}
    assert data.warnings == ["left out 1 pest class(es) under the minimum of 5 images: triangle (4)"]


def test_a_class_with_one_image(settings):
    add_shapes(settings, {"circle": 12, "square": 12, "triangle": 1})
    data = load_training_data(settings, "pest")
    assert data.classes == ["circle", "square"] and data.dropped_classes == {"triangle": 1}
    # allowed explicitly, the single image trains and cannot be in val or test
    data = load_training_data(settings, "pest", min_per_class=1)
    assert data.classes == ["circle", "square", "triangle"]
    counts = data.counts()
    assert (counts["train"]["triangle"], counts["val"]["triangle"], counts["test"]["triangle"]) == (1, 0, 0)
    assert data.class_weights()[2] > data.class_weights()[0]  # the rare class weighs more


def test_all_images_corrupt_fails_and_counts_them(cli, settings):
    ids = add_shapes(settings, {"circle": 12, "square": 12})
    corrupt(settings, ids)
    with pytest.raises(NotEnoughDataError, match=r"only 0 trainable pest images .*skipped: 24 corrupt image"):
        load_training_data(settings, "pest")
    result = cli("train", "--model", "pest", "--weights", "none")
    assert result.exit_code == 1
    assert "skipped: 24 corrupt image" in result.stderr


def test_some_corrupt_images_are_skipped_and_counted(settings):
    ids = add_shapes(settings, {"circle": 12, "square": 12})
    corrupt(settings, ids[:3])
    data = load_training_data(settings, "pest")
    assert data.skipped == {CORRUPT: 3}
    assert sum(len(v) for v in data.splits.values()) == 21
    assert "skipped 3 pest row(s): corrupt image" in data.warnings


def test_unknown_backbone_lists_valid_ones(cli, settings):
    result = cli("train", "--model", "pest", "--arch", "vgg16")
    assert result.exit_code == 2
    assert (
        "unknown backbone 'vgg16': valid backbones are mobilenetv2, resnet50, efficientnetb0 "
        "(use --arch mobilenetv2|resnet50|efficientnetb0)"
    ) in result.stderr


def test_bad_weights_value_is_a_usage_error(cli, settings):
    result = cli("train", "--model", "pest", "--weights", "no/such/file.h5")
    assert result.exit_code == 2
    assert "--weights 'no/such/file.h5' is neither imagenet, none nor an existing weights file" in result.stderr


def test_imagenet_offline_names_the_alternatives(tmp_path, monkeypatch):
    from agroml.training.backbones import build_base, get_backbone

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # nothing cached: a download is needed
    try:
        build_base(get_backbone("mobilenetv2"), 96, "imagenet", 0.35)
    except TrainingError as exc:
        assert "cannot download the ImageNet weights for mobilenetv2" in str(exc)
        assert "--weights PATH" in str(exc) and "--weights none" in str(exc)
    else:
        pytest.skip("this machine can download the ImageNet weights")


def _examples(spec: list[tuple[str, str]]) -> list[Example]:
    from pathlib import Path

    return [Example(f"r{i:03d}", label, digest, Path(f"/x/{digest}.png")) for i, (label, digest) in enumerate(spec)]


def test_split_is_stratified_seeded_and_keeps_identical_images_together():
    spec = [("a", f"a{i}") for i in range(40)] + [("b", f"b{i}") for i in range(20)]
    spec += [("a", "dup")] * 5  # the same photo uploaded five times
    examples = _examples(spec)
    first = split_examples(examples, seed=1)
    assert split_examples(list(reversed(examples)), seed=1) == first  # order of rows does not matter
    assert split_examples(examples, seed=2) != first
    sizes = {s: len(v) for s, v in first.items()}
    assert sum(sizes.values()) == len(examples)
    for split in ("val", "test"):
        labels = [e.label for e in first[split]]
        assert labels.count("b") == 3  # 15% of 20
    homes = {s for s, v in first.items() for e in v if e.image_hash == "dup"}
    assert len(homes) == 1


def test_dataset_decodes_resizes_to_uint8_in_order(settings):
    add_shapes(settings, {"circle": 10, "square": 10}, size=40)
    data = load_training_data(settings, "pest")
    paths, labels = data.arrays("train")
    ds = make_dataset(paths, labels, 24, batch_size=4)
    images, ys = next(iter(ds))
    assert images.dtype.name == "uint8" and tuple(images.shape) == (4, 24, 24, 3)
    assert list(ys.numpy()) == list(labels[:4])
    unlabelled = np.concatenate([b.numpy() for b in make_dataset(paths, None, 24, batch_size=4)])
    assert np.array_equal(unlabelled[:4], images.numpy())


def test_fingerprint_changes_with_a_label_and_not_with_row_order(settings):
    add_shapes(settings, {"circle": 10, "square": 10})
    one = load_training_data(settings, "pest", seed=0)
    again = load_training_data(settings, "pest", seed=3)
    assert one.fingerprint() == again.fingerprint()
    assert json.dumps(one.split_ids()) != json.dumps(again.split_ids())
    add_shapes(settings, {"triangle": 6}, start=100)
    assert load_training_data(settings, "pest").fingerprint() != one.fingerprint()


def test_split_fractions_must_sum_to_one():
    with pytest.raises(UsageError):
        split_examples([], fractions=(0.5, 0.2, 0.2))
