"""Files kept by the service.

``uploads/ab/abcdef...`` holds each uploaded file under its SHA-256 (content-addressed):
written to a temporary file in the same file system, flushed to disk, then linked into
place with ``os.link``, which never replaces an existing file; the same content uploaded
twice is stored once. ``results/<analysis id>/`` holds each analysis's figures and report,
written atomically (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from pulmo.frontdoor.report import write_atomic


class TooLarge(Exception):
    """The stream went past ``max_bytes``."""


class Storage:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        for sub in ("uploads", "results", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # the root as written and as resolved (symbolic links followed), longest first, each
        # with whatever path follows it up to a space, quote, colon, comma or bracket
        roots = sorted({str(self.root), str(self.root.resolve())}, key=len, reverse=True)
        tail = r"""(?![\w.~-])(?:/[^\s'"`:,;()\[\]<>]*)?"""
        self._paths = re.compile("|".join(re.escape(r) + tail for r in roots))

    def scrub(self, message: str, name: str) -> str:
        """``message`` with every path in this storage (uploads, spooled files, the root
        itself) replaced by ``name``, the file name the user gave: what the service stores
        and answers never shows where it keeps files."""
        return self._paths.sub(lambda _: name, message)

    def upload_path(self, sha256: str) -> Path:
        return self.root / "uploads" / sha256[:2] / sha256

    def spool(self, chunks: Iterable[bytes], max_bytes: int) -> tuple[Path, str, int]:
        """Write ``chunks`` to a temporary file, hashing as it goes.

        Returns:
            ``(temporary path, sha256 hex, size in bytes)``; the caller either
            :meth:`commit` s or :meth:`discard` s the temporary file.

        Raises:
            TooLarge: more than ``max_bytes`` arrived (the partial file is removed).
        """
        h = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="upload-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(size)
                    h.update(chunk)
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, h.hexdigest(), size

    def commit(self, tmp: Path, sha256: str) -> Path:
        """Move a spooled file to its content address; an existing copy is kept, never replaced."""
        final = self.upload_path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return final

    @staticmethod
    def discard(tmp: Path) -> None:
        tmp.unlink(missing_ok=True)

    def result_dir(self, analysis_id: str) -> Path:
        return self.root / "results" / analysis_id

    def save_result_file(self, analysis_id: str, name: str, data: bytes) -> Path:
        """Write ``results/<analysis_id>/<name>`` atomically (``name`` may hold one sub-folder)."""
        path = self.result_dir(analysis_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)
        return path

    def clean_tmp(self, min_age_s: float = 3600.0) -> int:
        """Remove spooled files left by a service that died mid-upload: those untouched for
        ``min_age_s`` (another replica sharing this folder may be writing the newer ones).
        Returns how many."""
        n = 0
        cutoff = time.time() - min_age_s
        for p in (self.root / "tmp").iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink(missing_ok=True)
                    n += 1
            except FileNotFoundError:  # another replica removed it first
                pass
        return n
