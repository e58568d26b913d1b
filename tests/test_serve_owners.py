"""The service's hardening: an analysis belongs to the token that made it (admin tokens read
all), every refused request lands in the audit trail under a name, and no message shows
where the service keeps its files."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pulmo.errors import DataError
from pulmo.frontdoor.capabilities import CAPABILITIES, Analysis, capability_names
from pulmo.frontdoor.inputs import Limits
from pulmo.serve.app import ServeSettings
from pulmo.serve.db import audit, make_engine
from pulmo.serve.storage import Storage
from pulmo.serve.tokens import Caller, add_token, who_has
from tests.frontdoor_fixtures import FakeImageCapability, png, wav
from tests.serve_helpers import LiveServer, announce_only, chunked_upload, db_rows, fresh_db, multipart

LIMITS = Limits(max_upload_bytes=256 * 1024, max_audio_seconds=30.0)


class LeakyCapability:
    """An audio capability that fails the way a decoder does on a stored upload: its message
    names the content-addressed path, and the spooled temporary file beside it."""

    name = "leaky-audio"
    kinds = frozenset({"audio"})
    accepts_16bit_images = False
    options: tuple[str, ...] = ()

    def analyze(self, path: Path, checkpoint: str | None = None, options: Mapping[str, Any] | None = None) -> Analysis:
        spooled = path.parents[2] / "tmp" / "upload-k2j3h4"
        raise DataError(f"cannot read audio {path}: Error opening '{spooled}': Format not recognised.")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A service without required tokens, whose registry holds a fake image capability and
    the leaky one; tokens ``alice``, ``bob`` and the admin ``boss``."""
    ckpt = tmp_path_factory.mktemp("ckpt") / "fake.pt"
    ckpt.write_bytes(b"fake weights")
    capability_names()
    caps = [FakeImageCapability(ckpt), LeakyCapability()]
    storage = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp, fresh_db(storage) as url:
        mp.setattr(CAPABILITIES, "_items", {cap.name: cap for cap in caps})
        with LiveServer(ServeSettings(storage, url, limits=LIMITS)) as server:
            engine = make_engine(url)
            server.tokens = {name: add_token(engine, name, admin=name == "boss") for name in ("alice", "bob", "boss")}
            engine.dispose()
            server.storage, server.url = storage, url
            yield server


def audit_since(srv: LiveServer, seen: int) -> list[tuple[str, str, str]]:
    """``(who, status, code)`` of the audit rows after the first ``seen``."""
    return [(r["who"], r["status"], (r["detail"] or "").split(":")[0]) for r in db_rows(srv.url, audit)[seen:]]


def test_who_has_gives_the_name_and_the_admin_flag(srv):
    engine = make_engine(srv.url)
    assert who_has(engine, srv.tokens["alice"]) == Caller("alice", admin=False)
    assert who_has(engine, srv.tokens["boss"]) == Caller("boss", admin=True)
    assert who_has(engine, "pulmo_wrong") is None
    engine.dispose()
    assert Caller("boss", admin=True).may_read("alice") and not Caller("bob").may_read("alice")


def test_only_the_owner_and_an_admin_read_an_analysis(srv, tmp_path):
    alice, bob, boss = (srv.tokens[n] for n in ("alice", "bob", "boss"))
    status, accepted = srv.upload("scan.png", png(tmp_path / "scan.png").read_bytes(), "fake-image", alice)
    assert status == 202
    done = srv.wait(accepted["id"], token=alice)
    assert done["status"] == "done" and done["submitted_by"] == "alice"
    urls = [done["links"]["self"], done["links"]["report"], done["links"]["figures"]["grey"]]
    unknown = f"/analyses/{'0' * 32}"
    for token in (bob, None):  # another token, and a request without one ('local')
        for url in urls:
            status, _, body = srv.get(url, token)
            # the answer for an unknown id, word for word, so existence is not shown
            assert (status, body) == (404, srv.get(unknown, token)[2].replace(b"0" * 32, accepted["id"].encode()))
    assert [srv.get(url, alice)[0] for url in urls] == [200, 200, 200]
    assert [srv.get(url, boss)[0] for url in urls] == [200, 200, 200]

    local = srv.upload("scan.png", png(tmp_path / "scan.png").read_bytes(), "fake-image")[1]  # no token: 'local' owns it
    assert srv.wait(local["id"])["submitted_by"] == "local"
    assert srv.get(f"/analyses/{local['id']}", alice)[0] == 404 and srv.get(f"/analyses/{local['id']}", boss)[0] == 200


