"""The console of `w2s run`: one line per stage (what, where, elapsed, the sweep's ETA), a progress bar
per stage on a terminal only, and library noise (transformers, HF Trainer logs, tqdm, DeepSpeed, MLflow,
Python warnings) captured into a run log, <output.dir>/logs/run-*.log, and into each stage's console.log
(<output.dir>/stages/<key16>/console.log, outside done.json's hashes) instead of the screen.

How: while stages run, file descriptors 1 and 2 point into pipes, so everything lands in the logs —
Python loggers created at import (they hold the old sys.stderr object, which writes to fd 2), warnings,
tqdm, C extensions and launched subprocesses alike; a thread per pipe drains it. The harness's own lines
still reach the screen: the rich console writes to a duplicate of the real stdout, and lines that start
`warning: `, `error: ` or `MLflow: ` (the harness's convention) are copied to the real stderr.
`--verbose` passes everything through as before (and still writes the logs); `--log-file` adds a copy.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import sys
import termios
import threading
import time
from pathlib import Path

PROMOTE = re.compile(rb"^(warning|error|MLflow): ")     # the harness's own messages: always on screen


def fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


class Tee:
    """Two pipes (stdout, stderr) drained into log files; stage segments collected while stages run."""

    def __init__(self, logs: list[Path], verbose: bool, out_fd: int, err_fd: int):
        self.files = [open(p, "ab") for p in logs]
        self.verbose, self.out_fd, self.err_fd = verbose, out_fd, err_fd
        self.lock = threading.Lock()
        self.segments: dict[str, bytearray] = {}
        self.pipes = [os.pipe(), os.pipe()]       # [(r, w) for stdout, (r, w) for stderr]
        self.threads = [threading.Thread(target=self._drain, args=(i,), daemon=True, name=f"w2s-tee-{i}")
                        for i in range(2)]
        self._partial = [b"", b""]
        self.closed = False
        for t in self.threads:
            t.start()

    def _drain(self, i: int) -> None:
        r = self.pipes[i][0]
        while True:
            try:
                data = os.read(r, 65536)
            except OSError:
                break
            if not data:
                break
            with self.lock:
                self._handle(i, data)

    def _handle(self, i: int, data: bytes) -> None:
        if self.closed:       # a daemon (Ray's) outlived the capture: its fds are no longer ours to write
            return
        for f in self.files:
            f.write(data)
            f.flush()
        for seg in self.segments.values():
            seg += data
        if self.verbose:
            os.write(self.out_fd if i == 0 else self.err_fd, data)
            return
        *lines, rest = (self._partial[i] + data).split(b"\n")
        self._partial[i] = rest[-65536:]
        for line in lines:
            last = line.split(b"\r")[-1]      # a progress bar's final frame, if any
            if PROMOTE.match(last):
                os.write(self.err_fd, last + b"\n")

    def sync(self, timeout: float = 2.0) -> None:
        """Wait until everything written so far (by this process) has been drained."""
        sys.stdout.flush()
        sys.stderr.flush()
        end = time.time() + timeout
        while time.time() < end and any(_unread(r) for r, _ in self.pipes):
            time.sleep(0.01)
        time.sleep(0.02)
        with self.lock:
            pass

    def begin(self, key: str) -> None:
        self.sync()
        with self.lock:
            self.segments[key] = bytearray()

    def end(self, key: str) -> bytes:
        self.sync()
        with self.lock:
            return bytes(self.segments.pop(key, b""))

    def close(self) -> None:
        for _, w in self.pipes:
            os.close(w)
        for t in self.threads:     # a subprocess still holding the pipe (a Ray daemon) keeps it open
            t.join(timeout=2.0)
        with self.lock:
            self.closed = True
            for f in self.files:
                f.close()
            self.files = []


def _unread(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class Reporter:
    """The `echo` of the stage loop (harness.executors.drive): callable for plain lines, plus stage hooks
    that print one line per stage and, on a terminal, a progress bar while it trains."""

    def __init__(self, console, tee: Tee | None = None, where=None):
        self.console, self.tee, self.where_of = console, tee, where or (lambda stage: "in process")
        self.to_train, self.trained, self.first = 0, 0, None
        self.bar, self.tasks = None, {}
        if console.is_terminal:
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            # redirect_*=False: the bar must not take sys.stdout back from the capture
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                TimeElapsedColumn(), console=console, transient=True,
                                redirect_stdout=False, redirect_stderr=False)

    def __call__(self, msg: str) -> None:
        self.console.print(msg, soft_wrap=True)      # a path or a long slug stays one line, for grep

    def sweep(self, to_train: int) -> None:
        self.to_train = to_train

    def where(self, stage, backend: str) -> str:
        return backend if backend != "local" else self.where_of(stage)

    def stage_started(self, stage, i: int, n: int, backend: str) -> None:
        self.first = self.first or time.time()
        where = self.where(stage, backend)
        if self.tee is not None:
            self.tee.begin(stage.key)
        if self.bar is None:
            self(f"[{i}/{n}] {stage.slug}: running ({stage.key[:12]}) {where}")
            return
        if not self.tasks:
            self.bar.start()
        self.tasks[stage.key] = self.bar.add_task(f"[{i}/{n}] {stage.slug} ({where})", total=1.0)

    def progress(self, stage, frac) -> None:
        if self.bar is not None and stage.key in self.tasks and isinstance(frac, (int, float)):
            self.bar.update(self.tasks[stage.key], completed=min(1.0, float(frac)))

    def wrap_sink(self, stage, sink):
        def forward(row: dict) -> None:
            self.progress(stage, row.get("progress"))
            if sink is not None:
                sink(row)
        return forward

    def stage_finished(self, stage, i: int, n: int, seconds: float, line: str, stage_dir: Path,
                       backend: str, ok: bool = True) -> None:
        if self.bar is not None and stage.key in self.tasks:
            self.bar.remove_task(self.tasks.pop(stage.key))
            if not self.tasks:
                self.bar.stop()
        self.trained += 1
        left = max(0, self.to_train - self.trained)
        spent = time.time() - (self.first or time.time())
        eta = f", ETA {fmt_s(spent / self.trained * left)}" if left else ""
        tail = f"{line}; sweep {fmt_s(spent)}{eta}"
        if self.bar is None and backend == "local" and ok:     # continues its "running" line, just above
            self(f"    {fmt_s(seconds)}: {tail}")
        else:
            self(f"[{i}/{n}] {stage.slug}: {'finished' if ok else 'FAILED'} in {fmt_s(seconds)} "
                 f"({self.where(stage, backend)}): {tail}")
        if self.tee is not None:
            text = self.tee.end(stage.key)
            with contextlib.suppress(OSError):     # a stage that failed before its directory existed
                stage_dir.mkdir(parents=True, exist_ok=True)
                (stage_dir / "console.log").write_bytes(text)

    def close(self) -> None:
        if self.bar is not None and self.tasks:
            self.bar.stop()
            self.tasks = {}


def compact_table(title: str, **kw):
    """A rich Table drawn with one rule under the header and no borders: box lines are 3 UTF-8 bytes a
    character, and results tables are what a log or a CI page keeps."""
    from rich import box
    from rich.table import Table

    return Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, show_edge=False,
                 collapse_padding=True, **kw)


ASCII_HEAD = None     # SIMPLE_HEAD with an ASCII rule (built on first use: rich loads only then)


def print_table(console, table) -> None:
    """`console.print(table)` without the padding to the table's width (trailing spaces) when not a terminal."""
    if console.is_terminal:
        console.print(table)
        return
    global ASCII_HEAD
    if ASCII_HEAD is None:
        from rich.box import Box

        ASCII_HEAD = Box("    \n    \n -- \n    \n    \n    \n    \n    \n")
    if table.box is not None:
        table.box = ASCII_HEAD
    with console.capture() as cap:
        console.print(table)
    console.out("\n".join(line.rstrip() for line in cap.get().splitlines()).strip("\n"), highlight=False)


