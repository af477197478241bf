"""What the MLflow UI is told about an experiment (harness.mlflow_experiment): every experiment a `w2s run`
records into is tagged as machine learning, a fresh one and one an older harness (or plain MLflow) created
without the tag, in the embedded store and on a server, for language and vision manifests; the shared view
names metrics the runs have, by short names. Plus the layering of the tracking modules (issue #12)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from helpers_mlflow import MlflowServer, REPO, cached_tiny, children, client, parents, run_args, seed_output, w2s

from harness.mlflow_experiment import KIND, KIND_TAG, NOTE_TAG, VIEW_TAG, view_url


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


def run_kind(kind: str, tmp_path_factory, out: Path, name: str, uri: str | None, monkeypatch):
    if kind == "language":
        tiny = cached_tiny(tmp_path_factory)
        if not (out / "stages").exists():
            seed_output(tiny, out)
        args = run_args(tiny, out)
    else:
        from test_vision import make_cifar_tar, manifest
        # a second output dir in this process: the feature store's memo is keyed by its folder (issue #12)
        data = tmp_path_factory.getbasetemp() / "vision_data"
        if not data.exists():
            make_cifar_tar(data)
        path = manifest(out.parent, data)
        args = ["run", path, "-o", f"output.dir={out}"]
    args += ["-o", f"name={name}"] + (["--tracking-uri", uri] if uri else [])
    res = w2s(args, monkeypatch)
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.parametrize("where", ["embedded", "server"])
@pytest.mark.parametrize("kind", ["language", "vision"])
def test_experiment_is_tagged_machine_learning_fresh_and_old(kind, where, tmp_path, tmp_path_factory, request,
                                                             monkeypatch):
    uri = request.getfixturevalue("server").uri if where == "server" else None
    tag = f"{kind}_{where}_{tmp_path.name[-12:]}".replace("-", "_")

    fresh_out = tmp_path / "fresh" / "runs"
    fresh_out.parent.mkdir()
    run_kind(kind, tmp_path_factory, fresh_out, f"fresh_{tag}", uri, monkeypatch)
    c = client(uri or "sqlite:///" + str(fresh_out.resolve() / "mlflow" / "mlflow.db"))
    exp = c.get_experiment_by_name(f"fresh_{tag}")
    assert exp.tags[KIND_TAG] == KIND

    old_out = tmp_path / "old" / "runs"
    old_out.parent.mkdir()
    # an experiment made by plain MLflow (as older harness versions did): for the embedded store, plain MLflow
    # also creates the store itself, in place
    (old_out / "mlflow").mkdir(parents=True)
    c = client(uri or "sqlite:///" + str(old_out.resolve() / "mlflow" / "mlflow.db"))
    old_id = c.create_experiment(f"old_{tag}")
    assert KIND_TAG not in c.get_experiment(old_id).tags
    run_kind(kind, tmp_path_factory, old_out, f"old_{tag}", uri, monkeypatch)
    exp = c.get_experiment(old_id)
    assert exp.tags[KIND_TAG] == KIND                       # added by the run, to the same experiment
    assert VIEW_TAG in exp.tags and NOTE_TAG in exp.tags
    assert len(parents(c, old_id)) == 1 and children(c, old_id)


def test_view_columns_are_short_metric_names_the_runs_have(tmp_path_factory, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    res = run_kind("language", tmp_path_factory, out, "columns", None, monkeypatch)
    c = client("sqlite:///" + str(out.resolve() / "mlflow" / "mlflow.db"))
    exp = c.get_experiment_by_name("columns")
    view = json.loads(exp.tags[VIEW_TAG])
    have = set().union(*(r.data.metrics for r in children(c, exp.experiment_id)))
    wanted = [col.split("`")[1] for col in view["selectedColumns"] if col.startswith("metrics.")]
    assert {"test_acc", "pgr"} <= set(wanted) <= have       # sortable columns, on the runs, by short names
    (p,) = parents(c, exp.experiment_id)
    assert view["runsExpanded"] == {p.info.run_id: True}
    note = p.data.tags[NOTE_TAG]
    assert "report/report.md" in note and "weak_labels" in note and "test_acc" in note
    url = view_url("http://127.0.0.1:5000", exp.experiment_id)
    assert "workflowType=machine_learning" in url and f"experiments/{exp.experiment_id}/runs" in url
    line = next(x for x in res.output.splitlines() if x.startswith("MLflow: "))   # where to look, told on stderr
    assert "`w2s ui -f" in line and url.split("/#")[1] in line


def imports_of(path: Path) -> set[str]:
    """harness.* modules a file imports anywhere (module level and inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "harness" + ("." + base if base else "")
            names = [f"{base}.{a.name}" for a in node.names] if base == "harness" else [base]
            out.update(n for n in names if n.startswith("harness"))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("harness"))
    return out


def test_tracking_layers_have_no_cycle_no_report_and_fit_350_lines():
    mods = {p.stem: p for p in (REPO / "harness").glob("*.py")}
    graph = {name: {i.split(".")[1] for i in imports_of(p) if i.count(".") >= 1 and i.split(".")[1] in mods}
             for name, p in mods.items()}
    tracking = {n for n in mods if n.startswith("mlflow_") or n in ("tracking", "trackers")}

    def reaches(src, dst, seen=()):
        return any(n == dst or (n not in seen and reaches(n, dst, (*seen, n))) for n in graph[src])

    for n in sorted(tracking):
        assert not reaches(n, n), f"harness/{n}.py is in an import cycle"
        assert len(mods[n].read_text().splitlines()) < 350, f"harness/{n}.py has 350 lines or more"
    assert "mlflow_tracking" not in graph["tracking"] and "trackers" not in graph["tracking"]
    for n in sorted(tracking - {"tracking", "trackers"}):
        assert not {"report", "plots"} & graph[n], f"harness/{n}.py imports the report layer"