def test_every_refused_request_is_audited_with_a_name(srv, tmp_path):
    alice = srv.tokens["alice"]
    seen = len(db_rows(srv.url, audit))
    big = 10 * LIMITS.max_upload_bytes
    assert announce_only(srv.base, "/analyses", big, "multipart/form-data; boundary=x", token=alice)[0] == 413
    assert announce_only(srv.base, "/analyses", big, "multipart/form-data; boundary=x", token="pulmo_wrong")[0] == 413
    assert announce_only(srv.base, "/analyses", big, "multipart/form-data; boundary=x")[0] == 413
    assert chunked_upload(srv.base, "big.wav", os.urandom(2 * LIMITS.max_upload_bytes), alice)[0] == 413  # counted
    status, _, _ = srv.request("POST", "/analyses", alice, b"raw bytes", {"Content-Type": "audio/wav"})
    assert status == 415
    body, ctype = multipart({}, {"task": "leaky-audio"})
    assert srv.request("POST", "/analyses", alice, body, {"Content-Type": ctype})[0] == 400
    body, ctype = multipart({"file": ("a.wav", b"RIFF"), "task": ("task.txt", b"x")}, {})  # two files
    assert srv.request("POST", "/analyses", alice, body, {"Content-Type": ctype})[0] == 400
    assert srv.upload("a.wav", b"", token=alice)[0] == 400
    assert srv.upload("a.wav", b"RIFF", token="pulmo_wrong")[0] == 401
    assert srv.get(f"/analyses/{'0' * 32}", "pulmo_wrong")[0] == 401
    assert audit_since(srv, seen) == [
        ("alice", "413", "too_large"), ("anonymous", "413", "too_large"), ("local", "413", "too_large"),
        ("alice", "413", "too_large"),
        ("alice", "415", "not_multipart"), ("alice", "400", "no_file"), ("alice", "400", "bad_form"),
        ("alice", "400", "empty"), ("anonymous", "401", "bad_token"), ("anonymous", "401", "bad_token")]


def test_a_failed_analysis_shows_the_file_name_not_the_storage_path(srv, tmp_path, caplog):
    alice = srv.tokens["alice"]
    caplog.set_level(logging.INFO, logger="pulmo.serve")
    status, accepted = srv.upload("breath.wav", wav(tmp_path / "a.wav").read_bytes(), "leaky-audio", alice)
    assert status == 202
    failed = srv.wait(accepted["id"], token=alice)
    assert failed["status"] == "failed"
    assert failed["error"] == "cannot read audio breath.wav: Error opening 'breath.wav': Format not recognised."
    status, _, body = srv.get(failed["links"]["report"], alice)
    assert status == 409 and b"breath.wav" in body and str(srv.storage).encode() not in body
    trail = [r["detail"] or "" for r in db_rows(srv.url, audit) if r["analysis_id"] == accepted["id"]]
    assert trail and not any(str(srv.storage) in d or "upload-" in d for d in trail)
    # the server's own log keeps the full message
    assert any(str(srv.storage / "uploads") in r.getMessage() for r in caplog.records if r.name == "pulmo.serve")


def test_scrub_replaces_every_storage_path_and_nothing_else(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    store = Storage(tmp_path / "link")
    upload = store.upload_path("ab" * 32)
    message = (f"cannot read audio {upload}: Error opening '{tmp_path / 'real' / 'tmp' / 'upload-x_1'}' "
               f"(root {store.root}); {tmp_path / 'link2'}/y and /etc/passwd stay")
    assert store.scrub(message, "a.wav") == (f"cannot read audio a.wav: Error opening 'a.wav' (root a.wav); "
                                             f"{tmp_path / 'link2'}/y and /etc/passwd stay")
