"""Load check of ``pulmo serve`` on loopback: requests per second and p50/p95 latency per
endpoint and per capability, written to ``results/serve.md``.

Starts ``pulmo serve`` as a separate process on 127.0.0.1 (fresh storage, SQLite), then
runs bounded loops from this process (each a fixed count, and stopped at ``--max-seconds``):

- ``GET /health``, one client;
- a rejected upload (415, a text file), one client: the cost of the checks alone;
- lung sounds: ``--analyses`` synthetic recordings of ``--seconds`` s submitted by
  ``--clients`` threads, each polling until done; latency is upload to result;
- respiratory rate, chest X-ray and detection: ``--single`` uploads each of their bundled
  demo sample, one at a time.
The first analysis of each capability (model load) is timed and reported apart.

    python benchmarks/serve_load.py --analyses 30 --clients 4 --workers 2

:func:`replica_rows` compares one replica of two workers with two replicas of one worker
sharing one PostgreSQL database and storage folder, under the same client load; it is the
service section of ``results/speed.md`` (``python benchmarks/speed.py --tasks serve``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def request(method: str, url: str, body: bytes | None = None, ctype: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype} if ctype else {})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def multipart(name: str, data: bytes, task: str | None = None) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    field = f'--{b}\r\nContent-Disposition: form-data; name="task"\r\n\r\n{task}\r\n'.encode() if task else b""
    body = field + (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def samples() -> list[tuple[str, str, str, bytes]]:
    """The other capabilities, each on a sample it answers: ``(task, file name, what it is, bytes)``.
    The chest X-ray sample is a synthetic film the chest gate accepts (the bundled demo drawing
    is refused before the model, so it would time a refusal)."""
    from pulmo.cxr.synthetic import chest_phantom_image

    assets = ROOT / "src" / "pulmo" / "assets"
    chest = io.BytesIO()
    chest_phantom_image(256).save(chest, format="PNG")
    return [("resp-rate", "demo_breath.flac", "demo breath recording", (assets / "demo_breath.flac").read_bytes()),
            ("cxr", "chest_phantom.png", "synthetic chest X-ray", chest.getvalue()),
            ("detect", "demo_body_scan_16bit.png", "demo 16-bit body scan",
             (assets / "demo_body_scan_16bit.png").read_bytes())]


def recording(seconds: float, seed: int, rate: int = 4000) -> bytes:
    """Synthetic breath-like sound, FLAC-encoded: noise below 500 Hz whose level rises and falls
    at 15 breaths/min (what the front door takes for a recording), with a few clicks."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    breathing = 0.15 + 0.85 * np.sin(np.pi * 0.25 * np.arange(n) / rate) ** 2
    x = sosfilt(butter(4, 500.0, fs=rate, output="sos"), rng.standard_normal(n)) * breathing
    x = (0.3 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)
    x[rng.integers(0, n, 20)] += 0.5
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="FLAC")
    return buf.getvalue()


def percentiles(ms: list[float]) -> tuple[float, float]:
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def loop(n: int, max_s: float, fn) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    """Call ``fn()`` up to ``n`` times (stopping at ``max_s``); returns latencies (ms) and wall (s)."""
    out, t0 = [], time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t))
        if time.perf_counter() - t0 > max_s:
            break
    return out, time.perf_counter() - t0


def analyse(base: str, data: bytes, name: str, task: str | None = None) -> tuple[float, float]:
    """Upload and poll until done: ``(ms to 202, ms to result)``."""
    body, ctype = multipart(name, data, task)
    t0 = time.perf_counter()
    status, out = request("POST", base + "/analyses", body, ctype)
    if status != 202:
        raise RuntimeError(f"upload refused: {status} {out[:200]!r}")
    accepted = 1000 * (time.perf_counter() - t0)
    analysis_id = json.loads(out)["id"]
    while True:
        row = json.loads(request("GET", f"{base}/analyses/{analysis_id}")[1])
        if row["status"] == "done":
            return accepted, 1000 * (time.perf_counter() - t0)
        if row["status"] == "failed":
            raise RuntimeError(row["error"])
        time.sleep(0.02)


def start_service(storage: str, workers: int, db: str | None = None, threads: int = 1) -> tuple[subprocess.Popen, str]:
    """``pulmo serve`` in its own process on a free loopback port (``OMP_NUM_THREADS`` from the
    environment, else ``threads``); returns the process and its base URL once ``/health`` answers."""
    from pulmo.serve.localpg import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    cmd = [sys.executable, "-m", "pulmo.cli", "serve", "--port", str(port), "--storage", storage, "--workers",
           str(workers), *(["--db", db] if db else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if request("GET", base + "/health")[0] == 200:
                return proc, base
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("pulmo serve did not start")


Timings = list[tuple[float, float]]  # (ms to 202, ms to result) per finished analysis


def busy_clients(bases: list[str], datas: list[bytes], clients: int, max_s: float) -> tuple[Timings, float]:
    """``clients`` threads upload ``datas`` (recording ``i`` to ``bases[i % len(bases)]``) and
    poll each until done, stopping new uploads after ``max_s``. Returns ``(ms to 202, ms to
    result)`` per finished analysis, and the wall time (s)."""
    t0 = time.perf_counter()
    stop_at = t0 + max_s
    done: Timings = []
    lock = threading.Lock()

    def one(i: int) -> None:
        if time.perf_counter() > stop_at:
            return
        r = analyse(bases[i % len(bases)], datas[i], f"rec{i}.flac")
        with lock:
            done.append(r)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(len(datas))))
    return done, time.perf_counter() - t0


