"""Issue #16, finding 4: corrupt cache files. A truncated parquet, a missing metrics.json, a garbage
done.json or a truncated weak-label file make `plan`, `run` and `results` name the stage (key and slug)
without a traceback; `run` recomputes exactly that stage and its dependants, to the numbers of an
uncorrupted run; a truncated weak-label file is noticed before a student trains on it; every file of a
stage is fsynced before its done marker."""
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import w2s
from harness.manifest import load
from harness.plan import build_plan
from harness.store import StageStore

TEACHER, CEILING = "gt tiny-gpt2 train1 s0", "gt tiny-bert train2 s0"
XENT, LOGCONF = "transfer tiny-gpt2->tiny-bert xent s0", "transfer tiny-gpt2->tiny-bert logconf s0"


def copy_run(tiny_run: Path, tmp_path: Path) -> Path:
    """The finished tiny sweep, copied: a manifest whose output dir is this test's copy."""
    shutil.copytree(tiny_run.parent / "runs", tmp_path / "runs")
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_run.read_text().replace(str(tiny_run.parent / "runs"), str(tmp_path / "runs")))
    return path


def plan_of(path: Path) -> dict:
    return {s.slug: s for s in build_plan(load(path))}


def results(path: Path) -> dict:
    return json.loads((path.parent / "runs" / "tiny" / "results.json").read_text())


def truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def no_traceback(proc) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


def status_rows(plan_stdout: str) -> dict:
    """slug -> status column of `w2s plan`'s table."""
    out = {}
    for line in plan_stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 5 and cells[2] in (TEACHER, CEILING, XENT, LOGCONF):
            out[cells[2]] = cells[5]
    return out


