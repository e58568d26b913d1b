"""``pulmo serve`` for real, on loopback: every endpoint, tokens on and off, every bad
input class, and what the database holds after a restart and after a kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import re
import time

import pytest

from pulmo.cli import main
from pulmo.frontdoor.capabilities import CAPABILITIES, capability_names
from pulmo.hashing import sha256_file
from pulmo.frontdoor.inputs import Limits
from pulmo.inference.bundled import ASSETS, default_checkpoint
from pulmo.data.audio_io import read_audio
from pulmo.data.segmentation import segment_cycles
from pulmo.serve.app import ServeSettings
from pulmo.serve.db import analyses, audit, tokens
from pulmo.serve.storage import Storage, TooLarge
from pulmo.serve.localpg import free_port
from tests.frontdoor_fixtures import (BlockingCapability, FakeImageCapability, chest_phantom, image_file, png,
                                     png_header_only, truncated, wav)
from tests.serve_helpers import (POSTGRES, LiveServer, announce_only, db_rows, fresh_db, http, multipart,
                                 serve_process)

DEMO = ASSETS / "demo_lung_sounds.flac"
LIMITS = Limits(max_upload_bytes=512 * 1024, max_audio_seconds=30.0)


@pytest.fixture(scope="module")
def extra_capabilities(tmp_path_factory):
    """A registry of lung sounds, a fake image capability and a blocking audio one, for this module."""
    ckpt = tmp_path_factory.mktemp("ckpt") / "fake.pt"
    ckpt.write_bytes(b"fake weights")
    capability_names()
    caps = {"image": FakeImageCapability(ckpt), "blocking": BlockingCapability(ckpt)}
    with pytest.MonkeyPatch.context() as mp:  # lung sounds and these two, whatever else has joined since
        mp.setattr(CAPABILITIES, "_items", {"lung-sounds": CAPABILITIES.get("lung-sounds"),
                                            **{cap.name: cap for cap in caps.values()}})
        yield caps


@pytest.fixture(scope="module")
def srv(tmp_path_factory, extra_capabilities):
    storage = tmp_path_factory.mktemp("serve")
    checkpoints = {"fake-image": str(extra_capabilities["image"].checkpoint_file)}
    with fresh_db(storage) as url, LiveServer(ServeSettings(storage, url, workers=2, limits=LIMITS,
                                                            checkpoints=checkpoints)) as server:
        server.storage, server.url = storage, url
        yield server


def test_migrations_build_exactly_the_tables_the_code_uses(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from pulmo.serve.db import make_engine, metadata, migrate

    with fresh_db(tmp_path) as url:
        migrate(url)
        migrate(url)  # a second start finds the schema current
        engine = make_engine(url)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
        engine.dispose()


def test_uploads_are_content_addressed_atomic_and_never_replaced(tmp_path):
    store = Storage(tmp_path)
    tmp, sha, size = store.spool([b"abc", b"def"], max_bytes=10)
    assert (sha, size) == (hashlib.sha256(b"abcdef").hexdigest(), 6) and tmp.parent == tmp_path / "tmp"
    final = store.commit(tmp, sha)
    assert final == tmp_path / "uploads" / sha[:2] / sha and final.read_bytes() == b"abcdef" and not tmp.exists()
    inode = final.stat().st_ino
    tmp2, sha2, _ = store.spool([b"abcdef"], max_bytes=10)
    assert store.commit(tmp2, sha2) == final and final.stat().st_ino == inode and not tmp2.exists()
    with pytest.raises(TooLarge):
        store.spool([b"x" * 8, b"y" * 8], max_bytes=10)
    assert not list((tmp_path / "tmp").iterdir())  # the partial file is gone


def test_health_page_openapi_and_one_analysis_end_to_end(srv):
    status, health = srv.get_json("/health")
    assert status == 200 and health["status"] == "ok" and health["database"] == ("postgresql" if POSTGRES else "sqlite")
    assert {"name": "lung-sounds", "kinds": ["audio"]} in health["capabilities"] and not health["token_required"]
    status, headers, page = srv.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'id="upload"' in page
    status, _, spec = srv.get("/openapi.json")
    assert status == 200 and "/analyses/{analysis_id}/report" in json.loads(spec)["paths"]

    body, ctype = multipart({"file": ("demo.flac", DEMO.read_bytes())}, {})
    status, headers, out = srv.request("POST", "/analyses", body=body, headers={"Content-Type": ctype})
    accepted = json.loads(out)
    assert status == 202 and accepted["status"] == "queued" and accepted["task"] == "lung-sounds"
    assert headers["location"] == f"/analyses/{accepted['id']}" and accepted["file"]["sha256"] == sha256_file(DEMO)

    done = srv.wait(accepted["id"])
    assert done["status"] == "done" and done["submitted_by"] == "local" and done["attempts"] == 1, done
    result = done["result"]
    assert result["model"]["sha256"] == sha256_file(default_checkpoint("lung-sounds"))
    assert "ICBHI score" in result["model"]["evaluation"]
    assert result["pulmo_version"] and result["input"]["name"] == "demo.flac"
    samples, rate = read_audio(DEMO)
    assert [[c["start_s"], c["end_s"]] for c in result["cycles"]] == [
        [round(a, 3), round(b, 3)] for a, b in segment_cycles(samples, rate).cycles]
    assert result["segmentation"] == "segmenter"  # no annotation travels with an upload: automatic cycles
    assert done["finished_at"].endswith("+00:00")

    status, headers, fig = srv.get(done["links"]["figures"]["timeline"])
    assert status == 200 and headers["content-type"] == "image/png" and fig.startswith(b"\x89PNG")
    status, headers, report = srv.get(done["links"]["report"])
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert result["headline"].encode() in report and b"data:image/png;base64," in report
    status, headers, _ = srv.get(done["links"]["report"] + "?download=1")
    assert headers["content-disposition"] == 'attachment; filename="pulmo-report-demo.html"'

    assert srv.get_json("/analyses/" + "0" * 32) == (404, {"error": "not_found", "detail": f"no analysis '{'0' * 32}'"})
    assert srv.get("/analyses/../../etc/passwd")[0] == 404
    assert srv.get(f"/analyses/{accepted['id']}/figures/nothing.png")[0] == 404

    again = srv.upload("copy of démo;'x'.flac", DEMO.read_bytes())[1]  # same bytes: stored once, never overwritten
    assert again["file"]["sha256"] == accepted["file"]["sha256"] and again["id"] != accepted["id"]
    stored = srv.storage / "uploads" / accepted["file"]["sha256"][:2] / accepted["file"]["sha256"]
    assert stored.read_bytes() == DEMO.read_bytes() and srv.wait(again["id"])["status"] == "done"
    status, headers, _ = srv.get(f"/analyses/{again['id']}/report?download=1")
    assert status == 200 and headers["content-disposition"] == 'attachment; filename="pulmo-report-copy_of_d_mo__x_.html"'


def test_every_bad_upload_gets_a_clear_4xx_and_an_audit_row(srv, tmp_path):
    good = wav(tmp_path / "good.wav", seconds=3.0)
    seen = len(db_rows(srv.url, audit))
    cases = [
        ("empty.wav", b"", None, 400, "empty"),
        ("notes.wav", b"just some text, not audio", None, 415, "wrong_type"),
        ("cut.wav", truncated(good, tmp_path / "cut.wav").read_bytes(), None, 400, "truncated"),
        ("head.wav", b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunkjunk", None, 400, "corrupt"),  # libsndfile names the path
        ("long.wav", wav(tmp_path / "long.wav", seconds=31.0).read_bytes(), None, 413, "too_long"),
        ("slow.wav", wav(tmp_path / "slow.wav", rate=2000).read_bytes(), "lung-sounds", 422, "sample_rate"),
        ("deep.png", png(tmp_path / "deep.png", mode="I;16").read_bytes(), None, 415, "no_capability"),  # a scan: detect
        ("bomb.png", png_header_only(tmp_path / "bomb.png", 9000, 9000).read_bytes(), None, 413, "too_many_pixels"),
        ("dot.png", png(tmp_path / "dot.png", (1, 1)).read_bytes(), None, 422, "too_small"),
        ("scan.png", png(tmp_path / "scan.png").read_bytes(), "lung-sounds", 415, "wrong_kind"),
        ("good.wav", good.read_bytes(), "no-such-task" * 20, 422, "unknown_task"),
        ("big.wav", os.urandom(LIMITS.max_upload_bytes + 1000), None, 413, "too_large"),  # past the limit, in the slack
    ]
    for name, data, task, status, code in cases:
        got_status, body = srv.upload(name, data, task)
        assert (got_status, body["error"]) == (status, code), (name, body)
        assert body["detail"] and (name in body["detail"] or code in ("too_large", "unknown_task")), body
        assert str(srv.storage) not in body["detail"] and "upload-" not in body["detail"], body  # no server path
    status, body = announce_only(srv.base, "/analyses", 10 * LIMITS.max_upload_bytes, "multipart/form-data; boundary=x")
    assert (status, body["error"]) == (413, "too_large")  # refused on Content-Length alone, before any byte is read
    status, _, out = srv.request("POST", "/analyses", body=good.read_bytes(), headers={"Content-Type": "audio/wav"})
    assert (status, json.loads(out)["error"]) == (415, "not_multipart")
    body, ctype = multipart({}, {"task": "lung-sounds"})
    status, _, out = srv.request("POST", "/analyses", body=body, headers={"Content-Type": ctype})
    assert (status, json.loads(out)["error"]) == (400, "no_file")

    rejected = [r for r in db_rows(srv.url, audit)[seen:] if r["action"] == "rejected"]
    refusals = ["too_large", "not_multipart", "no_file"]  # the three requests after the cases
    assert sorted(r["detail"].split(":")[0] for r in rejected) == sorted([c[4] for c in cases] + refusals)
    assert all(r["who"] == "local" and len(r["file_sha256"] or "x" * 64) == 64 for r in rejected)
    assert [r["status"] for r in rejected[-3:]] == ["413", "415", "400"]
    assert not any(str(srv.storage) in r["detail"] for r in rejected)
    assert not list((srv.storage / "tmp").iterdir())
    kept = {p.name for p in (srv.storage / "uploads").rglob("*") if p.is_file()}
    assert sha256_file(good) not in kept and sha256_file(tmp_path / "bomb.png") not in kept


def test_an_image_capability_joins_through_the_same_door(srv, tmp_path, extra_capabilities):
    chest = image_file(tmp_path / "scan.png", chest_phantom())  # routing by content knows only real tasks: name it
    status, accepted = srv.upload("scan.png", chest.read_bytes(), "fake-image")
    assert status == 202 and accepted["task"] == "fake-image"
    done = srv.wait(accepted["id"])
    assert done["status"] == "done" and done["result"]["headline"].startswith("mean grey level")
    assert done["result"]["checkpoint_given"] == str(extra_capabilities["image"].checkpoint_file)  # --checkpoint TASK=PATH
    assert srv.get(done["links"]["figures"]["grey"])[2].startswith(b"\x89PNG")


def test_tokens_required_hashed_and_recorded(tmp_path, capsys):
    with fresh_db(tmp_path / "s") as url:
        _tokens_required_hashed_and_recorded(tmp_path, capsys, url)


def _tokens_required_hashed_and_recorded(tmp_path, capsys, url):  # type: ignore[no-untyped-def]
    storage = tmp_path / "s"
    where = ["--storage", str(storage), "--db", url]
    assert main(["serve", "--host", "0.0.0.0", *where]) == 2
    assert "refusing to listen on 0.0.0.0 without API tokens" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", "lung-sounds", *where]) == 2
    assert "--checkpoint expects TASK=PATH" in capsys.readouterr().err
    assert main(["serve", *where, "tokens", "add", "alice"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("pulmo_") and len(token) > 40
    assert main(["serve", "tokens", "add", "alice", *where]) == 2
    assert "exists already" in capsys.readouterr().err
    stored = db_rows(url, tokens)
    assert [r["name"] for r in stored] == ["alice"]
    assert stored[0]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert all(token not in str(v) for r in stored for v in r.values())
    if not POSTGRES:
        assert token.encode() not in (storage / "pulmo.db").read_bytes()

    wav_bytes = wav(tmp_path / "a.wav").read_bytes()
    with LiveServer(ServeSettings(storage, url, require_token=True, limits=LIMITS)) as server:
        assert server.get_json("/health")[1]["token_required"] is True
        assert server.get("/")[0] == 200
        status, body = server.upload("a.wav", wav_bytes)
        assert (status, body["error"]) == (401, "token_required")
        status, body = server.upload("a.wav", wav_bytes, token="pulmo_wrong")
        assert (status, body["error"]) == (401, "bad_token")
        refused = [(r["who"], r["status"], r["detail"].split(":")[0]) for r in db_rows(url, audit)]
        assert refused == [("anonymous", "401", "token_required"), ("anonymous", "401", "bad_token")]
        status, accepted = server.upload("a.wav", wav_bytes, token=token)
        assert status == 202
        assert server.get(f"/analyses/{accepted['id']}")[0] == 401
        done = server.wait(accepted["id"], token=token)
        assert done["submitted_by"] == "alice" and done["status"] == "done"
        assert server.get(done["links"]["report"])[0] == 401 and server.get(done["links"]["report"], token)[0] == 200
        assert main(["serve", *where, "tokens", "revoke", "alice"]) == 0
        assert server.upload("a.wav", wav_bytes, token=token)[0] == 401
    assert {r["who"] for r in db_rows(url, audit) if r["analysis_id"] == accepted["id"]} == {"alice"}
    capsys.readouterr()
    assert main(["serve", *where, "tokens", "add", "boss", "--admin"]) == 0
    assert "admin token, reads every analysis" in capsys.readouterr().err
    assert main(["serve", *where, "tokens", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("alice~revoked") and "\tuser\t" in listed[0] and "revoked" in listed[0]
    assert listed[1].startswith("boss\tadmin\t") and listed[1].endswith("active")


def test_restart_requeues_what_was_running_and_keeps_results(tmp_path, extra_capabilities):
    with fresh_db(tmp_path) as url:
        _restart_requeues(tmp_path, extra_capabilities, url)


def _restart_requeues(tmp_path, extra_capabilities, url):  # type: ignore[no-untyped-def]
    blocker = extra_capabilities["blocking"]
    blocker.release.clear()
    blocker.started.clear()
    settings = ServeSettings(tmp_path, url, workers=1, limits=LIMITS, stop_timeout_s=0.2)
    data = wav(tmp_path / "a.wav").read_bytes()
    with LiveServer(settings) as first:
        finished = first.wait(first.upload("a.wav", data)[1]["id"])
        stuck = first.upload("a.wav", data, task="blocking-audio")[1]["id"]
        assert blocker.started.wait(30)
        t0 = time.monotonic()  # a long analysis blocks neither the API nor new uploads
        status, health = first.get_json("/health")
        assert status == 200 and health["analyses"] == {"done": 1, "running": 1} and time.monotonic() - t0 < 5
        waiting = first.upload("b.wav", data)
        assert waiting[0] == 202 and first.get_json(f"/analyses/{waiting[1]['id']}")[1]["status"] == "queued"
        stale_workers = list(first.app.state.runner._threads)
    row = {r["id"]: r for r in db_rows(url, analyses)}[stuck]
    assert (row["status"], row["attempts"]) == ("running", 1)  # as a service that died leaves it

    blocker.started.clear()
    with LiveServer(settings) as second:
        assert blocker.started.wait(30)  # picked up again by the new service
        blocker.release.set()  # frees the new worker and the stale one
        done = second.wait(stuck)
        for t in stale_workers:
            t.join(timeout=10)
        assert (done["status"], done["attempts"]) == ("done", 2)
        assert second.wait(waiting[1]["id"])["status"] == "done"  # queued when the first service stopped
        again = second.get_json(f"/analyses/{finished['id']}")[1]
        assert again["result"] == finished["result"] and second.get(again["links"]["report"])[0] == 200
    trail = [(r["action"], r["status"]) for r in db_rows(url, audit) if r["analysis_id"] == stuck]
    assert trail == [("submit", "queued"), ("start", "running"), ("requeued", "queued"), ("start", "running"),
                     ("done", "done")]
    assert [r["status"] for r in db_rows(url, analyses)] == ["done", "done", "done"]


def test_a_killed_service_loses_nothing(tmp_path):
    with fresh_db(tmp_path) as url:
        _killed_service_loses_nothing(tmp_path, url)


def _killed_service_loses_nothing(tmp_path, url):  # type: ignore[no-untyped-def]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    recording = wav(tmp_path / "short.wav", seconds=3.0)
    proc = serve_process(tmp_path, port, url, "--lease-seconds", "1")
    try:
        body, ctype = multipart({"file": ("short.wav", recording.read_bytes())}, {})
        status, _, out = http("POST", base + "/analyses", body=body, headers={"Content-Type": ctype})
        assert status == 202
        analysis_id = json.loads(out)["id"]
        seen = "queued"
        while seen == "queued":
            seen = json.loads(http("GET", f"{base}/analyses/{analysis_id}")[2])["status"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(1.5)  # the killed service's lease runs out: the next start re-queues its analysis
    proc = serve_process(tmp_path, port, url)
    try:
        deadline = time.monotonic() + 120
        while (row := json.loads(http("GET", f"{base}/analyses/{analysis_id}")[2]))["status"] != "done":
            assert time.monotonic() < deadline and row["status"] != "failed", row
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    started = re.findall(r"pulmo serve: [\w+]+; (\d+) analyses re-queued, \d+ partial uploads removed",
                         proc.stderr.read().decode())  # the service's own log reaches stderr under uvicorn
    assert started == [str(int(seen == "running"))]
    assert row["attempts"] == (2 if seen == "running" else 1), (seen, row)
    assert row["result"]["input"]["sha256"] == sha256_file(recording)
    actions = [r["action"] for r in db_rows(url, audit) if r["analysis_id"] == analysis_id]
    assert actions[0] == "submit" and actions[-1] == "done" and ("requeued" in actions) == (seen == "running")


def test_the_schema_shows_a_multipart_upload_typed_answers_and_one_error_shape(srv):
    spec = srv.get_json("/openapi.json")[1]
    post = spec["paths"]["/analyses"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    props = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]]["properties"] if "$ref" in form else form["properties"]
    assert props["file"].get("format") == "binary" or props["file"].get("contentMediaType") or "anyOf" in props["file"]
    assert "task" in props
    assert post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/AnalysisAccepted")
    assert {"400", "401", "413", "415", "422"} <= set(post["responses"])
    assert post["responses"]["415"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "get" in spec["paths"]["/analyses"] and "/analyses/{analysis_id}" in spec["paths"]
    for path, method, status, code in [("/no/such/route", "GET", 404, "not_found"), ("/health", "DELETE", 405,
                                        "method_not_allowed"), ("/analyses?limit=0", "GET", 422, "bad_parameter")]:
        got, _, body = srv.request(method, path)
        assert (got, set(json.loads(body)), json.loads(body)["error"]) == (status, {"error", "detail"}, code)


def test_api_docs_pages_load_their_scripts_from_the_service_itself(srv):
    import re

    for page in ("/docs", "/redoc"):
        status, _, html = srv.get(page)
        assert status == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.decode()) + re.findall(r"https?://[^\s\"'<>]+",
                                                                                          html.decode())
        external = [u for u in urls if u.startswith(("http://", "https://", "//"))]
        assert not external, f"{page} loads {external}"
        scripts = [u for u in urls if u.endswith(".js")]
        assert scripts and all(srv.get(u)[0] == 200 for u in scripts)


def test_listing_shows_a_caller_their_own_analyses_newest_first_with_paging(srv, tmp_path):
    recording = wav(tmp_path / "mine.wav", seconds=3.0).read_bytes()
    ids = [srv.upload(f"mine{i}.wav", recording, token=None)[1]["id"] for i in range(3)]
    for analysis_id in ids:
        srv.wait(analysis_id)
    status, page = srv.get_json("/analyses?limit=2")
    assert status == 200 and page["limit"] == 2 and len(page["items"]) == 2 and page["total"] >= 3
    assert [i["id"] for i in page["items"]] == ids[::-1][:2] and page["next"] == "/analyses?limit=2&offset=2"
    assert page["items"][0]["links"]["page"] == f"/?analysis={ids[-1]}" and page["items"][0]["headline"]
    rest = srv.get_json(page["next"])[1]
    assert ids[0] in [i["id"] for i in rest["items"]] and not set(i["id"] for i in rest["items"]) & set(ids[1:])