# Replicas against workers, under the same client load: (name, service processes, worker threads each).
REPLICA_SETUPS = (("1 replica x 2 workers", 1, 2), ("2 replicas x 1 worker", 2, 1))


@contextmanager
def replica_set(admin_url: str, name: str, replicas: int, workers: int,
                threads: int) -> Iterator[tuple[str, list[str]]]:
    """``replicas`` service processes of ``workers`` workers sharing a new database on the
    PostgreSQL server at ``admin_url`` and one new storage folder; yields ``(database URL, base URLs)``."""
    from sqlalchemy import create_engine, text

    db = "pulmo_" + "".join(c if c.isalnum() else "_" for c in name)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {db}"))
    admin.dispose()
    url = admin_url.rsplit("/", 1)[0] + "/" + db
    storage = tempfile.mkdtemp(prefix="pulmo-replicas-")
    started: list[tuple[subprocess.Popen, str]] = []
    try:
        for _ in range(replicas):
            started.append(start_service(storage, workers, url, threads))
        yield url, [base for _, base in started]
    finally:
        for proc, _ in started:
            proc.terminate()
            proc.wait(timeout=60)


def claims(url: str) -> tuple[Counter[str], Counter[str], set[str]]:
    """From the service database at ``url``: claims per analysis ('start' rows of the audit
    trail), analyses per status, and the replicas that finished analyses."""
    from sqlalchemy import create_engine, select

    from pulmo.serve.db import analyses, audit

    engine = create_engine(url)
    with engine.connect() as conn:
        starts = Counter(conn.execute(select(audit.c.analysis_id).where(audit.c.action == "start")).scalars())
        statuses = Counter(conn.execute(select(analyses.c.status)).scalars())
        finishers = set(conn.execute(select(analyses.c.claimed_by).where(analyses.c.status == "done")).scalars())
    engine.dispose()
    return starts, statuses, finishers


def warm_up(url: str, bases: list[str], data: bytes, replicas: int, tries: int = 6) -> None:
    """Send analyses until every replica has finished one (each loads its model on its first)."""
    for _ in range(tries):
        with ThreadPoolExecutor(len(bases)) as pool:
            list(pool.map(lambda base: analyse(base, data, "warmup.flac"), bases))
        if len(claims(url)[2]) >= replicas:
            return
    raise RuntimeError("a replica never took an analysis while warming up")