CORRUPTIONS = {
    "truncated-parquet": (CEILING, lambda d: truncate(d / "predictions_test.parquet"), "predictions_test.parquet"),
    "missing-metrics": (LOGCONF, lambda d: (d / "metrics.json").unlink(), "metrics.json is missing"),
    "garbage-done": (XENT, lambda d: (d / "done.json").write_bytes(b"\x00\x9fnot json{"), "done.json is not valid JSON"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_stage_is_named_and_recomputed_alone(tiny_run, tmp_path, kind):
    target, damage, why = CORRUPTIONS[kind]
    path = copy_run(tiny_run, tmp_path)
    stages = plan_of(path)
    key = stages[target].key
    damage(StageStore(tmp_path / "runs").dir(key))

    plan = w2s("plan", path, env={"COLUMNS": "200"})
    no_traceback(plan)
    assert status_rows(plan.stdout) == {s: "corrupt: rerun" if s == target else "cached" for s in stages}
    assert f"corrupt cache: {target} ({key[:12]}): " in plan.stdout and why in plan.stdout, plan.stdout
    assert "3/4 cached" in plan.stdout

    res = w2s("results", path, env={"COLUMNS": "200"})
    no_traceback(res)
    assert f"corrupt cache: {target} ({key[:12]})" in res.stderr and "left out of the table" in res.stderr

    run = w2s("run", path, "--no-tracking")
    no_traceback(run)
    assert f"corrupt cache: {target} ({key[:12]}, " in run.stdout and why in run.stdout, run.stdout
    assert [line.split("] ")[1].split(":")[0] for line in run.stdout.splitlines() if ": running (" in line] == [target]
    assert run.stdout.count(": cached (") == 3
    store = StageStore(tmp_path / "runs")
    assert all(store.problem(s.key) is None and store.is_done(s.key) for s in stages.values())
    ours, ref = results(path), results(tiny_run)
    assert ours["pgr"] == ref["pgr"] and ours["stages"] == ref["stages"], "the recomputed stage matches"


def test_truncated_weak_labels_are_noticed_before_a_student_trains(tiny_run, tmp_path):
    """A sweep killed after the logconf student: the teacher's weak-label file is then truncated. The next
    run names the teacher and its finished student before anything trains, retrains the teacher first,
    then both students; the ceiling, which does not read the weak labels, stays cached."""
    path = copy_run(tiny_run, tmp_path)
    stages, store = plan_of(path), StageStore(tmp_path / "runs")
    shutil.rmtree(store.dir(stages[XENT].key))            # not trained yet when the sweep was killed
    truncate(store.dir(stages[TEACHER].key) / "weak_labels.parquet")

    plan = w2s("plan", path, env={"COLUMNS": "200"})
    no_traceback(plan)
    assert status_rows(plan.stdout) == {TEACHER: "corrupt: rerun", CEILING: "cached", XENT: "to run",
                                        LOGCONF: "corrupt: rerun"}
    assert f"corrupt cache: {TEACHER} ({stages[TEACHER].key[:12]}): weak_labels.parquet" in plan.stdout
    assert f"corrupt cache: {LOGCONF} ({stages[LOGCONF].key[:12]}): its teacher" in plan.stdout
    res = w2s("results", path, env={"COLUMNS": "200"})
    no_traceback(res)
    for slug in (TEACHER, LOGCONF):
        assert f"corrupt cache: {slug} ({stages[slug].key[:12]})" in res.stderr
    assert "logconf" not in res.stdout and "tiny-gpt2" not in res.stdout, "left out, as the warning says"
    assert "tiny-bert" in res.stdout, "the ceiling is still shown"

    run = w2s("run", path, "--no-tracking")
    no_traceback(run)
    lines = run.stdout.splitlines()
    first_run = next(i for i, line in enumerate(lines) if ": running (" in line)
    notices = [i for i, line in enumerate(lines) if line.startswith("corrupt cache: ")]
    assert len(notices) == 2 and max(notices) < first_run, "noticed before anything trains"
    ran = [line.split("] ")[1].split(":")[0] for line in lines if ": running (" in line]
    assert ran == [TEACHER, XENT, LOGCONF]
    assert f"{CEILING}: cached" in run.stdout
    ours, ref = results(path), results(tiny_run)
    assert ours["pgr"] == ref["pgr"] and ours["stages"] == ref["stages"]


def test_only_a_student_of_a_corrupt_teacher_is_a_clean_error(tiny_run, tmp_path):
    """`--only <student>` cannot recompute the teacher it needs: exit 2 naming both, no traceback, nothing run."""
    path = copy_run(tiny_run, tmp_path)
    stages, store = plan_of(path), StageStore(tmp_path / "runs")
    truncate(store.dir(stages[TEACHER].key) / "weak_labels.parquet")
    proc = w2s("run", path, "--no-tracking", "--only", stages[XENT].key[:12], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert f"corrupt cache: {TEACHER} ({stages[TEACHER].key[:12]}" in proc.stdout
    assert f"{XENT}: its teacher stage {stages[TEACHER].key[:12]} has not finished" in proc.stderr
    assert f"--only {stages[TEACHER].key[:12]}" in proc.stderr and ": running" not in proc.stdout


def test_each_kind_of_damage_has_its_own_reason(tiny_run, tmp_path):
    """StageStore.problem, directly: what `plan`, `run` and `results` print after the stage's name."""
    copy_run(tiny_run, tmp_path)
    store = StageStore(tmp_path / "runs")
    keys = {json.loads((d / "done.json").read_text())["key"]: d for d in store.root.iterdir()}
    (a, da), (b, db), (c, dc), (e, de) = keys.items()
    assert all(store.problem(k) is None and store.is_done(k) for k in keys)
    (da / "log.jsonl").write_text((da / "log.jsonl").read_text().replace("0", "1", 1))   # same size, other bytes
    assert "log.jsonl does not match its recorded sha256" in store.problem(a)
    shutil.copyfile(dc / "done.json", db / "done.json")
    assert store.problem(b) == "done.json belongs to another stage"
    (dc / "predictions_test.parquet").unlink()
    assert store.problem(c) == "predictions_test.parquet is missing"
    (de / "done.json").write_text("[1, 2]")
    assert store.problem(e) == "done.json belongs to another stage"
    assert not any(store.is_done(k) for k in keys)
    shutil.rmtree(dc)
    assert store.problem(c) is None and not store.is_done(c), "a stage that never finished is not corrupt"


def test_stage_files_are_fsynced_before_the_done_marker(tmp_path, monkeypatch):
    """A power loss after done.json is durable must not leave it over unwritten files: every file the
    marker records was fsynced before the marker was written (the real os.fsync still runs)."""
    import pandas as pd

    synced, order = [], []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        order.append((Path(dst).name, list(synced)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = StageStore(tmp_path)
    store.begin("k" * 64, {"x": 1})
    store.write_table("k" * 64, "predictions_test", pd.DataFrame({"id": ["a"], "hard_label": [1]}))
    (store.dir("k" * 64) / "log.jsonl").write_text('{"step": 1}\n')      # written by the trainer's callback
    store.finish("k" * 64, {"test_acc": 0.5})
    done = json.loads((store.dir("k" * 64) / "done.json").read_text())
    assert set(done["files"]) == {"stage.json", "predictions_test.parquet", "log.jsonl", "metrics.json"}
    before_marker = next(s for name, s in order if name == "done.json")
    assert set(done["files"]) <= set(before_marker), (done["files"], before_marker)
    assert store.dir("k" * 64).name in before_marker, "the directory entry (the renames) too"
    assert f".done.json.{os.getpid()}.tmp" in synced, "and the marker itself"
