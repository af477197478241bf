"""The console of `w2s run` (harness.console): a short screen, library noise in the run log and each stage's
console.log, the harness's own warnings and the tables still on screen; `--verbose` and `--log-file`."""
import re
import subprocess
import sys
import textwrap

from conftest import ROOT, w2s

NOISE = ("{'loss'", "it/s]", "\x1b[", "INFO ")      # HF dict logs, tqdm frames, ANSI codes, library INFO lines


def test_run_prints_a_short_console_and_captures_library_noise(tiny):
    # tracking on (the embedded MLflow store: its INFO lines) and one harness warning from the data split
    r = w2s("run", tiny, "-o", "dataset.n_test_docs=100000")
    screen = r.stdout + r.stderr
    assert len(screen.encode()) < 3000, screen
    for noise in NOISE:
        assert noise not in screen, (noise, screen)
    assert re.search(r"warning: sst2: asked for 100000 test rows, only \d+ exist", r.stderr), r.stderr
    running = re.findall(r"^\[(\d)/4\] (.+?): running \(([0-9a-f]{12})\) in process$", r.stdout, re.M)
    done = re.findall(r"^    [0-9hms]+: test_acc=0\.\d{4}.*; sweep [0-9hms]+(, ETA [0-9hms]+)?$", r.stdout, re.M)
    assert len(running) == 4 and len(done) == 4, r.stdout
    assert [bool(eta) for eta in done] == [True, True, True, False], r.stdout   # ETA of the rest of the sweep
    for title in ("Accuracy per stage", "Weak-to-strong per pair", "PGR per loss"):
        assert title in r.stdout
    log = re.search(r"^log: (/\S+\.log)$", r.stdout, re.M)
    assert log, r.stdout
    text = open(log.group(1), encoding="utf-8", errors="replace").read()
    assert "{'loss'" in text and "asked for 100000" in text      # everything is in the run log
    runs = tiny.parent / "runs" / "stages"
    for _, _, key in running:
        stage_log = next(runs.glob(key + "*")) / "console.log"
        assert "{'loss'" in stage_log.read_text(errors="replace"), stage_log
    # console.log is outside done.json: the cache still verifies
    again = w2s("run", tiny, "-o", "dataset.n_test_docs=100000")
    assert again.stdout.count(": cached (") == 4 and "corrupt" not in again.stdout + again.stderr


def test_verbose_shows_library_output_and_log_file_keeps_it(tiny, tmp_path):
    from harness.manifest import load
    from harness.plan import build_plan

    first = build_plan(load(tiny))[0].key[:12]
    log = tmp_path / "full" / "run.log"
    r = w2s("run", tiny, "--no-tracking", "--only", first, "--verbose", "--log-file", log)
    assert "{'loss'" in r.stdout + r.stderr
    assert "{'loss'" in log.read_text(errors="replace")
    quiet = w2s("run", tiny, "--no-tracking", "--only", first, "--force", "--log-file", log)
    assert "{'loss'" not in quiet.stdout + quiet.stderr and f"(and {log})" in quiet.stdout


CAPTURE = textwrap.dedent("""
    import logging, os, subprocess, sys, warnings
    from pathlib import Path
    from rich.console import Console
    from harness.console import capture

    con = Console(highlight=False)
    with capture(con, Path(sys.argv[1]), where=None) as echo:
        print("python-print-noise"); print("stderr-noise", file=sys.stderr)
        os.write(1, b"fd-noise\\n"); subprocess.run(["echo", "subprocess-noise"])
        warnings.warn("library-warning")
        logging.getLogger("transformers.x").warning("library-logger")
        logging.getLogger("harness.data").warning("harness-warning")
        print("error: harness-error", file=sys.stderr)
        echo("stage-line")
    print("after", echo.log)
""")


def test_capture_keeps_noise_off_screen_and_harness_lines_on_it(tmp_path):
    r = subprocess.run([sys.executable, "-c", CAPTURE, str(tmp_path)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "stage-line" and out[1] == f"log: {out[2].split(' ', 1)[1]}" and out[2].startswith("after ")
    assert r.stderr.splitlines() == ["warning: harness-warning", "error: harness-error"], r.stderr
    log = r.stdout.split("after ", 1)[1].strip()
    text = open(log).read()
    for noise in ("python-print-noise", "stderr-noise", "fd-noise", "subprocess-noise", "library-warning",
                  "library-logger", "warning: harness-warning", "error: harness-error"):
        assert noise in text, noise


def test_a_terminal_gets_a_progress_bar_and_one_line_per_stage(tiny):
    import os
    import pty

    from harness.manifest import load
    from harness.plan import build_plan

    first = build_plan(load(tiny))[0].key[:12]
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(tiny), "--no-tracking", "--only", first],
                            stdout=slave, stderr=slave, cwd=ROOT, env={**os.environ, "COLUMNS": "100"})
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:          # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=600) == 0, out.decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode(errors="replace"))
    frames = [f for f in re.split(r"[\r\n]", text) if f.startswith("[1/1] gt ") and "(in process) " in f and "%" in f]
    assert frames and any("100%" in f for f in frames), text      # the bar, fed by the training log
    lines = re.split(r"[\r\n]", text)
    assert any(re.match(r"\[1/1\] gt \S+ train1 s0: finished in \S+ \(in process\): test_acc=", x) for x in lines), text
    assert ": running (" not in text and "{'loss'" not in text


def test_a_multi_line_error_reaches_the_screen_whole(tmp_path):
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from rich.console import Console
        from harness.console import capture, say_err

        with capture(Console(), Path(sys.argv[1])) as echo:
            print("noise")
            say_err("error: bad row\\n  line 4: 'question' is missing\\n  fix: add it")
    """)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == "error: bad row\n  line 4: 'question' is missing\n  fix: add it\n", r.stderr
    assert "noise" not in r.stdout and "line 4" in next(tmp_path.glob("run-*.log")).read_text()


def test_stage_lines_say_where_a_stage_trains():
    from harness.manifest import load
    from harness.pipeline import where
    from harness.plan import build_plan

    m = load(ROOT / "experiments" / "paper" / "sciq.yaml", ["output.dir=/tmp/unused"])
    got = {s.model: where(s) for s in build_plan(m.select_models(["gpt2", "gpt2-xl"]))}
    assert got == {"gpt2": "in process", "gpt2-xl": "deepspeed x8"}
