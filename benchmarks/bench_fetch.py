"""Benchmark: filling the image cache, and keyset against offset paging, through the loopback Supabase.

Both baselines are measured in the same run, against the same in-process server (tests/supaserver.py,
a real HTTP server on 127.0.0.1), so the ratios compare like with like on whatever machine runs this:

1. images: ``agroml.images.fetch.fetch_images`` (AGROML_IMAGE_CONCURRENCY threads over one pooled httpx
   client, verify, atomic write) into an empty cache, against the old system's way: one GET after
   another (over one keep-alive client, status checked, bytes kept in memory).
   Every request has ``--latency`` seconds of server delay (default 30 ms, about a real round trip).
   Goal: agroml >= 10x faster. Then agroml runs again on the warm cache: it must make 0 requests
   (counted from the server's request log).
2. paging: all ``--rows`` rows (default 100,000) through ``SupabaseSource.fetch_rows`` (keyset,
   ``id=gt.<last>``) against ``.range(offset, offset + 999)`` pages (offset paging) with the official
   client, same columns, same page size. The server, like PostgreSQL, walks every skipped row of an
   offset, so deep pages cost more. Each is run ``--repeat`` times and the fastest run kept.
   Then both read the table again while ``--inserts`` new rows arrive after every page (farmers keep
   uploading during a pull): offset pages shift, so rows are read twice and, worse, rows that were
   there all along are skipped; keyset pages never lose or repeat a row that existed at the start.

    .venv/bin/python benchmarks/bench_fetch.py
    .venv/bin/python benchmarks/bench_fetch.py --images 200 --rows 20000   # a quicker run
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from supa_rows import add_pest_table, jpeg, pest_rows
from supaserver import Faults, start_server

from agroml.core import config, schema
from agroml.data.supabase import SupabaseSource
from agroml.images.cache import ImageCache
from agroml.images.fetch import fetch_images

GOAL_IMAGES_RATIO = 10.0


class ServerProcess:
    """The loopback server in its own process, driven over a pipe.

    Why a process: in-process, the server's Python request handling shares the GIL with the client
    being measured, a cost no real deployment has (Supabase is another machine) and one that grows
    with concurrency, so it would understate agroml's side of every ratio.
    """

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self._proc.start()
        self.url, self.service_key = self._conn.recv()

    def call(self, command: str, *args: object) -> object:
        self._conn.send((command, args))
        return self._conn.recv()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.call("stop")
        self._proc.join(10)


def _serve(conn) -> None:
    server = start_server()
    extra = 0
    conn.send((server.url, server.service_key))
    while True:
        command, args = conn.recv()
        if command == "objects":
            (n,) = args
            conn.send(
                [server.add_object("predictions", f"pest_images/pest_{i}.jpg", jpeg(i, size=64)) for i in range(n)]
            )
        elif command == "rows":
            add_pest_table(server, pest_rows(args[0], seed=1))
            conn.send(None)
        elif command == "more":
            extra += 1
            server.add_rows("pest_predictions", pest_rows(args[0], seed=1000 + extra))
            conn.send(None)
        elif command == "faults":
            server.faults = Faults(**args[0])
            conn.send(None)
        elif command == "requests":
            conn.send(len(server.requests))
        elif command == "stop":
            server.stop()
            conn.send(None)
            return


def _settings(server, **over) -> config.Settings:
    env = {"SUPABASE_URL": server.url, "SUPABASE_SERVICE_KEY": server.service_key}
    return config.resolve({"hash_salt": "bench", **over}, environ=env, env_file=None)


def sequential_download(urls: list[str]) -> int:
    """The old system's way: one request at a time, every image held in memory.

    Kinder than the old code (which opened a new connection per image): one keep-alive client is
    reused, so the ratio measures concurrency, not connection setup.
    """
    import httpx

    images, total = [], 0
    with httpx.Client(timeout=30) as client:
        for url in urls:
            resp = client.get(url)
            resp.raise_for_status()
            images.append(resp.content)
            total += len(resp.content)
    return total


def bench_images(n: int, latency: float, concurrency: int) -> None:
    with ServerProcess() as server, tempfile.TemporaryDirectory() as tmp:
        urls = server.call("objects", n)
        server.call("faults", {"delay_s": latency})
        settings = _settings(server, image_dir=Path(tmp) / "images", image_concurrency=concurrency)

        start = time.perf_counter()
        sequential_download(urls)
        t_seq = time.perf_counter() - start

        with ImageCache(settings.image_dir) as cache:
            start = time.perf_counter()
            cold = fetch_images(urls, cache, settings)
            t_agro = time.perf_counter() - start
            before = server.call("requests")
            start = time.perf_counter()
            warm = fetch_images(urls, cache, settings)
            t_warm = time.perf_counter() - start
            warm_requests = server.call("requests") - before

    assert cold.fetched == n and cold.failed == 0, cold.reasons
    assert warm.cached == n
    ratio = t_seq / t_agro
    print(f"images: {n} x {len(jpeg(0, size=64))} B, {latency * 1000:.0f} ms latency per request")
    print(f"  sequential one-at-a-time (old way): {t_seq:7.2f} s  ({n / t_seq:6.1f} images/s)")
    print(f"  agroml fetch_images, {concurrency} at once:  {t_agro:7.2f} s  ({n / t_agro:6.1f} images/s)")
    verdict = "met" if ratio >= GOAL_IMAGES_RATIO else "NOT met"
    print(f"  ratio: {ratio:.1f}x faster (goal >= {GOAL_IMAGES_RATIO:.0f}x: {verdict})")
    print(f"  warm cache: {warm.cached}/{n} cached in {t_warm:.3f} s with {warm_requests} requests to the server")


def keyset(settings: config.Settings, between: Callable[[], object] = lambda: None) -> list[str]:
    """Every id, through agroml's keyset pages (``between`` runs after each page)."""
    ids: list[str] = []
    with SupabaseSource(settings) as source:
        for page in source.fetch_rows("pest"):
            ids.extend(r["id"] for r in page)
            between()
    return ids


