"""Stage claims: one process trains (or restores) a stage at a time, whatever the executor.

A claim is an exclusive `flock` on <output.dir>/.claims/<key16>.lock, taken before a stage's directory
is touched and held until its done marker is written. The lock file also says who holds it (pid, the
process's start time, host, when) so that a waiting `w2s run` can tell the user what it waits for.

Why flock rather than an O_EXCL file judged stale by its pid: the kernel drops a flock when its holder
dies, SIGKILL included, so a dead holder never blocks anyone and there is nothing to break. Breaking a
stale O_EXCL file races (two waiters both find it stale; the second deletes the first's fresh claim),
and a pid can be reused. Lock files are never deleted: unlinking a lock file that another process has
open lets two processes lock two different inodes under one name. Over NFS (v4, or v3 with lockd)
Linux maps flock to byte-range locks, which the server drops when the client's lease expires; a
filesystem without locks is reported (ClaimError) instead of silently running unprotected.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path

_ME: dict | None = None


class ClaimError(RuntimeError):
    """The output directory's filesystem cannot hold a lock."""


def _me() -> dict:
    global _ME
    if _ME is None or _ME["pid"] != os.getpid():
        try:
            import psutil

            started = psutil.Process().create_time()
        except Exception:  # noqa: BLE001 - the start time is for humans only
            started = None
        _ME = {"pid": os.getpid(), "started": started, "host": socket.gethostname()}
    return _ME


class Claim:
    """A held claim; `release()` (idempotent) or process death lets the next process take it."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)        # no holder any more (the file itself stays, see above)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Claims:
    def __init__(self, output_dir: str | Path):
        self.dir = Path(output_dir) / ".claims"

    def path(self, key: str) -> Path:
        """Stage keys are hex digests (16 characters name one, as for stage dirs); other names are hashed."""
        name = key[:16] if all(c in "0123456789abcdef" for c in key) else hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.dir / f"{name}.lock"

    def take(self, key: str, what: str = "") -> Claim | None:
        """The claim on `key`, or None when another process (or another claim in this one) holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise ClaimError(f"cannot lock {path} ({e.strerror}): this filesystem does not support file locks, so "
                             f"concurrent `w2s run` processes could train a stage twice. Fix: put output.dir on a "
                             f"local disk or an NFS mount with locking (see docs/scale-out.md)") from e
        body = json.dumps({**_me(), "key": key, "what": what, "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, body, 0)
        return Claim(fd, path)

    def wait(self, key: str, what: str = "") -> Claim:
        """The claim on `key`, blocking until its holder releases it (or dies)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(key), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**_me(), "key": key, "what": what, "since": time.time()}).encode(), 0)
        return Claim(fd, self.path(key))

    def holder(self, key: str) -> dict | None:
        """Who holds `key` now ({pid, started, host, what, since}), or None if nobody does."""
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                try:                 # held: the holder wrote who it is right after locking
                    return json.loads(os.pread(fd, 4096, 0) or b"{}") or {"pid": "?", "host": "?"}
                except ValueError:
                    return {"pid": "?", "host": "?"}
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def describe(h: dict) -> str:
    since = h.get("since")
    ago = f", for {time.time() - since:.0f} s" if isinstance(since, (int, float)) else ""
    return f"pid {h.get('pid')} on {h.get('host')}{ago}"