_ACTIVE: list = []      # the Tee of the capture in progress, if any


def say_err(msg: str) -> None:
    """A harness error or warning on the real stderr (whole, however many lines) and in the run log."""
    if not _ACTIVE:
        import click

        click.echo(msg, err=True)
        return
    tee = _ACTIVE[-1]
    data = (msg.rstrip("\n") + "\n").encode(errors="replace")
    tee.sync()
    with tee.lock:
        for f in tee.files:
            f.write(data)
            f.flush()
        os.write(tee.err_fd, data)


class _HarnessFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


@contextlib.contextmanager
def capture(console, log_dir: Path, *, verbose: bool = False, log_file: str | None = None, where=None):
    """Yields the stage loop's echo (a Reporter); its `.log` is the run log (None when not captured)."""
    try:
        sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):     # in-process test runners: nothing on fds to capture
        yield _plain(Reporter(console, None, where), None)
        return
    created = [d for d in (log_dir.parent, log_dir) if not d.exists()]
    log_dir.mkdir(parents=True, exist_ok=True)
    run_log = log_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    logs = [run_log] + ([Path(log_file).expanduser()] if log_file else [])
    for p in logs[1:]:
        p.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    tee = Tee(logs, verbose, *saved)
    screen = open(saved[0], "w", buffering=1, closefd=False, encoding=sys.stdout.encoding or "utf-8",
                  errors="replace")
    old_file, old_tqdm = getattr(console, "_file", None), os.environ.get("TQDM_DISABLE")
    if not verbose:
        os.environ["TQDM_DISABLE"] = "1"     # tqdm's own default (>= 4.66); its frames would only fill the log
    handler = logging.StreamHandler(sys.stderr)   # harness warnings: "warning: ..." -> promoted to the screen
    handler.setFormatter(_HarnessFormat())
    handler.setLevel(logging.WARNING)
    harness_log = logging.getLogger("harness")
    harness_log.addHandler(handler)
    console.file = screen
    reporter = Reporter(console, tee, where)
    reporter.log = run_log
    os.dup2(tee.pipes[0][1], 1)
    os.dup2(tee.pipes[1][1], 2)
    early = False
    _ACTIVE.append(tee)
    try:
        yield reporter
    except SystemExit as e:     # refused before any stage (exit 2/3): leave no log folder behind
        early = reporter.first is None and e.code not in (0, None)
        raise
    finally:
        _ACTIVE.remove(tee)
        reporter.close()
        tee.sync()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        tee.close()
        harness_log.removeHandler(handler)
        console.file = old_file
        screen.close()
        os.close(saved[0])
        os.close(saved[1])
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm
        if early:
            run_log.unlink(missing_ok=True)
            for d in reversed(created):
                with contextlib.suppress(OSError):
                    d.rmdir()
        else:    # on failure too: the log is where the libraries' own words are
            console.print(f"log: {run_log}" + (f" (and {logs[1].resolve()})" if log_file else ""), soft_wrap=True)


def _plain(reporter: Reporter, log):
    reporter.log = log
    return reporter
