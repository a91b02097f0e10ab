"""The local SQLite store: upserts, refreshes, reading, and refusing files that are not ours."""

from __future__ import annotations

import sqlite3
import threading

import pandas as pd
import pytest

from agroml.core.errors import NoDataError, StoreError
from agroml.data import records as rec
from agroml.data.store import SCHEMA_VERSION, Store


def _records(n: int, confirmed=True, source="demo", start=0) -> pd.DataFrame:
    return rec.make_records(
        dict(
            id=f"id-{i:05d}",
            source=source,
            model_type="pest",
            image_url=f"demo://pest/{i}.jpg",
            predicted_label="aphids" if i % 2 else "healthy",
            confidence=0.5,
            user_confirmed=confirmed,
            farmer_id=f"farmer-{i % 3}",
            created_at=pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(hours=i),
        )
        for i in range(start, start + n)
    )


def test_upsert_counts_and_is_idempotent(tmp_path):
    with Store(tmp_path / "s.db") as store:
        assert store.upsert(_records(10)).inserted == 10
        again = store.upsert(_records(10))
        assert (again.inserted, again.updated, again.unchanged) == (0, 0, 10)
        assert store.count() == 10


def test_feedback_changes_refresh_existing_rows(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.upsert(_records(4, confirmed=None))
        changed = _records(4, confirmed=None)
        changed.loc[1, "user_confirmed"] = False
        changed.loc[1, "actual_label"] = "fall_armyworm"
        result = store.upsert(rec.make_records(changed.to_dict("records")))
        assert (result.inserted, result.updated, result.unchanged) == (0, 1, 3)
        row = store.read().set_index("id").loc["id-00001"]
        assert (row["feedback"], row["label"]) == ("corrected", "fall_armyworm")


def test_same_id_from_two_sources_are_two_rows(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.upsert(_records(3, source="demo"))
        store.upsert(_records(3, source="supabase"))
        assert store.count() == 6


def test_known_image_hash_survives_an_upsert_without_one(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.upsert(_records(2))
        assert store.set_image_hashes([("demo", "id-00000", "ab" * 32)]) == 1
        store.upsert(_records(2))
        assert store.read().set_index("id").loc["id-00000", "image_hash"] == "ab" * 32


def test_read_round_trip_types_and_filters(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.upsert(_records(48))
        df = store.read("pest", since="2025-01-02", until="2025-01-02T12:00:00")
        assert len(df) == 12
        assert str(df["created_at"].dtype) == "datetime64[us, UTC]"
        assert str(df["user_confirmed"].dtype) == "boolean"
        assert "farmer_id" not in df.columns and df["farmer_key"].isna().all()
        assert "farmer_id" in store.read(include_personal=True).columns
        chunks = list(store.iter_records(chunk_rows=10))
        assert [len(c) for c in chunks] == [10, 10, 10, 10, 8]


def test_feedback_counts_group_in_sql(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.upsert(_records(10))
        counts = store.feedback_counts("pest")
        assert counts.set_index("predicted_label")["n"].to_dict() == {"aphids": 5, "healthy": 5}


def test_reader_works_while_a_writer_holds_a_transaction(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as writer, Store(path) as reader:
        writer.upsert(_records(5))
        with writer.transaction() as con:
            con.execute("DELETE FROM predictions")
            # WAL: the reader sees the last committed state, without waiting for the writer
            assert reader.count() == 5
        assert reader.count() == 0


def test_concurrent_writers_do_not_lose_rows(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()

    def write(offset: int) -> None:
        with Store(path) as store:
            for k in range(5):
                store.upsert(_records(20, start=offset + 20 * k))

    threads = [threading.Thread(target=write, args=(i * 1000,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Store(path) as store:
        assert store.count() == 300


def test_missing_store_means_no_data(tmp_path):
    with pytest.raises(NoDataError, match=r"^no data: run `agroml demo` or `agroml pull`$"):
        Store(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_corrupt_and_foreign_files_are_refused_untouched(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database at all" * 200)
    with pytest.raises(StoreError, match=r"corrupt.db is damaged or not an SQLite database \(file is not a database\)"):
        Store(corrupt)
    assert corrupt.read_bytes() == b"not a database at all" * 200

    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE invoices (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=r"is not an agroml store \(it holds tables: invoices\)"):
        Store(foreign)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.con.execute("UPDATE agroml_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this agroml understands"):
        Store(path)


def test_salt_is_made_once_and_kept(tmp_path):
    with Store(tmp_path / "s.db") as store:
        salt = store.salt()
        assert len(salt) == 32
    with Store(tmp_path / "s.db") as store:
        assert store.salt() == salt
        assert store.salt("configured") == "configured"
