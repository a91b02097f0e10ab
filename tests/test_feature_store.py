"""The feature store: a retrain computes the base's features only for images it has not seen.

What must hold: stored features are the ones a fresh pass computes; another weights file or image size
never reuses them; a damaged entry (or file) is computed again, never used; the store stays under its
size, dropping the least recently used first; two processes can fill it at once and a kill leaves only
whole entries; and a training that reads every feature from the store learns exactly what a training
without the store learns.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from shape_photos import add_shapes

from agroml.core import config
from agroml.training import feature_store
from agroml.training.config import TrainConfig
from agroml.training.feature_store import CLEAN_VIEW, FeatureStore, store_path
from agroml.training.features import extract_features, train_and_val_features
from agroml.training.run import train

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
COUNTS = {"circle": 8, "square": 8, "triangle": 8}


def _settings(root: Path, **overrides):
    return config.resolve(
        {"data_dir": root / "data", "models_dir": root / "models", "min_total": 12, "min_per_class": 4, **overrides},
        environ={},
        env_file=None,
    )


def make_weights(path: Path, seed: int, size: int = SIZE) -> Path:
    """A MobileNetV2 0.35 base weights file (random, seeded): ImageNet weights cannot be downloaded here."""
    import keras

    from agroml.training.backbones import build_base, get_backbone

    keras.utils.set_random_seed(seed)
    build_base(get_backbone("mobilenetv2"), size, "none", 0.35).save_weights(path)
    return path


def extractor_for(weights: Path, size: int = SIZE):
    from agroml.training.backbones import build_base, get_backbone
    from agroml.training.model import build_feature_extractor

    backbone = get_backbone("mobilenetv2")
    return build_feature_extractor(backbone, build_base(backbone, size, str(weights), 0.35), size)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """16 cached shape photos (files named by their sha256), two weights files, one extractor and its
    features of the 16 photos (one pass: the store tests below compute by looking these up)."""
    root = tmp_path_factory.mktemp("fs")
    settings = _settings(root)
    add_shapes(settings, {"circle": 8, "square": 8}, size=SIZE)
    paths = sorted(str(p) for p in settings.image_dir.glob("*/*.png"))
    w1, w2 = make_weights(root / "a.weights.h5", 1), make_weights(root / "b.weights.h5", 2)
    extractor = extractor_for(w1)
    fresh = extract_features(extractor, paths, SIZE, 8)
    return root, paths, (w1, w2), extractor, fresh


class Counting:
    """A base pass stand-in that records which paths it was asked for (the features: the fixture's)."""

    def __init__(self, paths: list[str], fresh: np.ndarray) -> None:
        self.index, self.fresh, self.calls = {p: i for i, p in enumerate(paths)}, fresh, []

    def __call__(self, paths: list[str]) -> np.ndarray:
        self.calls.append(list(paths))
        return self.fresh[[self.index[p] for p in paths]]


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    """Equal within float rounding, relative to the features' scale (a random base's can be ~1e-12)."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def _store(root: Path, name: str, extractor, size: int = SIZE, budget_mb: float = 100) -> FeatureStore:
    store = FeatureStore(root / name / "features.db", budget_mb)
    store.bind(extractor, size)
    return store


def test_stored_features_read_back_bit_for_bit_and_only_misses_are_computed(images):
    root, paths, _, extractor, fresh = images
    dim = fresh.shape[1]
    compute = Counting(paths, fresh)
    with _store(root, "equal", extractor) as store:
        first = store.features(CLEAN_VIEW, paths[:10], dim, compute)
        assert compute.calls == [paths[:10]] and (store.counts.hits, store.counts.computed) == (0, 10)
        both = store.features(CLEAN_VIEW, paths, dim, compute)
        assert compute.calls[1] == paths[10:]  # only the 6 new images went through the base
        assert (store.counts.hits, store.counts.computed) == (10, 16)
        np.testing.assert_array_equal(both[:10], first)
    np.testing.assert_array_equal(both, fresh)

    # another process later (a new connection): every image is read, none computed, bit for bit
    with _store(root, "equal", extractor) as again:
        read = again.features(CLEAN_VIEW, paths[::-1], dim, compute)
        assert len(compute.calls) == 2 and (again.counts.hits, again.counts.computed) == (16, 0)
        np.testing.assert_array_equal(read, fresh[::-1])
        # each view is its own key: the augmented view of the same images is not there yet
        again.features(feature_store.augmented_view(1, 100, {"flip": "h"}), paths[:3], dim, compute)
        assert compute.calls[-1] == paths[:3] and again.counts.computed == 3


def test_other_weights_or_image_size_miss_the_same_weights_hit(images):
    root, paths, (w1, w2), extractor, fresh = images
    dim = fresh.shape[1]
    with _store(root, "keys", extractor) as store:
        store.features(CLEAN_VIEW, paths, dim, Counting(paths, fresh))
        same = store.model
    other = extractor_for(w2)
    for name, extractor_, size in (("other weights file", other, SIZE), ("other image size", extractor, 40)):
        compute = Counting(paths, fresh)
        with _store(root, "keys", extractor_, size) as store:
            assert store.model != same, name
            store.features(CLEAN_VIEW, paths, dim, compute)
            assert compute.calls == [paths] and store.counts.hits == 0, name
    # the same weights file loaded into a newly built base: the same fingerprint, every image a hit
    rebuilt = extractor_for(w1)
    with _store(root, "keys", rebuilt) as store:
        assert store.model == same
        store.features(CLEAN_VIEW, paths, dim, Counting(paths, fresh))
        assert (store.counts.hits, store.counts.computed) == (16, 0)


def test_the_weights_fingerprint_is_taken_once_per_version_of_the_weights_file(images, tmp_path, monkeypatch):
    """bind hashes the weights once per weights file (path, size, time, inode) and reads it back after;
    a rewritten file is hashed again, so features of the old weights are never read for the new ones."""
    root, paths, (w1, w2), extractor, fresh = images
    path = tmp_path / "base.weights.h5"
    path.write_bytes(w1.read_bytes())
    with _store(root, "cache", extractor) as store:
        hashed = store.model  # no file given: the weights are hashed
        store.bind(extractor, SIZE, str(path))
        assert store.model == hashed
        assert store.con.execute("SELECT COUNT(*) FROM fingerprints").fetchone()[0] == 1
        store.features(CLEAN_VIEW, paths, fresh.shape[1], Counting(paths, fresh))
    with _store(root, "cache", extractor) as store:  # another run: the fingerprint is read, not computed
        calls = []
        real = feature_store.weights_fingerprint
        monkeypatch.setattr(feature_store, "weights_fingerprint", lambda model: calls.append(model) or real(model))
        store.bind(extractor, SIZE, str(path))
        assert calls == [] and store.model == hashed
        monkeypatch.undo()
    # the file rewritten with other weights: hashed again, another key, nothing reused
    time.sleep(0.01)
    path.write_bytes(w2.read_bytes())
    other = extractor_for(path)
    compute = Counting(paths, fresh)
    with _store(root, "cache", other) as store:
        unbound = store.model
        store.bind(other, SIZE, str(path))
        assert store.model == unbound != hashed
        store.features(CLEAN_VIEW, paths, fresh.shape[1], compute)
        assert compute.calls == [paths] and store.counts.hits == 0
        assert store.con.execute("SELECT COUNT(*) FROM fingerprints").fetchone()[0] == 2
    # ImageNet or scratch weights, or a file that is gone: hashed every time, nothing cached
    for weights in ("imagenet", "none", str(tmp_path / "gone.weights.h5"), None):
        assert feature_store.fingerprint_source(extractor, weights) is None


def _set(db: Path, image: str, **values) -> None:
    with sqlite3.connect(db) as con:
        sets = ", ".join(f"{k} = ?" for k in values)
        assert con.execute(f"UPDATE features SET {sets} WHERE image = ?", (*values.values(), image)).rowcount == 1


def test_damaged_entries_are_computed_again_never_used(images):
    root, paths, _, extractor, fresh = images
    dim = fresh.shape[1]
    db = root / "damaged" / "features.db"
    with _store(root, "damaged", extractor) as store:
        store.features(CLEAN_VIEW, paths, dim, Counting(paths, fresh))
    keys = [Path(p).stem for p in paths]
    with sqlite3.connect(db) as con:
        data = bytes(con.execute("SELECT data FROM features WHERE image = ?", (keys[0],)).fetchone()[0])
    # one byte changed (same length), a half entry, a wrong dimension, a NaN written with a matching digest
    nan = np.full(dim, np.nan, dtype="float32").tobytes()
    _set(db, keys[0], data=bytes([data[0] ^ 0xFF]) + data[1:])
    _set(db, keys[1], data=data[:100])
    _set(db, keys[2], dim=dim + 1)
    _set(db, keys[3], data=nan, digest=feature_store._digest(nan))
    compute = Counting(paths, fresh)
    with _store(root, "damaged", extractor) as store:
        out = store.features(CLEAN_VIEW, paths, dim, compute)
        assert compute.calls == [paths[:4]]
        assert (store.counts.hits, store.counts.computed, store.counts.damaged) == (12, 4, 4)
        assert store.counts.warnings == ["feature store: 4 damaged entries (clean view) deleted and computed again"]
    np.testing.assert_array_equal(out, fresh)
    with _store(root, "damaged", extractor) as store:  # repaired: all read now
        store.features(CLEAN_VIEW, paths, dim, compute)
        assert (store.counts.hits, store.counts.damaged) == (16, 0)

    # a file that is not a database at all: replaced by an empty store, said so, training goes on
    db.write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with _store(root, "damaged", extractor) as store:
        assert store.counts.warnings == [f"feature store {db} was damaged: started an empty one"]
        store.features(CLEAN_VIEW, paths, dim, compute)
        assert store.counts.computed == 16


def test_the_store_keeps_under_its_size_dropping_the_least_recently_used(images):
    root, paths, _, extractor, fresh = images
    dim = fresh.shape[1]
    entry_mb = dim * 4 / 2**20
    vectors = {Path(p).stem: fresh[i] for i, p in enumerate(paths)}
    keys = list(vectors)
    with _store(root, "lru", extractor, budget_mb=1000) as old:
        old.put(CLEAN_VIEW, {k: vectors[k] for k in keys[:8]})
        assert old.trim() == 0
    time.sleep(0.01)
    # a later run, room for 6 entries: it reads 2 old ones and adds 2 new ones, which are kept with the
    # 2 most recently used old ones
    with _store(root, "lru", extractor, budget_mb=6.5 * entry_mb) as run:
        assert set(run.get(CLEAN_VIEW, keys[:2], dim)) == set(keys[:2])
        run.put(CLEAN_VIEW, {k: vectors[k] for k in keys[8:10]})
        assert run.trim() == 4 and run.counts.evicted == 4
        left = {row[0] for row in run.con.execute("SELECT image FROM features")}
        assert set(keys[:2]) | set(keys[8:10]) <= left and len(left) == 6
        assert run.counts.size_mb == pytest.approx(6 * entry_mb)
    # a budget smaller than one run's features: as many as fit, and a warning that says so
    with _store(root, "lru", extractor, budget_mb=2.5 * entry_mb) as small:
        small.features(CLEAN_VIEW, paths[10:14], dim, lambda ps: fresh[10:14])
        assert small.trim() == 6 + 4 - 2
        assert any("do not fit AGROML_FEATURE_STORE_MB" in w for w in small.counts.warnings)


_FILLER = """
import sys, numpy as np
from agroml.training.feature_store import FeatureStore
store = FeatureStore(sys.argv[1], 1000)
store.model = "shared-model"
rng = np.random.default_rng(int(sys.argv[2]))
for round in range(int(sys.argv[3])):
    keys = [f"{i:064x}" for i in rng.integers(0, 300, 40)]
    store.put("clean", {k: np.full(256, int(k, 16) % 97, dtype="float32") for k in keys})
    print(round, flush=True)
store.close()
"""


def test_two_processes_fill_one_store_and_a_kill_leaves_only_whole_entries(tmp_path):
    """Each entry's value is a function of its key, so any mix of the writers' entries reads back right."""
    db = tmp_path / "features" / "features.db"
    env = {"PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-c", textwrap.dedent(_FILLER), str(db)]
    both = [subprocess.Popen([*run, str(seed), "30"], env=env, stderr=subprocess.PIPE) for seed in (1, 2)]
    for proc in both:
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode() if proc.stderr else ""
    killed = subprocess.Popen([*run, "3", "100000"], env=env, stdout=subprocess.PIPE)
    assert killed.stdout is not None and killed.stdout.readline()  # it is writing
    killed.kill()
    killed.wait(timeout=30)

    store = FeatureStore(db, 1000)
    store.model = "shared-model"
    keys = [row[0] for row in store.con.execute("SELECT image FROM features")]
    got = store.get("clean", keys, 256)
    assert len(keys) > 40 and set(got) == set(keys) and store.counts.damaged == 0
    assert all(np.array_equal(v, np.full(256, int(k, 16) % 97, dtype="float32")) for k, v in got.items())
    store.close()


# --- whole trainings --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trainings(images):
    """The same tiny training with an empty store, then with the store it filled."""
    root, _, (weights, _), _, _ = images
    cfg = TrainConfig.for_weights(
        str(weights), model_type="pest", alpha=0.35, image_size=SIZE, epochs=2, batch_size=8, min_per_class=4
    )
    settings = _settings(root / "train")
    add_shapes(settings, COUNTS, size=SIZE)
    runs = {"empty": train(settings, cfg), "full": train(settings, cfg)}
    return runs, settings, weights


def _recorded(result) -> dict:
    return json.loads((result.path / "config.json").read_text())["feature_store"]


def test_a_training_from_the_store_learns_exactly_what_one_that_computed_every_feature_learns(trainings):
    """The first run computes every feature (the same base passes as with the store off); the second reads
    every one from the store: same features, same seed, so the same head and the same figures."""
    runs, settings, weights = trainings
    n = {s: sum(c.values()) for s, c in runs["empty"].counts.items()}
    views = 2 * sum(n.values())  # clean and one augmented view of every image, test included
    empty, full = _recorded(runs["empty"]), _recorded(runs["full"])
    assert (empty["hits"], empty["computed"], empty["damaged"]) == (0, views, 0)
    assert (full["hits"], full["computed"]) == (views, 0)
    assert full["model"] == empty["model"] and full["model"].startswith(f"mobilenetv2_features-{SIZE}px-")
    for split in ("val", "test"):
        got, want = runs["full"].metrics[split], runs["empty"].metrics[split]
        assert got["accuracy"] == want["accuracy"] and got["confusion_matrix"] == want["confusion_matrix"]
        assert got["macro_f1"] == pytest.approx(want["macro_f1"], abs=1e-9)
    # what the store holds for the plain images is what a fresh pass of the base computes
    with sqlite3.connect(store_path(settings.data_dir)) as con:
        stored = {
            k: np.frombuffer(v, "float32")
            for k, v in con.execute("SELECT image, data FROM features WHERE view = ?", (CLEAN_VIEW,))
        }
    paths = sorted(str(p) for p in settings.image_dir.glob("*/*.png") if p.stem in stored)
    assert len(paths) == len(stored) > 20
    fresh = extract_features(extractor_for(weights), paths, SIZE, 8)
    np.testing.assert_allclose(np.stack([stored[Path(p).stem] for p in paths]), fresh, rtol=1e-4, atol=1e-5)


def test_after_new_rows_a_retrain_computes_only_the_images_it_has_not_seen(images):
    """New rows redraw the split and old images move between train, val and test: every view of every
    old image is still found, and only the new images go through the base."""
    root, paths, _, extractor, fresh = images
    cfg = TrainConfig.for_weights("none", model_type="pest", image_size=SIZE, batch_size=8, aug_views=2)
    first = {"train": paths[:8], "val": paths[8:11], "test": paths[11:14]}
    # two new images; old ones moved: test -> train, train -> val, val -> test
    second = {"train": paths[11:14] + paths[2:8] + paths[14:15], "val": paths[:2] + paths[15:], "test": paths[8:11]}
    results = []
    for split in (first, second):
        with _store(root, "retrain", extractor) as store:
            train_views, val_feats = train_and_val_features(
                extractor, split["train"], split["val"], cfg, store=store, other_paths=split["test"]
            )
            results.append((store.counts.hits, store.counts.computed))
        index = [paths.index(p) for p in split["train"]]
        assert_close(train_views[0], fresh[index])
        assert_close(val_feats, fresh[[paths.index(p) for p in split["val"]]])
        assert train_views.shape == (2, len(split["train"]), fresh.shape[1])
        # the same features as a run with the store cleared, augmented views included: old images' views
        # read from the store are the ones a fresh pass draws for them (views.py), so both runs learn alike
        plain_views, plain_val = train_and_val_features(extractor, split["train"], split["val"], cfg)
        assert_close(train_views, plain_views)
        assert_close(val_feats, plain_val)
    assert results == [(0, 2 * 14), (2 * 14, 2 * 2)]  # clean + augmented view of each image


def test_an_augmented_view_depends_on_the_image_alone_and_eager_passes_equal_traced_ones(images, monkeypatch, tmp_path):
    """A view is a function of (image hash, k, seed): not of the batch, the other images, the order, or
    whether the few-image pass ran eagerly or as a traced graph (within float rounding)."""
    from agroml.training import features, views
    from agroml.training.model import augmentation_settings

    _, paths, _, extractor, fresh = images
    specs = [None, (1, 100), (2, 200)]
    eager = features.extract_views(extractor, paths, SIZE, 8, specs)
    assert eager.shape == (3, len(paths), fresh.shape[1])
    assert_close(eager[0], fresh)
    scale = float(np.abs(eager).max())
    assert np.abs(eager[1] - eager[0]).max() > 0.05 * scale and np.abs(eager[2] - eager[1]).max() > 0.05 * scale
    some = paths[9:2:-2]  # other images around them, another order, another batch size
    assert_close(features.extract_views(extractor, some, SIZE, 3, specs), eager[:, [paths.index(p) for p in some]])
    monkeypatch.setattr(features, "EAGER_MAX_IMAGES", 0)  # the same pass traced into a graph
    assert_close(features.extract_views(extractor, paths, SIZE, 8, specs), eager)
    # the draw is the content hash's: a copy of the image under another name draws the same view
    copy = tmp_path / "photo.png"
    copy.write_bytes(Path(paths[0]).read_bytes())
    settings = augmentation_settings()
    first = views.draws(paths[:1], 1, 100, SIZE, settings)
    np.testing.assert_array_equal(views.draws([str(copy)], 1, 100, SIZE, settings), first)
    assert not np.array_equal(views.draws(paths[:1], 1, 101, SIZE, settings), first)
    assert not np.array_equal(views.draws(paths[:1], 2, 100, SIZE, settings), first)


def test_the_store_is_off_at_zero_mb_and_where_the_base_trains(tmp_path):
    assert feature_store.open_store(tmp_path, 0, fast_path=True) is None
    assert feature_store.open_store(tmp_path, 100, fast_path=False) is None
    assert not (tmp_path / "features").exists()
    assert feature_store.finish(None, fast_path=True) == (
        {"enabled": False, "reason": "AGROML_FEATURE_STORE_MB=0 or --no-feature-store"},
        [],
    )
    on = _settings(tmp_path, feature_store_mb=0)
    assert on.feature_store_mb == 0 and _settings(tmp_path).feature_store_mb == 2048
