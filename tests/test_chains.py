"""Bootstrapping chains (harness.chains) on tiny random models: manifest validation before compute, the
stage graph (teachers, alternating halves, identity), and a 3-model chain through `w2s run` with per-step and
end-to-end PGR beside the direct transfer, a fully cached rerun, and the report's plot."""
import json
from pathlib import Path

import pandas as pd
import pytest

from harness.manifest import load
from harness.plan import build_plan
from harness.runner import in_shard

from conftest import w2s

CHAIN = """\
name: chain
dataset:
  name: sst2
  source: {root}/data
  n_docs: 240
  n_test_docs: 120
  max_ctx: 24
models:
  - {{name: gpt2s, id: {root}/models/tiny-gpt2, lr: 1.0e-3}}
  - {{name: bert, id: {root}/models/tiny-bert, lr: 1.0e-3}}
  - {{name: bert-hi, id: {root}/models/tiny-bert, lr: 3.0e-3}}
train:
  batch_size: 16
  micro_batch: 8
  epochs: 1
pairs: {pairs}
chains: {chains}
losses: [xent]
seeds: [0]
output:
  dir: {out}/runs
  log_every: 5
"""


def manifest(tiny_assets, out: Path, chains="[[gpt2s, bert, bert-hi]]", pairs="[[gpt2s, bert-hi]]") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "chain.yaml"
    path.write_text(CHAIN.format(root=tiny_assets, out=out, chains=chains, pairs=pairs))
    return path


