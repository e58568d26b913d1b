"""``pulmo serve`` and ``pulmo serve tokens add|list|revoke``.

Importing this module does not import the web stack, so ``pulmo --help`` works without
the ``serve`` extra; running the service without it is a one-line error.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from pulmo.errors import ConfigError


def default_storage() -> Path:
    """``$PULMO_SERVE_DIR``, else ``~/.local/share/pulmo/serve``."""
    env = os.environ.get("PULMO_SERVE_DIR")
    return Path(env) if env else Path.home() / ".local" / "share" / "pulmo" / "serve"


def _common(p: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("--db", default=default, metavar="URL",
                   help="database URL (default: SQLite file STORAGE/pulmo.db; PostgreSQL: postgresql+psycopg://...)")
    p.add_argument("--storage", default=default, metavar="DIR",
                   help="uploads, figures, reports (default: $PULMO_SERVE_DIR or ~/.local/share/pulmo/serve)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` subparser's options and its ``tokens`` sub-commands."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (beyond loopback, tokens are required)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    p.add_argument("--workers", type=int, default=1, help="analysis worker threads")
    p.add_argument("--lease-seconds", type=float, default=30.0, metavar="S",
                   help="a running analysis is re-queued when its service (replica) has not renewed its claim for "
                        "this long (renewed every S/3 seconds)")
    p.add_argument("--require-token", action="store_true", help="require an API token on loopback too")
    p.add_argument("--checkpoint", action="append", default=[], metavar="TASK=PATH",
                   help="serve this checkpoint for TASK instead of the bundled model")
    p.add_argument("--runtime", choices=["torch", "onnx", "onnx-int8"], default=None,
                   help="run the models in PyTorch, or exported to ONNX in onnxruntime (lung sounds, chest X-ray and "
                        "detector; other tasks refuse; exports cached under ~/.cache/pulmo; default: $PULMO_RUNTIME or torch)")
    from pulmo.frontdoor.inputs import Limits

    defaults = Limits()
    p.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_bytes / 2**20, help="largest upload (MiB)")
    p.add_argument("--max-audio-seconds", type=float, default=defaults.max_audio_seconds, help="longest recording (s)")
    p.add_argument("--max-image-pixels", type=int, default=defaults.max_image_pixels,
                   help="largest image (pixels); the decoded-bytes and decoded-samples caps of docs/front-door.md also apply")
    _common(p, suppress=False)
    sub = p.add_subparsers(dest="serve_command")
    tok = sub.add_parser("tokens", help="manage API tokens (stored hashed)")
    tsub = tok.add_subparsers(dest="tokens_command", required=True)
    for name, helptext in (("add", "create a token and print it once"), ("revoke", "revoke a token")):
        t = tsub.add_parser(name, help=helptext)
        t.add_argument("name", help="who the token is for (recorded in the audit trail)")
        if name == "add":
            t.add_argument("--admin", action="store_true", help="may read every analysis (others read only their own)")
        _common(t, suppress=True)
    _common(tsub.add_parser("list", help="list token names (never the tokens)"), suppress=True)


def _storage_and_url(args: argparse.Namespace) -> tuple[Path, str]:
    from pulmo.serve.db import default_url

    storage = Path(args.storage) if args.storage else default_storage()
    storage.mkdir(parents=True, exist_ok=True)
    return storage, args.db or default_url(storage)


def _engine(url: str):  # type: ignore[no-untyped-def]
    from pulmo.serve.db import make_engine, migrate

    migrate(url)
    return make_engine(url)


def show_service_log() -> None:
    """Send the service's own INFO lines (logger ``pulmo.serve``: the start-up line, failed
    analyses with their full messages) to stderr, formatted like uvicorn's, which configures
    only its own loggers."""
    logger = logging.getLogger("pulmo.serve")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)


def large_buffers_from_mmap(threshold_bytes: int = 1 << 20) -> bool:
    """glibc only: serve allocations over ``threshold_bytes`` from mmap, so a large decoded
    recording or image goes back to the system when freed instead of staying in the heap
    (measured: 100-180 MB lower peaks in the service). Returns whether it took effect."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold_bytes))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def main(args: argparse.Namespace) -> int:
    try:
        import alembic  # noqa: F401
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn
    except ImportError as err:
        raise ConfigError(f"pulmo serve needs the serve extra ({err.name} is missing): pip install 'pulmo[serve]'") from None
    from pulmo.frontdoor.inputs import Limits
    from pulmo.serve import tokens
    from pulmo.serve.app import ServeSettings, create_app, is_loopback

    storage, url = _storage_and_url(args)
    if args.serve_command == "tokens":
        engine = _engine(url)
        if args.tokens_command == "add":
            print(tokens.add_token(engine, args.name, admin=args.admin))
            role = "admin token, reads every analysis" if args.admin else "reads only its own analyses"
            print(f"(token for {args.name!r}, {role}: shown once, stored hashed; send it as "
                  "'Authorization: Bearer <token>')", file=sys.stderr)
        elif args.tokens_command == "revoke":
            tokens.revoke_token(engine, args.name)
            print(f"revoked {args.name}")
        else:
            for row in tokens.list_tokens(engine):
                state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
                role = "admin" if row["admin"] else "user"
                print(f"{row['name']}\t{role}\tcreated {row['created_at']:%Y-%m-%d %H:%M}\t{state}")
        return 0

    if args.lease_seconds <= 0:
        raise ConfigError(f"--lease-seconds must be positive, got {args.lease_seconds}")
    checkpoints = {}
    for item in args.checkpoint:
        task, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise ConfigError(f"--checkpoint expects TASK=PATH to an existing file, got {item!r}")
        checkpoints[task] = path
    from pulmo.export import check_runtime, default_runtime

    for task in checkpoints:
        check_runtime(task, default_runtime())
    require = args.require_token or not is_loopback(args.host)
    if require and tokens.active_token_count(_engine(url)) == 0:
        raise ConfigError(f"refusing to listen on {args.host} without API tokens: create one with "
                          f"'pulmo serve --storage {storage} tokens add NAME' (or listen on 127.0.0.1)")
    limits = dataclasses.replace(Limits(), max_upload_bytes=int(args.max_upload_mb * 2**20),
                                 max_audio_seconds=args.max_audio_seconds, max_image_pixels=args.max_image_pixels)
    settings = ServeSettings(storage=storage, db_url=args.db, workers=args.workers, require_token=require,
                             limits=limits, checkpoints=checkpoints, lease_s=args.lease_seconds)
    show_service_log()
    app = create_app(settings)
    print(f"pulmo serve: http://{args.host}:{args.port}/ (database {url.split('://')[0]}, storage {storage}, "
          f"{args.workers} worker(s), runtime {default_runtime()}, tokens {'required' if require else 'optional'})",
          flush=True)
    large_buffers_from_mmap()
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
