"""The loopback Supabase server, driven by the real supabase-py client: if it is not faithful, every
test built on it proves nothing. Raw httpx is used only where the client hides what is checked
(status codes, headers, dropped connections)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import postgrest
import pytest
import supabase
from storage3.exceptions import StorageApiError
from supabase import ClientOptions
from supaserver import Faults, make_jwt

ROWS = 2500


def client_for(server, key=None):
    options = ClientOptions(postgrest_client_retry=False, httpx_client=httpx.Client(timeout=10))
    return supabase.create_client(server.url, key or server.service_key, options=options)


def feedback_rows(n=ROWS):
    """Rows with a non-unique created_at (ten per second, with mixed offsets), nulls and jsonb."""
    rows = []
    for i in range(1, n + 1):
        minute, second = divmod(i // 10, 60)
        rows.append(
            {
                "id": i,
                "created_at": f"2024-03-01T{10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}+00:00",
                "label": None if i % 7 == 0 else f"l{i % 3}",
                "confirmed": i % 2 == 0,
                "confidence": round((i % 100) / 100, 2),
                "meta": {"i": i, "tags": ["a"]},
            }
        )
    return rows


@pytest.fixture
def db(supabase_server):
    supabase_server.add_rows("feedback", feedback_rows())
    return supabase_server


@pytest.fixture
def client(db):
    return client_for(db)


def rest(server, query, key="service", headers=None):
    key = {"service": server.service_key, "anon": server.anon_key}.get(key, key)
    base = {"apikey": key, "Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{server.url}/rest/v1/{query}", headers={**base, **(headers or {})}, timeout=10)


# ------------------------------------------------------------------------------------------------ rows


def test_select_filters_order_and_range_through_the_client(client):
    resp = (
        client.table("feedback")
        .select("id,label")
        .gte("id", 100)
        .lt("id", 200)
        .neq("label", "l1")
        .order("label", desc=True)
        .order("id")
        .range(2, 5)
        .execute()
    )
    assert all(set(row) == {"id", "label"} for row in resp.data)
    expected = sorted(
        (r for r in feedback_rows() if 100 <= r["id"] < 200 and r["label"] not in ("l1", None)),
        key=lambda r: (-int(r["label"][1]), r["id"]),
    )[2:6]
    assert resp.data == [{"id": r["id"], "label": r["label"]} for r in expected]
    assert resp.count is None

    nulls = client.table("feedback").select("id").is_("label", None).lte("id", 30).order("id").execute()
    assert [r["id"] for r in nulls.data] == [7, 14, 21, 28]
    picked = client.table("feedback").select("id,confirmed").in_("id", [3, 4, 5]).eq("confirmed", True).execute()
    assert picked.data == [{"id": 4, "confirmed": True}]
    row = client.table("feedback").select("*").eq("id", 42).execute().data
    assert row == [r for r in feedback_rows() if r["id"] == 42]  # jsonb, bools, floats, nulls round-trip


def test_nulls_sort_last_ascending_and_first_descending_unless_asked(client):
    query = client.table("feedback").select("id,label").lte("id", 14)
    asc = query.order("label").order("id").execute().data
    assert [r["label"] for r in asc][-2:] == [None, None]
    desc = client.table("feedback").select("id,label").lte("id", 14).order("label", desc=True).execute().data
    assert [r["label"] for r in desc][:2] == [None, None]
    first = (
        client.table("feedback")
        .select("id,label")
        .lte("id", 14)
        .order("label", nullsfirst=True)
        .order("id")
        .execute()
        .data
    )
    assert [r["id"] for r in first][:2] == [7, 14]


def test_comparisons_are_typed_not_textual(supabase_server):
    ids = [str(uuid.UUID(int=k * 2**100)) for k in (1, 2, 3)]
    supabase_server.add_rows(
        "t",
        [
            {"n": 9, "at": "2024-01-01T01:00:00+02:00", "u": ids[0]},  # 23:00 UTC the day before
            {"n": 10, "at": "2024-01-01T00:30:00+00:00", "u": ids[1]},
            {"n": 100, "at": "2024-01-01T00:00:00Z", "u": ids[2]},
        ],
    )
    c = client_for(supabase_server)
    assert [r["n"] for r in c.table("t").select("n").gt("n", 9).order("n").execute().data] == [10, 100]
    by_time = c.table("t").select("n").order("at").execute().data
    assert [r["n"] for r in by_time] == [9, 100, 10]
    later = c.table("t").select("n").gt("at", "2023-12-31T23:30:00-00:30").execute().data
    assert [r["n"] for r in later] == [10]
    assert [r["n"] for r in c.table("t").select("n").gt("u", ids[0].upper()).execute().data] == [10, 100]


def test_the_max_rows_cap_silently_truncates_limit(db, client):
    assert len(client.table("feedback").select("id").limit(5000).execute().data) == 1000
    assert len(client.table("feedback").select("id").execute().data) == 1000
    assert rest(db, "feedback?select=id&limit=5000").status_code == 200
    db.max_rows = None
    assert len(client.table("feedback").select("id").execute().data) == ROWS


def test_exact_count_content_range_and_statuses(db, client):
    resp = client.table("feedback").select("id", count="exact").gt("id", 500).order("id").limit(10).execute()
    assert resp.count == ROWS - 500 and [r["id"] for r in resp.data] == list(range(501, 511))
    assert db.requests[-1].status == 206

    r = rest(db, "feedback?select=id&id=lte.3", headers={"Prefer": "count=exact"})
    assert (r.status_code, r.headers["content-range"]) == (200, "0-2/3")
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    r = rest(db, "feedback?select=id&offset=10&limit=5")
    assert (r.status_code, r.headers["content-range"]) == (200, "10-14/*")
    r = rest(db, "feedback?select=id&id=gt.99999")
    assert (r.status_code, r.headers["content-range"], r.json()) == (200, "*/*", [])
    r = rest(db, "feedback?select=id&id=gt.99999", headers={"Prefer": "count=exact"})
    assert (r.status_code, r.headers["content-range"]) == (200, "*/0")
    r = rest(db, "feedback?select=id&offset=5000")
    assert (r.status_code, r.headers["content-range"]) == (200, "*/*")

    with pytest.raises(postgrest.APIError) as err:
        client.table("feedback").select("id", count="exact").range(3000, 3009).execute()
    assert err.value.code == "PGRST103" and err.value.message == "Requested range not satisfiable"
    assert db.requests[-1].status == 416


def test_keyset_paging_on_a_non_unique_key_returns_every_row_once(db, client):
    seen, last = [], None
    while True:
        q = client.table("feedback").select("id,created_at").order("created_at").order("id").limit(1000)
        if last:
            q = q.or_(f"created_at.gt.{last['created_at']},and(created_at.eq.{last['created_at']},id.gt.{last['id']})")
        page = q.execute().data
        if not page:
            break
        seen.extend(page)
        last = page[-1]
    assert [r["id"] for r in seen] == list(range(1, ROWS + 1))
    assert len(db.requests) == 4  # three pages and the empty one


def test_keyset_pages_scan_less_than_deep_offsets(db):
    """The index model: a keyset page starts at its bound, an offset page walks the skipped rows."""
    import supaserver_query as q

    table = db.tables["feedback"]
    keyset = q.execute(
        table,
        q.parse_query(table, {"id": ["gt.2000"], "order": ["id.asc"], "limit": ["100"]}),
        visible=True,
        max_rows=1000,
        count=False,
    )
    offset = q.execute(
        table,
        q.parse_query(table, {"offset": ["2000"], "order": ["id.asc"], "limit": ["100"]}),
        visible=True,
        max_rows=1000,
        count=False,
    )
    assert keyset.rows == offset.rows and len(keyset.rows) == 100
    assert keyset.scanned <= 101 and offset.scanned == 2100  # the bound row itself may be looked at


# ------------------------------------------------------------------------------------------------ errors


def test_key_errors_use_the_gateway_bodies(db):
    r = rest(db, "feedback?select=id", key=None)
    assert r.status_code == 401 and r.json() == {
        "message": "No API key found in request",
        "hint": "No `apikey` request header or url param was found.",
    }
    forged = make_jwt({"role": "service_role"})[:-4] + "abcd"
    with pytest.raises(postgrest.APIError) as err:
        client_for(db, forged).table("feedback").select("id").execute()
    assert (err.value.message, err.value.code) == ("Invalid API key", None)
    assert err.value.hint == "Double check your Supabase `anon` or `service_role` API key."
    assert db.requests[-1].status == 401
    # the header name is case-insensitive, and the key may come as a URL parameter
    assert rest(db, "feedback?select=id&limit=1", key=None, headers={"APIKEY": db.service_key}).status_code == 200
    assert rest(db, f"feedback?select=id&limit=1&apikey={db.service_key}", key=None).json() == [{"id": 1}]


def test_missing_table_bad_column_bad_value_and_bad_filter(db, client):
    with pytest.raises(postgrest.APIError) as err:
        client.table("feedbak").select("id").execute()
    assert err.value.code == "PGRST205"
    assert err.value.message == "Could not find the table 'public.feedbak' in the schema cache"
    assert db.requests[-1].status == 404
    db.postgrest_version = 12
    with pytest.raises(postgrest.APIError) as err:
        client.table("feedbak").select("id").execute()
    assert (err.value.code, err.value.message) == ("42P01", 'relation "public.feedbak" does not exist')
    db.postgrest_version = 13
    with pytest.raises(postgrest.APIError) as err:
        client.table("feedback").select("id,labell").execute()
    assert (err.value.code, err.value.message) == ("42703", "column feedback.labell does not exist")
    assert db.requests[-1].status == 400
    with pytest.raises(postgrest.APIError) as err:
        client.table("feedback").select("id").order("nope").execute()
    assert err.value.code == "42703"
    with pytest.raises(postgrest.APIError) as err:
        client.table("feedback").select("id").eq("id", "abc").execute()
    assert (err.value.code, err.value.message) == ("22P02", 'invalid input syntax for type bigint: "abc"')
    with pytest.raises(postgrest.APIError) as err:
        client.table("feedback").select("id").filter("id", "between", "1").execute()
    assert err.value.code == "PGRST100"
    with pytest.raises(postgrest.APIError) as err:
        client.table("feedback").select("id").gt("created_at", "yesterday-ish").execute()
    assert err.value.code == "22007"


def test_the_anon_key_sees_empty_tables_under_rls(db):
    anon = client_for(db, db.anon_key)
    resp = anon.table("feedback").select("id", count="exact").execute()
    assert (resp.data, resp.count) == ([], 0)
    with pytest.raises(postgrest.APIError):  # a bad column is still reported: RLS hides rows, not the schema
        anon.table("feedback").select("nope").execute()


def test_single_and_head(db, client):
    assert client.table("feedback").select("id").eq("id", 5).single().execute().data == {"id": 5}
    r = httpx.head(
        f"{db.url}/rest/v1/feedback?select=id&id=lte.3", headers={"apikey": db.service_key, "Prefer": "count=exact"}
    )
    assert (r.status_code, r.headers["content-range"], r.content) == (200, "0-2/3", b"")


# ------------------------------------------------------------------------------------------------ storage


def test_storage_download_public_url_and_errors(supabase_server):
    server = supabase_server
    url = server.add_object("photos", "farm 1/a.jpg", b"\xff\xd8jpeg-bytes")
    server.add_object("private", "b.png", b"png-bytes", "image/png", public=False)
    c = client_for(server)
    assert c.storage.from_("photos").download("farm 1/a.jpg") == b"\xff\xd8jpeg-bytes"
    assert c.storage.from_("private").download("b.png") == b"png-bytes"
    assert url == c.storage.from_("photos").get_public_url("farm 1/a.jpg").rstrip("?")
    r = httpx.get(url)  # no key at all
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"\xff\xd8jpeg-bytes", "image/jpeg")
    auth = {"apikey": server.service_key, "Authorization": f"Bearer {server.service_key}"}
    r = httpx.get(f"{server.url}/storage/v1/object/authenticated/private/b.png", headers=auth)
    assert (r.status_code, r.headers["content-type"]) == (200, "image/png")

    with pytest.raises(StorageApiError) as err:
        c.storage.from_("photos").download("missing.jpg")
    assert (err.value.status, err.value.code, err.value.message) == ("404", "not_found", "Object not found")
    assert server.requests[-1].status == 400
    assert httpx.get(server.public_url("photos", "missing.jpg")).json() == {
        "statusCode": "404",
        "code": "NoSuchKey",
        "error": "not_found",
        "message": "Object not found",
    }
    assert httpx.get(server.public_url("private", "b.png")).json()["code"] == "NoSuchBucket"
    with pytest.raises(StorageApiError) as err:
        c.storage.from_("nobucket").download("x.jpg")
    assert err.value.status == "404" and server.requests[-1].status == 400
    bad = {"apikey": server.service_key, "Authorization": "Bearer not-a-token"}
    r = httpx.get(f"{server.url}/storage/v1/object/private/b.png", headers=bad)
    assert r.status_code == 400 and r.json()["statusCode"] == "403" and r.json()["code"] == "AccessDenied"
    assert httpx.get(f"{server.url}/storage/v1/object/private/b.png").status_code == 401
    with pytest.raises(StorageApiError):  # storage.objects RLS hides private objects from anon
        client_for(server, server.anon_key).storage.from_("private").download("b.png")


def test_signed_urls(supabase_server):
    supabase_server.add_object("private", "b.png", b"png", "image/png", public=False)
    signed = client_for(supabase_server).storage.from_("private").create_signed_urls(["b.png", "nope.png"], 60)
    assert signed[0]["error"] is None and httpx.get(signed[0]["signedURL"]).content == b"png"
    assert signed[1]["signedURL"] is None and signed[1]["error"]
    tampered = signed[0]["signedURL"][:-3] + "xyz"
    assert httpx.get(tampered).json()["code"] == "InvalidJWT"


# ------------------------------------------------------------------------------------------------ faults


def test_injected_errors_are_seeded_and_roughly_as_configured(db):
    def statuses(seed):
        db.faults = Faults(seed=seed, error_rate=0.3, error_statuses=(503, 429, 500))
        with httpx.Client(headers={"apikey": db.service_key}) as http:
            return [http.get(f"{db.url}/rest/v1/feedback?select=id&limit=1").status_code for _ in range(200)]

    first = statuses(7)
    assert statuses(7) == first  # the same seed and requests give the same answers
    assert statuses(8) != first
    errors = [s for s in first if s != 200]
    assert 0.2 < len(errors) / len(first) < 0.4
    assert set(errors) == {503, 429, 500}
    body = next(r for r in db.requests if r.status == 503)
    assert body.fault == "error"
    with pytest.raises(postgrest.APIError) as err:  # injected 503s look like PostgREST's own
        db.faults = Faults(error_rate=1.0)
        client_for(db).table("feedback").select("id").execute()
    assert err.value.code == "PGRST002"


def test_dropped_and_truncated_answers_raise_transport_errors(db):
    auth = {"apikey": db.service_key}
    db.faults = Faults(drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{db.url}/rest/v1/feedback?select=id", headers=auth)
    assert db.requests[-1].fault == "drop" and db.requests[-1].status == 0
    db.faults = Faults(truncate_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{db.url}/rest/v1/feedback?select=id", headers=auth)
    assert db.requests[-1].fault == "truncate"
    with pytest.raises(httpx.TransportError):  # through the client too, without its retry
        client_for(db).table("feedback").select("id").execute()
    db.faults = Faults(drop_rate=1.0, paths=("/storage/",))  # faults only where asked
    assert httpx.get(f"{db.url}/rest/v1/feedback?select=id&limit=1", headers=auth).status_code == 200


def test_drop_rate_statistics(db):
    db.faults = Faults(seed=3, drop_rate=0.1)
    outcomes = []
    with httpx.Client(headers={"apikey": db.service_key}) as http:
        for _ in range(200):
            try:
                outcomes.append(http.get(f"{db.url}/rest/v1/feedback?select=id&limit=1").status_code)
            except httpx.TransportError:
                outcomes.append(0)
    assert 0.04 < outcomes.count(0) / 200 < 0.18 and set(outcomes) == {0, 200}


def test_delay_slow_answers_and_corrupt_objects(supabase_server):
    server = supabase_server
    url = server.add_object("photos", "a.jpg", b"\xff\xd8\xff\xe0" + bytes(range(200)))
    server.faults = Faults(delay_s=0.03, paths=("/rest/",))
    assert httpx.get(url).status_code == 200
    assert server.requests[-1].delay_s == 0.03  # latency applies to every path, not only faults.paths
    server.faults = Faults(seed=5, slow_rate=0.5, slow_s=0.01)
    for _ in range(40):
        httpx.get(url)
    slow = [r for r in server.requests[-40:] if r.fault == "slow"]
    assert 10 < len(slow) < 30 and all(r.delay_s == 0.01 for r in slow)
    server.faults = Faults(corrupt_objects=True)
    corrupt = httpx.get(url).content
    assert len(corrupt) == 204 and corrupt[:4] != b"\xff\xd8\xff\xe0" and corrupt[64:] == bytes(range(60, 200))


def test_request_log_and_connection_reuse_under_concurrency(db):
    client_for(db).table("feedback").select("id").limit(1).execute()
    log = db.requests[-1]
    assert (log.method, log.path, log.query["select"], log.query["limit"]) == (
        "GET",
        "/rest/v1/feedback",
        ["id"],
        ["1"],
    )
    assert log.headers["apikey"] == db.service_key and log.headers["authorization"] == f"Bearer {db.service_key}"
    assert log.headers["accept-profile"] == "public" and log.client[0] == "127.0.0.1"

    db.requests.clear()
    db.faults = Faults(delay_s=0.05)
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(headers={"apikey": db.service_key}, limits=limits) as http:

        def get(i):
            return http.get(f"{db.url}/rest/v1/feedback?select=id&id=eq.{i}").json()

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(get, range(1, 97)))
    assert results == [[{"id": i}] for i in range(1, 97)]
    ports = {r.client[1] for r in db.requests}
    assert len(db.requests) == 96 and len(ports) <= 16  # keep-alive: connections were reused


# ------------------------------------------------------------------------------------------------ image host


def test_image_host_serves_files_and_logs_headers(image_host):
    url = image_host.add("/farm/a.jpg", b"jpeg", "image/jpeg")
    image_host.add_redirect("/r.jpg", url)
    r = httpx.get(url)
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"jpeg", "image/jpeg")
    assert "apikey" not in image_host.requests[-1].headers and "authorization" not in image_host.requests[-1].headers
    assert httpx.get(image_host.url + "/missing.jpg").status_code == 404
    assert httpx.get(image_host.url + "/r.jpg", follow_redirects=True).content == b"jpeg"
    image_host.faults = Faults(drop_rate=1.0)  # every path of the image host: `paths` is for Supabase routes
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)


# ------------------------------------------------------------------------------------------------ data changes


def test_rows_change_between_requests_and_deep_offsets_can_time_out(db, client):
    assert db.update_rows("feedback", {"id": 3}, {"label": "changed"}) == 1
    assert client.table("feedback").select("label").eq("id", 3).execute().data == [{"label": "changed"}]
    assert db.delete_rows("feedback", {"confirmed": True}) == ROWS // 2
    assert len(db.rows("feedback")) == ROWS // 2
    assert all(r["id"] % 2 for r in client.table("feedback").select("id").order("id").execute().data)

    db.statement_timeout_rows = 500
    assert len(client.table("feedback").select("id").gt("id", 2000).order("id").limit(100).execute().data) == 100
    with pytest.raises(postgrest.APIError) as err:
        client.table("feedback").select("id").order("id").range(1000, 1099).execute()
    assert err.value.code == "57014" and db.requests[-1].status == 500


def test_explicit_column_types(supabase_server):
    supabase_server.add_table("t", ["id", "note"], types={"id": "integer"})
    supabase_server.add_rows("t", [{"id": 1, "note": "10"}, {"id": 2, "note": "9"}])
    c = client_for(supabase_server)
    assert c.table("t").select("id").gt("note", "5").execute().data == [{"id": 2}]  # text compares as text
    with pytest.raises(postgrest.APIError) as err:
        c.table("t").select("id").eq("id", "1.5").execute()
    assert err.value.message == 'invalid input syntax for type integer: "1.5"'
    with pytest.raises(ValueError, match="no columns"):
        supabase_server.add_rows("t", [{"id": 3, "extra": 1}])


def test_more_of_the_query_grammar(supabase_server):
    supabase_server.add_rows(
        "t",
        [
            {"id": 1, "name": "a,b", "tag": "x"},
            {"id": 2, "name": "Leaf", "tag": None},
            {"id": 3, "name": "leaf blight", "tag": "y"},
        ],
    )

    def ids(query):
        r = rest(supabase_server, f"t?{query}")
        assert r.status_code == 200, r.text
        return [row.get("id", row.get("key")) for row in r.json()]

    assert ids('select=id&name=in.("a,b",Leaf)') == [1, 2]
    assert ids("select=id&name=not.in.(Leaf)&order=id.desc") == [3, 1]
    assert ids("select=id&name=ilike.leaf*") == [2, 3]
    assert ids("select=id&name=like.*eaf") == [2]
    assert ids("select=id&tag=not.eq.x") == [3]  # NULL is neither equal nor unequal
    assert ids("select=id&tag=is.not_null&or=(id.eq.1,not.and(id.gte.2,tag.eq.y))") == [1]
    assert ids("select=key:id&id=gte.3") == [3]
    assert rest(supabase_server, "t?select=key:id::text&id=gte.3").json() == [{"key": "3"}]
    for bad, code in [
        ("order=id.sideways", "PGRST100"),
        ("limit=ten", "PGRST100"),
        ("or=id.eq.1", "PGRST100"),
        ("name=eq", "PGRST100"),
        ("select=id,other(*)", "PGRST200"),
        ("id=like.1*", "42883"),
    ]:
        r = rest(supabase_server, f"t?{bad}")
        assert (r.status_code, r.json()["code"]) == (400, code), bad
    r = rest(supabase_server, "t", headers={"Accept-Profile": "private"})
    assert (r.status_code, r.json()["code"]) == (406, "PGRST106")