# -- validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("chains, where, says", [
    ("[[gpt2s, bret, bert-hi]]", "chains.0.1", "'bret' is not a model name (did you mean 'bert'?)"),
    ("[[gpt2s, bert-hi]]", "chains.0", "a chain needs at least 3 models"),
    ("[[gpt2s, bert-hi, bert]]", "chains.0.2", "bert-hi -> bert: each model of a chain must come after"),
    ("[[gpt2s, bert, bert]]", "chains.0.2", "appear once"),
    ("[[gpt2s, bert, bert-hi], [gpt2s, bert, bert-hi]]", "chains.1", "listed twice (also chains.0)"),
    ("[gpt2s, bert, bert-hi]", "chains.0", "Input should be a valid list"),
])
def test_bad_chains_are_refused_before_compute(tiny_assets, tmp_path, chains, where, says):
    path = manifest(tiny_assets, tmp_path, chains=chains)
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if x.startswith("chains:"))
    for args in (("validate", path), ("run", path, "--no-tracking")):
        proc = w2s(*args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert f"{path}:{line}: {where}: " in proc.stderr and says in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing may run"


def test_chain_problems_are_reported_with_other_problems(tiny_assets, tmp_path):
    path = manifest(tiny_assets, tmp_path, chains="[[gpt2s, nope, bert-hi]]")
    path.write_text(path.read_text().replace("name: sst2", "name: sst3"))
    err = w2s("validate", path, check=False).stderr
    assert "dataset.name" in err and "chains.0.1: 'nope' is not a model name" in err


# -- the stage graph --------------------------------------------------------------------------------
def test_chain_stages_teachers_halves_and_identity(tiny_assets, tmp_path):
    path = manifest(tiny_assets, tmp_path)
    plan = build_plan(load(path))
    by = {s.slug: s for s in plan}
    gt = by["gt gpt2s train1 s0"]
    step1, step2 = by["chain gpt2s->bert xent s0"], by["chain gpt2s>bert->bert-hi xent s0"]
    assert step1.teacher == gt.key and step2.teacher == step1.key      # a step's teacher is the previous step
    assert (step1.half, step2.half) == ("train2", "train1")            # trains where its teacher labelled
    assert step1.identity["chain"] == {"step": 1, "half": "train2", "labels": "train1"}
    assert step2.identity["chain"] == {"step": 2, "half": "train1", "labels": "train2"}
    assert step1.identity["teacher"] == gt.key and step2.identity["teacher"] == step1.key
    # the direct transfers it is compared with, to every student of the chain, and both ceilings
    assert {"transfer gpt2s->bert xent s0", "transfer gpt2s->bert-hi xent s0", "gt bert train2 s0",
            "gt bert-hi train2 s0"} <= set(by)
    assert len(plan) == 7 and [s.key for s in plan].index(step1.key) < [s.key for s in plan].index(step2.key)
    # operational settings and model names are not identity; the middle model's lr is, down the chain
    keys = {s.key for s in plan}
    assert {s.key for s in build_plan(load(path, ["train.micro_batch=4", "train.eval_batch=3"]))} == keys
    renamed = (path.read_text().replace("{name: bert-hi,", "{name: big,").replace("{name: bert,", "{name: mid,")
               .replace("[[gpt2s, bert, bert-hi]]", "[[gpt2s, mid, big]]").replace("[[gpt2s, bert-hi]]", "[[gpt2s, big]]"))
    (tmp_path / "renamed.yaml").write_text(renamed)
    assert {s.key for s in build_plan(load(tmp_path / "renamed.yaml"))} == keys
    lr = {s.slug: s.key for s in build_plan(load(path, ["models.1.lr=0.002"]))}
    assert lr["chain gpt2s->bert xent s0"] != step1.key and lr["chain gpt2s>bert->bert-hi xent s0"] != step2.key
    assert lr["gt gpt2s train1 s0"] == gt.key


def test_chains_share_prefixes_shards_keep_them_whole_and_sub_ladders_drop_them(tiny_assets, tmp_path):
    path = manifest(tiny_assets, tmp_path, chains="[[gpt2s, bert, bert-hi]]")
    m = load(path, ["seeds=[0,1,2,3]"])
    plan = build_plan(m)
    chain = [s for s in plan if s.kind == "chain"]
    assert len(chain) == 8
    for n in (2, 3):
        for s in chain:
            root = next(r for r in plan if r.key == s.root)
            assert [i for i in range(n) if in_shard(s, (i, n))] == [i for i in range(n) if in_shard(root, (i, n))]
    sub = m.select_models(["gpt2s", "bert-hi"])
    assert sub.chains == [] and not any(s.kind == "chain" for s in build_plan(sub))


# -- a 3-model chain through `w2s run` --------------------------------------------------------------
@pytest.fixture(scope="module")
def chain_run(tiny_assets, tmp_path_factory) -> Path:
    path = manifest(tiny_assets, tmp_path_factory.mktemp("chain"))
    first = w2s("run", path, "--tracking-uri", f"sqlite:///{path.parent / 'mlflow.db'}")   # tracked, real MLflow
    assert first.stdout.count(": running") == 7, first.stdout
    return path


def test_chain_stages_are_tracked_like_every_stage(chain_run):
    from mlflow import MlflowClient

    from harness.mlflow_tracking import flatten
    from harness.store import sha256_file

    c = MlflowClient(f"sqlite:///{chain_run.parent / 'mlflow.db'}")
    exp = c.get_experiment_by_name("chain")
    runs = {r.data.tags["w2s.stage_key"]: r for r in c.search_runs([exp.experiment_id], "tags.`w2s.role` = 'stage'")}
    steps = [s for s in build_plan(load(chain_run)) if s.kind == "chain"]
    assert len(steps) == 2
    for s in steps:
        r = runs[s.key]
        assert r.info.status == "FINISHED" and r.data.tags["w2s.stage_kind"] == "chain"
        assert r.data.params == flatten(s.identity) and r.data.params["teacher"] == s.teacher
        assert r.data.params["chain.step"] in ("1", "2")
        assert {"test_acc", "weak_acc", "weak_label_acc", "agreement_test"} <= set(r.data.metrics)
        assert r.data.tags["w2s.teacher_key"] == s.teacher and r.data.tags["w2s.weak"] == s.weak
        # lineage: it trained on its teacher's weak labels (a dataset input), and its own labels are an artifact
        teacher_labels = chain_run.parent / "runs" / "stages" / s.teacher[:16] / "weak_labels.parquet"
        (ds,) = [d for d in r.inputs.dataset_inputs if d.dataset.name.startswith("weak_labels.")]
        assert ds.dataset.name == f"weak_labels.{s.weak}.s0"
        assert r.data.tags["w2s.weak_labels.sha256"] == sha256_file(teacher_labels)
        assert "weak_labels/weak_labels.parquet" in [a.path for a in c.list_artifacts(r.info.run_id, "weak_labels")]


def test_chain_run_reports_steps_end_to_end_and_direct(chain_run):
    res = json.loads((chain_run.parent / "runs" / "chain" / "results.json").read_text())
    rows = pd.DataFrame(res["chains"])
    assert set(map(tuple, rows[["scope", "position", "weak", "strong"]].values.tolist())) == {
        ("step", 1, "gpt2s", "bert"), ("step", 2, "bert", "bert-hi"),
        ("from_first", 1, "gpt2s", "bert"), ("from_first", 2, "gpt2s", "bert-hi")}
    e2e = rows[rows["end_to_end"]].iloc[0]
    assert (e2e["weak"], e2e["strong"], e2e["chain"]) == ("gpt2s", "bert-hi", "gpt2s>bert>bert-hi")
    st = pd.DataFrame(res["stages"])
    acc = {(r.kind, r.weak, r.model): r.test_acc for r in st.itertuples()}
    assert e2e["w2s_acc"] == acc[("chain", "gpt2s>bert", "bert-hi")]
    assert e2e["direct_acc"] == acc[("transfer", "gpt2s", "bert-hi")]
    gt = {r.model: r.test_acc for r in st[st["kind"] == "gt"].itertuples()}
    assert e2e["weak_acc"] == gt["gpt2s"] and e2e["ceiling_acc"] == gt["bert-hi"]
    step2 = rows[(rows["scope"] == "step") & (rows["position"] == 2)].iloc[0]
    assert step2["weak_acc"] == acc[("chain", "gpt2s", "bert")]          # the teacher of step 2 is step 1
    per_seed = pd.DataFrame(res["chain_pgr"])
    assert len(per_seed) == 4 and set(per_seed["scope"]) == {"step", "from_first"}
    for r in per_seed.itertuples():       # plain ratios, as pgr.csv
        if r.ceiling_acc > r.weak_acc:
            assert r.pgr == pytest.approx((r.w2s_acc - r.weak_acc) / (r.ceiling_acc - r.weak_acc))


def test_chain_steps_label_rows_they_did_not_train_on(chain_run):
    runs = chain_run.parent / "runs"
    plan = {s.slug: s for s in build_plan(load(chain_run))}

    def table(slug, name, cols):
        return pd.read_parquet(runs / "stages" / plan[slug].key[:16] / f"{name}.parquet", columns=cols)
    gt = table("gt gpt2s train1 s0", "weak_labels", ["id"])
    s1 = table("chain gpt2s->bert xent s0", "weak_labels", ["id"])
    s2 = table("chain gpt2s>bert->bert-hi xent s0", "weak_labels", ["id"])
    train1 = set(s1["id"])                 # step 1 trained on gt's labels (train2) and labelled train1
    assert train1 and not train1 & set(gt["id"])
    assert set(s2["id"]) == set(gt["id"])  # step 2 trained on train1 and labelled train2
    for slug in ("chain gpt2s->bert xent s0", "chain gpt2s>bert->bert-hi xent s0"):
        ident = json.loads((runs / "stages" / plan[slug].key[:16] / "stage.json").read_text())["identity"]
        assert ident["teacher"] == plan[slug].teacher
        assert "weak_label_acc" in json.loads((runs / "stages" / plan[slug].key[:16] / "metrics.json").read_text())
    # step 1 is the direct gpt2s -> bert transfer (same rows, labels and seed) that also labels train1
    p1 = table("chain gpt2s->bert xent s0", "predictions_test", ["id", "soft_label"])
    pd_ = table("transfer gpt2s->bert xent s0", "predictions_test", ["id", "soft_label"])
    assert p1["id"].tolist() == pd_["id"].tolist()
    assert [list(x) for x in p1["soft_label"]] == [list(x) for x in pd_["soft_label"]]


def test_chain_rerun_is_fully_cached_and_reported(chain_run, tmp_path):
    results = chain_run.parent / "runs" / "chain" / "results.json"
    before = json.loads(results.read_text())
    again = w2s("run", chain_run, "--no-tracking")
    assert ": running" not in again.stdout and again.stdout.count(": cached") == 7
    assert "Bootstrapping chains" in again.stdout and "end to end" in again.stdout
    after = json.loads(results.read_text())
    assert after["chains"] == before["chains"] and after["chain_pgr"] == before["chain_pgr"]
    rep = w2s("report", results.parent, "--out", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Bootstrapping chains" in md and "bootstrapped PGR" in md
    for ext in ("png", "pdf"):
        f = tmp_path / "rep" / f"chain_chain_gpt2s_bert_bert-hi.{ext}"
        assert f.stat().st_size > 1000, rep.stdout
