"""The store's freshness token (agroml.data.freshness) and the API's kept read results (agroml.api.memo).

A kept result is only right while the token proves nothing changed: every kind of change a user makes
(a commit from another connection, a store replaced, an image added or deleted, the URL index written)
must change it, and a change too recent for file times to prove anything must give None (keep nothing).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agroml.data import records as rec
from agroml.data.freshness import RACY_S, StoreWatch
from agroml.data.store import Store

SHA = "ab" + "0" * 62


def _row(i: int) -> dict:
    return {
        "id": f"r{i}",
        "source": "test",
        "model_type": "pest",
        "predicted_label": "aphids",
        "user_confirmed": True,
        "created_at": "2025-07-01T08:00:00Z",
        "image_url": f"https://x/{i}.jpg",
    }


def _age(root: Path) -> None:
    """Date every file and folder under ``root`` (and root) well past the racy window."""
    old = time.time() - 10 * RACY_S
    for path in [root, *root.rglob("*")]:
        os.utime(path, (old, old))


@pytest.fixture
def place(tmp_path: Path):
    db, images = tmp_path / "agroml.db", tmp_path / "images"
    with Store(db) as store:
        store.upsert(rec.make_records([_row(0)]))
    (images / "ab").mkdir(parents=True)
    (images / "ab" / f"{SHA}.jpg").write_bytes(b"jpeg")
    _age(tmp_path)
    watch = StoreWatch(db, images)
    yield db, images, watch
    watch.close()


def test_the_token_holds_while_nothing_changes_even_when_the_store_is_read(place) -> None:
    db, _, watch = place
    first = watch.token()
    with Store(db, create=False) as store:  # a reader (stats) between two tokens changes nothing
        assert store.count() == 1
    assert first is not None and watch.token() == first


@pytest.mark.parametrize("change", ["commit", "replace store", "add image", "delete image", "index written"])
def test_every_change_a_user_makes_changes_the_token(place, change: str) -> None:
    db, images, watch = place
    before = watch.token()
    assert before is not None
    if change == "commit":  # another connection (pull, import, demo) commits a row
        with Store(db, create=False) as store:
            store.upsert(rec.make_records([_row(1)]))
    elif change == "replace store":  # moved aside and made anew: a new file, as old as the first
        db.rename(db.with_suffix(".old"))
        with Store(db) as store:
            store.upsert(rec.make_records([_row(0)]))
    elif change == "add image":
        (images / "ab" / ("ab" + "1" * 62 + ".jpg")).write_bytes(b"jpeg")
    elif change == "delete image":
        (images / "ab" / f"{SHA}.jpg").unlink()
    else:
        (images / "index.db").write_bytes(b"x")
    if change in ("add image", "delete image", "index written"):
        assert watch.token() is None, "a change just made cannot be vouched for by file times"
        _age(images)
    after = watch.token()
    assert after is not None and after != before


def test_no_store_means_no_token(tmp_path: Path) -> None:
    watch = StoreWatch(tmp_path / "missing.db", tmp_path / "images")
    assert watch.token() is None
    assert not (tmp_path / "missing.db").exists(), "watching never creates a store"


def test_memo_computes_once_for_identical_requests_and_again_after_a_change(place) -> None:
    from agroml.api.memo import Memo

    db, _, watch = place
    memo = Memo(watch)
    calls: list[int] = []
    gate = threading.Event()

    def compute() -> int:
        gate.wait(5)  # every caller arrives while the first one computes
        calls.append(1)
        with Store(db, create=False) as store:
            return store.count()

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(memo.get("stats", compute))) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(10)
    assert results == [1] * 6 and len(calls) == 1
    assert memo.get("other key", compute) == 1 and len(calls) == 2, "another question is computed"

    with Store(db, create=False) as store:  # a new row: the next answer has it at once
        store.upsert(rec.make_records([_row(1)]))
    assert memo.get("stats", compute) == 2 and len(calls) == 3


def test_memo_keeps_nothing_when_the_state_cannot_be_vouched_for(place) -> None:
    from agroml.api.memo import Memo

    _, images, watch = place
    (images / "ab" / ("ab" + "2" * 62 + ".png")).write_bytes(b"png")  # just now: racy
    calls: list[int] = []
    memo = Memo(watch)
    for _ in range(3):
        memo.get("stats", lambda: calls.append(1))
    assert len(calls) == 3
    assert Memo(None).get("k", lambda: 7) == 7, "no watch (a remote source): computed every time"


def test_memo_does_not_keep_a_failure(place) -> None:
    from agroml.api.memo import Memo

    _, _, watch = place
    memo = Memo(watch)
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("store busy")
        return "ok"

    with pytest.raises(RuntimeError):
        memo.get("stats", flaky)
    assert memo.get("stats", flaky) == "ok" and len(attempts) == 2