def replica_rows(analyses: int = 30, clients: int = 4, seconds: float = 10.0, rounds: int = 3, threads: int = 1,
                 max_s: float = 240.0) -> list[dict[str, Any]]:
    """One row per :data:`REPLICA_SETUPS` entry, all on one throwaway PostgreSQL cluster (a
    database and a storage folder per set-up): ``rounds`` times, each set-up in turn gets
    ``analyses`` recordings of ``seconds`` s from ``clients`` client threads (spread over its
    replicas); throughput is the median over rounds, latency (upload to result) pooled. Then
    each database shows how many analyses were claimed more than once (``run_twice``) and how
    many have no result (``lost``), warm-up analyses included."""
    from pulmo.serve.localpg import local_postgres

    datas = [recording(seconds, i + 1) for i in range(analyses)]
    with local_postgres() as admin_url, ExitStack() as stack:
        sets = [(name, n, w, *stack.enter_context(replica_set(admin_url, name, n, w, threads)))
                for name, n, w in REPLICA_SETUPS]
        for _, n, _, url, bases in sets:
            warm_up(url, bases, recording(seconds, 0), n)
        timed: dict[str, list[tuple[Timings, float]]] = {name: [] for name, *_ in sets}
        for _ in range(rounds):
            for name, _, _, _, bases in sets:
                timed[name].append(busy_clients(bases, datas, clients, max_s))
        rows = []
        for name, n, w, url, _ in sets:
            starts, statuses, finishers = claims(url)
            total = [t for finished, _ in timed[name] for _, t in finished]
            per_s = [len(finished) / wall for finished, wall in timed[name]]
            rows.append({"service": name, "replicas": n, "workers_per_replica": w, "clients": clients,
                         "rounds": rounds, "per_round": analyses, "recording_s": seconds,
                         "analyses": len(total), "analyses_per_s": round(float(np.median(per_s)), 3),
                         "rounds_per_s": " / ".join(f"{x:.2f}" for x in per_s),
                         "p50_ms": round(percentiles(total)[0], 1), "p95_ms": round(percentiles(total)[1], 1),
                         "run_twice": sum(k > 1 for k in starts.values()),
                         "lost": sum(statuses.values()) - statuses["done"],
                         "replicas_that_finished": len(finishers)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--analyses", type=int, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--single", type=int, default=5, help="analyses sent one at a time (latency without queueing)")
    ap.add_argument("--workers", type=int, default=2, help="analysis worker threads of the service")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each synthetic recording")
    ap.add_argument("--light", type=int, default=200, help="requests in the /health and rejected-upload loops")
    ap.add_argument("--max-seconds", type=float, default=240.0, help="stop any loop after this long")
    ap.add_argument("--out", default=str(ROOT / "results" / "serve.md"))
    args = ap.parse_args()

    from pulmo.engine.train import cpu_model_name

    wall0 = time.perf_counter()
    load0 = os.getloadavg()
    storage = tempfile.mkdtemp(prefix="pulmo-serve-load-")
    proc, base = start_service(storage, args.workers)
    rows = []
    try:
        startup_s = time.perf_counter() - wall0

        ms, wall = loop(args.light, args.max_seconds, lambda: request("GET", base + "/health"))
        rows.append(("GET /health", "-", len(ms), 1, len(ms) / wall, *percentiles(ms)))
        bad, ctype = multipart("notes.wav", b"not audio at all " * 100)
        ms, wall = loop(args.light, args.max_seconds, lambda: request("POST", base + "/analyses", bad, ctype))
        rows.append(("POST /analyses, rejected (415)", "-", len(ms), 1, len(ms) / wall, *percentiles(ms)))

        first = analyse(base, recording(args.seconds, 0), "warmup.flac")  # loads the model
        alone, wall = loop(args.single, args.max_seconds,
                           lambda: analyse(base, recording(args.seconds, 1000), "alone.flac"))
        rows.append((f"upload -> result ({args.seconds:.0f} s recording), one at a time", "lung-sounds", len(alone), 1,
                     len(alone) / wall, *percentiles(alone)))
        datas = [recording(args.seconds, i + 1) for i in range(args.analyses)]
        done, wall = busy_clients([base], datas, args.clients, args.max_seconds)
        accepted = [a for a, _ in done]
        total = [t for _, t in done]
        rows.append(("POST /analyses, accepted (202)", "lung-sounds", len(done), args.clients, float("nan"),
                     *percentiles(accepted)))
        rows.append((f"upload -> result ({args.seconds:.0f} s recording), all clients busy", "lung-sounds", len(done),
                     args.clients,
                     len(done) / wall, *percentiles(total)))
        firsts = {"lung-sounds": first[1]}
        for task, file, what, data in samples():
            firsts[task] = analyse(base, data, file, task)[1]  # loads the model
            ms, wall = loop(args.single, args.max_seconds, lambda: analyse(base, data, file, task)[1])
            rows.append((f"upload -> result ({what}), one at a time", task, len(ms), 1, len(ms) / wall, *percentiles(ms)))
        health = json.loads(request("GET", base + "/health")[1])
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    load1 = os.getloadavg()
    elapsed = time.perf_counter() - wall0

    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    lines = [
        "# pulmo serve: load check on loopback",
        "",
        f"Command: `{command}` ({elapsed:.0f} s wall). Service: `pulmo serve --workers {args.workers}` in its own "
        "process, SQLite, fresh storage; client threads in the benchmark's process; every loop bounded in count "
        f"and at {args.max_seconds:.0f} s.",
        f"Device: {cpu_model_name()}, 2 cores, no GPU. Load average (1/5/15 min) at start "
        f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, at end {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}"
        + (": other jobs shared these 2 cores, so these are lower bounds on what the service does on an idle machine."
           if max(load0[0], load1[0]) > 1.5 else "."),
        f"Service start to first `/health`: {startup_s:.1f} s. First analysis of each capability (includes loading "
        "its model): " + ", ".join(f"{task} {ms / 1000:.2f} s" for task, ms in firsts.items()) + ".",
        "",
        "| what | capability | n | clients | requests/s | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for what, cap, n, clients, rps, p50, p95 in rows:
        rate = "-" if rps != rps else f"{rps:.2f}"
        lines.append(f"| {what} | {cap} | {n} | {clients} | {rate} | {p50:.1f} | {p95:.1f} |")
    lines += [
        "",
        "Requests/s for `upload -> result` is analyses finished per second (one at a time, or with all clients busy, "
        "where latency includes waiting for a worker). Lung sounds runs on synthetic recordings of "
        f"{args.seconds:.0f} s; the other capabilities on one sample each (the bundled breath recording and body scan, a synthetic chest X-ray the chest gate accepts), one at a time. "
        f"Analyses recorded by the service at the end: {health['analyses']}.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