def offset(settings: config.Settings, between: Callable[[], object] = lambda: None, page_size: int = 1000) -> list[str]:
    """Every id, through offset pages with the official client: .range(a, a + page - 1) until an empty page."""
    import httpx
    from supabase import ClientOptions, create_client

    spec = schema.table_spec("pest")
    ids: list[str] = []
    with httpx.Client(timeout=60) as http:
        client = create_client(
            settings.supabase_url,
            settings.supabase_key,
            options=ClientOptions(httpx_client=http, postgrest_client_retry=False),
        )
        while True:
            page = (
                client.table(spec.table)
                .select(",".join(spec.select_columns()))
                .order("id")
                .range(len(ids), len(ids) + page_size - 1)
                .execute()
                .data
            )
            if not page:
                return ids
            ids.extend(r["id"] for r in page)
            between()


def bench_paging(rows: int, repeat: int, inserts: int) -> None:
    with ServerProcess() as server:
        server.call("rows", rows)
        settings = _settings(server)
        original = set(keyset(settings))  # also the warm-up: the server builds its sorted index
        times = {"keyset": float("inf"), "offset": float("inf")}
        for _ in range(repeat):  # alternating, so background load hits both alike
            for name, fn in (("keyset", keyset), ("offset", offset)):
                start = time.perf_counter()
                got = fn(settings)
                times[name] = min(times[name], time.perf_counter() - start)
                assert len(got) == rows and set(got) == original, name
        print(f"paging: {rows} rows, 1000 per page, fastest of {repeat}")
        print(f"  keyset (id=gt.<last>): {times['keyset']:7.2f} s")
        print(f"  offset (.range):       {times['offset']:7.2f} s")
        print(f"  ratio: keyset {times['offset'] / times['keyset']:.2f}x faster than offset")

        # farmers keep uploading while a pull runs: new rows land anywhere in id (uuid) order
        # a smaller table here: every insert makes the loopback server re-sort its index
        rows = min(rows, 20_000)
        pages = rows // 1000
        print(f"paging {rows} rows while {inserts} new rows arrive after each of the first {pages} pages:")
        for name, fn in (("keyset", keyset), ("offset", offset)):
            server.call("rows", rows)  # the same fresh table for each reader
            original = set(keyset(settings))
            calls = iter(range(pages))  # then stop: rows arriving forever would keep any reader busy
            got = fn(settings, lambda calls=calls: next(calls, None) is not None and server.call("more", inserts))
            print(
                f"  {name}: {len(got)} rows read, {len(got) - len(set(got))} read twice, "
                f"{len(original - set(got))} of the {rows} rows present at the start missed"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inserts", type=int, default=100, help="new rows after each page (last part)")
    args = parser.parse_args()
    bench_images(args.images, args.latency, args.concurrency)
    bench_paging(args.rows, args.repeat, args.inserts)


if __name__ == "__main__":
    main()
