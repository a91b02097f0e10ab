"""fetch_images against the loopback Supabase and a second plain host: refusals, key hygiene, retries, cache."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PIL import Image
from supa_rows import jpeg
from supaserver import Faults, closed_port, start_image_host

from agroml.core import config
from agroml.images.cache import ImageCache, verify_image
from agroml.images.fetch import UrlPolicy, fetch_images, probe_image


def _settings(server, host=None, **over) -> config.Settings:
    env = {"SUPABASE_URL": server.url, "SUPABASE_SERVICE_KEY": server.service_key}
    hosts = urlsplit(host.url).netloc if host is not None else ""
    return config.resolve(
        {"retry_base_seconds": 0.001, "retry_max_seconds": 20, "image_hosts": hosts, "data_dir": "data", **over},
        environ=env,
        env_file=None,
    )


def _noise_jpeg(size: int) -> bytes:
    rng = random.Random(size)
    img = Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, "PNG")  # 81 Mpx, a few KB on the wire
    return buf.getvalue()


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_each_bad_image_is_refused_with_its_reason_while_the_rest_complete(workdir, supabase_server, image_host):
    s, h = supabase_server, image_host
    good = [s.add_object("predictions", f"pest_images/pest_{i}.jpg", jpeg(i)) for i in range(3)]
    s.add_object("predictions", "pest_images/pest_bare.jpg", jpeg(10))
    s.add_object("predictions", "disease_images/d1.jpg", jpeg(11))
    h.add("/uploads/pest/u1.jpg", jpeg(12))
    urls = {
        "public": good[0],
        "public2": good[1],
        "public3": good[2],
        "bare": "pest_images/pest_bare.jpg",
        "bucket_path": "predictions/disease_images/d1.jpg",
        "relative": "/uploads/pest/u1.jpg",
        "allowed_host": h.add("/ok.jpg", jpeg(13)),
        "other_host": "https://images.example.org/a.jpg",
        "file": "file:///etc/passwd",
        "data": "data:image/png;base64,iVBORw0KGgo=",
        "ftp": "ftp://example.org/a.jpg",
        "private": "http://10.1.2.3/a.jpg",
        "loopback_other_port": "http://127.0.0.1:9/a.jpg",
        "oversize": h.add("/big.jpg", _noise_jpeg(256)),
        "html": h.add("/page.jpg", b"<!DOCTYPE html><html><body>Sign in</body></html>", "image/jpeg"),
        "truncated": h.add("/cut.jpg", jpeg(14, size=64)[:300]),
        "bomb": h.add("/bomb.png", _bomb_png(), "image/png"),
        "missing": "pest_images/nope.jpg",
    }
    settings = _settings(s, h, image_max_mb=0.02, image_base_url=h.url)
    assert len(_noise_jpeg(256)) > 20_000
    with ImageCache(settings.image_dir, max_bytes=20_000) as cache:
        summary = fetch_images(list(urls.values()), cache, settings)
    reason = {name: summary.failures.get(url) for name, url in urls.items()}
    assert reason == {
        "public": None,
        "public2": None,
        "public3": None,
        "bare": None,
        "bucket_path": None,
        "relative": None,
        "allowed_host": None,
        "other_host": "host_not_allowed",
        "file": "bad_scheme",
        "data": "bad_scheme",
        "ftp": "bad_scheme",
        "private": "private_address",
        "loopback_other_port": "private_address",
        "oversize": "too_large",
        "html": "not_an_image",
        "truncated": "truncated",
        "bomb": "decompression_bomb",
        "missing": "not_found",
    }
    assert (summary.fetched, summary.cached, summary.failed) == (7, 0, 11)
    assert summary.reasons["bad_scheme"] == 3
    for name in ("public", "bare", "bucket_path", "relative", "allowed_host"):
        verify_image(summary.paths[urls[name]].read_bytes())  # what is cached decodes
    assert _no_temp_files(settings.image_dir)
    # the key went to Supabase only, never to the other host
    assert h.requests and not any("apikey" in r.headers or "authorization" in r.headers for r in h.requests)
    authed = [r for r in s.requests if "/object/predictions/" in r.path and "/public/" not in r.path]
    assert authed and all(r.headers.get("apikey") == s.service_key for r in authed)
    assert not any(r.path == "/a.jpg" for r in s.requests)  # refused URLs cost no request anywhere


def test_a_warm_cache_answers_without_a_single_request(workdir, supabase_server):
    urls = [supabase_server.add_object("predictions", f"p/{i}.jpg", jpeg(i)) for i in range(20)]
    settings = _settings(supabase_server)
    with ImageCache(settings.image_dir) as cache:
        first = fetch_images(urls + urls[:5], cache, settings)  # duplicates are fetched once
        assert (first.fetched, first.failed) == (20, 0) and first.requests == 20
        before = len(supabase_server.requests)
        second = fetch_images(urls, cache, settings)
    assert (second.fetched, second.cached, second.failed) == (0, 20, 0)
    assert len(supabase_server.requests) == before
    assert second.paths == {u: first.paths[u] for u in urls}


def test_errors_and_dropped_connections_are_retried(workdir, supabase_server):
    urls = [supabase_server.add_object("predictions", f"p/{i}.jpg", jpeg(i)) for i in range(60)]
    supabase_server.faults = Faults(
        seed=2, error_rate=0.2, error_statuses=(503, 429, 544, 520), drop_rate=0.05, truncate_rate=0.05
    )
    settings = _settings(supabase_server)
    with ImageCache(settings.image_dir) as cache:
        summary = fetch_images(urls, cache, settings)
    assert (summary.fetched, summary.failed) == (60, 0), summary.details
    faults = [r for r in supabase_server.requests if r.fault]
    assert faults and summary.retries == len(faults)
    assert _no_temp_files(settings.image_dir)


def test_storage_404_is_not_retried_and_corrupt_bytes_are_refused(workdir, supabase_server):
    url = supabase_server.add_object("predictions", "p/ok.jpg", jpeg(1))
    settings = _settings(supabase_server)
    with ImageCache(settings.image_dir) as cache:
        missing = fetch_images(["pest_images/gone.jpg"], cache, settings)
        assert missing.failures == {"pest_images/gone.jpg": "not_found"} and missing.requests == 1
        supabase_server.faults = Faults(corrupt_objects=True)
        corrupt = fetch_images([url], cache, settings)
    assert corrupt.failures == {url: "not_an_image"}


def test_redirects_are_checked_hop_by_hop(workdir, supabase_server, image_host):
    target = supabase_server.add_object("predictions", "p/r.jpg", jpeg(3))
    ok = image_host.add_redirect("/to-supabase.jpg", target)
    bad = image_host.add_redirect("/to-elsewhere.jpg", "http://images.example.org/x.jpg")
    bad_scheme = image_host.add_redirect("/to-file.jpg", "file:///etc/passwd")
    settings = _settings(supabase_server, image_host)
    with ImageCache(settings.image_dir) as cache:
        summary = fetch_images([ok, bad, bad_scheme], cache, settings)
    assert summary.failures == {bad: "host_not_allowed", bad_scheme: "bad_scheme"}
    assert "redirect refused" in summary.details[bad]
    assert ok in summary.paths


def _keyed(requests) -> list:
    """The requests that carried the Supabase key in any form."""
    return [r for r in requests if "apikey" in r.headers or "authorization" in r.headers or "apikey" in r.query]


def test_a_redirect_never_carries_the_key_to_any_host(workdir, supabase_server, image_host):
    """The key goes only to Supabase, and only for a URL the database named: a redirect's target was
    chosen by whoever answered, so it never gets the key, even when it points back at Supabase."""
    s, h = supabase_server, image_host
    s.add_object("private", "p/secret.jpg", jpeg(1), public=False)  # readable with the key only
    public = s.add_object("predictions", "p/public.jpg", jpeg(2))
    h.add("/img/host.jpg", jpeg(3))
    named = s.add_object("predictions", "p/named.jpg", jpeg(4))  # the database names this: key sent
    urls = {
        # an allow-listed host aiming at a private Storage object (the key would open it)
        "host_to_private": h.add_redirect("/a.jpg", f"{s.url}/storage/v1/object/private/p/secret.jpg"),
        "host_to_public": h.add_redirect("/b.jpg", public),  # a public object needs no key: fetched
        # Supabase's own Storage redirecting to the allowed host, and to another Storage path
        "supabase_to_host": s.add_redirect("/storage/v1/object/predictions/p/moved.jpg", h.url + "/img/host.jpg"),
        "supabase_to_supabase": s.add_redirect(
            "/storage/v1/object/predictions/p/moved2.jpg", f"{s.url}/storage/v1/object/private/p/secret.jpg"
        ),
        "named": named,
    }
    settings = _settings(s, h)
    with ImageCache(settings.image_dir) as cache:
        summary = fetch_images(list(urls.values()), cache, settings)
    assert {name: summary.failures.get(url) for name, url in urls.items()} == {
        "host_to_private": "forbidden",  # asked without the key: Storage refuses it
        "host_to_public": None,
        "supabase_to_host": None,
        "supabase_to_supabase": "forbidden",
        "named": None,
    }
    assert not _keyed(h.requests) and len(h.requests) == 3  # a.jpg, b.jpg, and the hop from Supabase
    first_hops = {"/storage/v1/object/predictions/p/moved.jpg", "/storage/v1/object/predictions/p/moved2.jpg"}
    first_hops.add(urlsplit(named).path)
    assert {r.path for r in _keyed(s.requests)} == first_hops  # the URLs the database named, nothing else
    assert all(r.headers["apikey"] == s.service_key for r in _keyed(s.requests))
    hops = [r for r in s.requests if r.path.endswith(("/private/p/secret.jpg", "/public/predictions/p/public.jpg"))]
    assert len(hops) == 3 and not _keyed(hops)


def test_a_redirect_to_a_host_not_allowed_is_refused_before_any_request(workdir, supabase_server, image_host):
    other = start_image_host()  # a third loopback server, on no list
    try:
        other.add("/x.jpg", jpeg(5))
        targets = {
            other.url + "/x.jpg": "private_address",  # loopback, another port, not in AGROML_IMAGE_HOSTS
            "http://images.example.org/x.jpg": "host_not_allowed",
            "http://169.254.169.254/latest/meta-data": "private_address",
            "file:///etc/passwd": "bad_scheme",
            "ftp://images.example.org/x.jpg": "bad_scheme",
        }
        urls = {image_host.add_redirect(f"/r{i}.jpg", t): reason for i, (t, reason) in enumerate(targets.items())}
        # the second hop of a chain is checked as well as the first
        urls[image_host.add_redirect("/chain.jpg", image_host.url + "/r0.jpg")] = "private_address"
        settings = _settings(supabase_server, image_host)
        with ImageCache(settings.image_dir) as cache:
            summary = fetch_images(list(urls), cache, settings)
        assert summary.failures == urls
        assert all(summary.details[u].startswith(f"{r}: redirect refused: ") for u, r in urls.items())
        assert not other.requests  # refused hops cost no request
    finally:
        other.stop()


def test_every_retry_is_announced_with_its_wait_status_and_host(workdir, supabase_server):
    urls = [supabase_server.add_object("predictions", f"p/{i}.jpg", jpeg(i)) for i in range(3)]
    supabase_server.faults = Faults(burst=4, error_statuses=(503,))  # the first 4 requests fail, then none
    settings = _settings(supabase_server, image_concurrency=1)
    notices: list[str] = []
    with ImageCache(settings.image_dir) as cache:
        summary = fetch_images(urls, cache, settings, notice=notices.append)
    assert (summary.fetched, summary.failed, summary.retries) == (3, 0, 4)
    host = supabase_server.url.split("//")[1]
    assert len(notices) == 4
    for n, line in enumerate(notices):
        assert re.fullmatch(rf"retrying in \d+\.\d s \(attempt {n + 2}, giving up after 20 s\): 503 from {host}", line)


def test_an_unreachable_image_host_fails_fast_naming_it(workdir, supabase_server):
    port = closed_port()
    settings = _settings(supabase_server, image_hosts=f"127.0.0.1:{port},nothing-here.invalid")
    notices: list[str] = []
    urls = [f"http://127.0.0.1:{port}/a.jpg", "http://nothing-here.invalid/b.jpg"]
    with ImageCache(settings.image_dir) as cache:
        summary = fetch_images(urls, cache, settings, notice=notices.append)
    assert summary.reasons == {"unreachable": 2}
    assert summary.requests == 6  # 3 quick attempts each, not 20 s of them
    assert sorted(summary.failures) == sorted(urls)  # in the order they failed: the fetches run in parallel
    refused, dns = (summary.details[u] for u in urls)
    assert f"127.0.0.1:{port}: connection refused" in refused and "gave up after 3 attempts" in refused
    assert "nothing-here.invalid: name not found (DNS)" in dns and "gave up after 3 attempts" in dns
    assert sorted(n.split(": ", 1)[1] for n in notices) == sorted(
        [f"127.0.0.1:{port}: connection refused"] * 2 + ["nothing-here.invalid: name not found (DNS)"] * 2
    )


def test_a_relative_path_without_a_base_url_fails_with_no_base_url(workdir, supabase_server):
    settings = _settings(supabase_server)
    with ImageCache(settings.image_dir) as cache:
        summary = fetch_images(["/uploads/pest/a.jpg", ""], cache, settings)
    assert summary.failures == {"/uploads/pest/a.jpg": "no_base_url", "": "empty_url"}


def test_the_url_policy_sends_the_key_only_to_supabase_origin(supabase_server):
    policy = UrlPolicy(_settings(supabase_server, image_hosts="cdn.example.org,*.example.net,127.0.0.1:8123"))
    assert policy.resolve(supabase_server.public_url("predictions", "a.jpg")).supabase
    assert (
        policy.resolve("pest_images/a b.jpg").url == f"{supabase_server.url}/storage/v1/object/predictions/"
        "pest_images/a%20b.jpg"
    )
    assert not policy.resolve("https://cdn.example.org/a.jpg").supabase
    assert not policy.resolve("https://img.example.net/a.jpg").supabase
    assert not policy.resolve("http://127.0.0.1:8123/a.jpg").supabase  # same IP as Supabase, other port: no key
    for bad in (
        "https://example.org/a.jpg",
        "https://cdn.example.org.evil.com/a.jpg",
        "http://localhost/a.jpg",
        "http://169.254.169.254/latest",
        "pest_images/../secret.jpg",
    ):
        with pytest.raises(Exception) as err:
            policy.resolve(bad)
        assert err.value.reason in ("host_not_allowed", "private_address", "bad_path")


def test_probe_image_downloads_and_verifies_without_caching(workdir, supabase_server):
    url = supabase_server.add_object("predictions", "p/1.jpg", jpeg(1, size=32))
    settings = _settings(supabase_server)
    assert probe_image(url, settings) == (None, f"32x32 jpg, {len(jpeg(1, size=32))} bytes")
    assert probe_image("ftp://x/y.jpg", settings)[0] == "bad_scheme"
    assert not settings.image_dir.exists()
