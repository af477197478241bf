"""`w2s reference ...`: the reference's command lines map to manifests whose planned stages are the
hand-written paper manifests' stages (compared by content key, not text), bad flags are refused by
name, and a command runs through the ordinary `w2s run` path."""
import shlex

import pytest
import yaml
from click.testing import CliRunner

from conftest import ROOT
from harness.cli import main
from harness.manifest import Manifest, load
from harness.plan import build_plan
from harness.reference_cli import build

PAPER = ROOT / "experiments" / "paper"
# The reference README's example commands (openai/weak-to-strong@6b450f2, README "Running the Script").
README_SWEEP = "--model_sizes=gpt2,gpt2-medium"
README_W2S = ('--batch_size 32 --max_ctx 512 --ds_name "sciq" --loss "logconf" --n_docs 1000 '
              '--n_test_docs 100 --weak_model_size "gpt2-medium" --strong_model_size "gpt2-large" --seed 42')


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("W2S_DATA_DIR", raising=False)   # sciq is planned from its hub pin


def keys(m: Manifest) -> dict[str, str]:
    return {s.key: s.slug for s in build_plan(m)}


def from_command(command: str, args: str) -> Manifest:
    raw, _ = build(command, shlex.split(args))
    return Manifest.model_validate(raw)


def paper(ds: str, models: list[str], overrides=()) -> Manifest:
    return load(PAPER / f"{ds}.yaml", [f"output.dir=/tmp/results", *overrides]).select_models(models)


def test_readme_sweep_matches_paper_manifest():
    got = keys(from_command("sweep", README_SWEEP))
    want = keys(paper("sciq", ["gpt2", "gpt2-medium"], ["seeds=[0]", "losses=[xent]"]))
    assert got == want
    assert sorted(got.values()) == ["gt gpt2 train1 s0", "gt gpt2-medium train1 s0", "transfer gpt2->gpt2-medium xent s0"]


@pytest.mark.parametrize("ds", ["sciq", "boolq", "cosmos_qa", "amazon_polarity", "anthropic_hh"])
def test_sweep_defaults_match_every_paper_manifest(ds):
    """The whole ladder with both losses: what `make reproduce-paper` plans, seed by seed."""
    ladder = "gpt2,gpt2-medium,gpt2-large,gpt2-xl,Qwen/Qwen-1_8B,Qwen/Qwen-7B,Qwen/Qwen-14B"
    want = paper(ds, ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "Qwen-1_8B", "Qwen-7B", "Qwen-14B"],
                 ["seeds=[1]", "losses=[xent]"])
    assert keys(from_command("sweep", f"--model_sizes={ladder} --ds_name {ds} --seed 1")) == keys(want)


def test_readme_train_weak_to_strong_matches_paper_manifest():
    """train_weak_to_strong.py differs from the sweep flow in the ways REFERENCE.md §1-§3 lists: its
    ceiling trains on the student half (Q14) and its model table loads every model in bf16."""
    got = keys(from_command("train-w2s", README_W2S))
    want = keys(paper("sciq", ["gpt2-medium", "gpt2-large"], [
        "dataset.n_docs=1000", "dataset.n_test_docs=100", "dataset.max_ctx=512", "seeds=[42]",
        "losses=[logconf]", "fidelity.ceiling_half=student_half", "models.1.dtype=bfloat16", "models.2.dtype=bfloat16"]))
    assert got == want
    assert sorted(got.values()) == ["gt gpt2-large train2 s42", "gt gpt2-medium train1 s42",
                                    "transfer gpt2-medium->gpt2-large logconf s42"]


def test_train_simple_gt_and_transfer_runs_are_paper_stages():
    full = keys(paper("sciq", ["gpt2", "gpt2-medium"], ["seeds=[0]"]))
    gt = keys(from_command("train-simple", "--model_size gpt2 --ds_name sciq"))
    assert list(gt.values()) == ["gt gpt2 train1 s0"] and set(gt) <= set(full)
    tr = keys(from_command("train-simple", "--model_size gpt2-medium --weak_model_size gpt2 --loss logconf"))
    # Q4: train_simple trains its ground-truth runs with --loss too, so only the xent runs are shared
    assert "transfer gpt2->gpt2-medium logconf s0" in tr.values()
    xent = keys(from_command("train-simple", "--model_size gpt2-medium --weak_model_size=gpt2"))
    assert set(xent) <= set(full) and len(xent) == 3


def test_flags_defaults_and_fire_syntax():
    raw, f = build("train-simple", ["--model_size=gpt2-xl", "--lr", "2e-5", "--linear_probe"])
    assert f["lr"] == 2e-5 and f["linear_probe"] is True and f["n_docs"] == 20000 and f["eval_every"] == 1000000
    assert raw["models"] == [{"id": "gpt2-xl", "gradient_checkpointing": True}]
    raw, f = build("sweep", ["--model_sizes=[gpt2,Qwen/Qwen-1_8B]", "--minibatch_size_per_device", "2"])
    assert [m["id"] for m in raw["models"]] == ["gpt2", "Qwen/Qwen-1_8B"] and raw["models"][1]["dtype"] == "bfloat16"
    assert raw["train"]["micro_batch"] == 2 and raw["fidelity"]["profile"] == "reference"
    _, f = build("train-w2s", [])
    assert (f["n_docs"], f["n_test_docs"], f["transfer_loss"], f["strong_model_size"]) == (10000, 200, "xent,logconf", "gpt2-xl")


@pytest.mark.parametrize("command,args,needle", [
    ("train-simple", "--weak_labels_path /x", "--weak_labels_path is not supported"),
    ("train-simple", "--sync_command gsutil", "--sync_command is not supported"),
    ("train-simple", "--n_doc 5", "did you mean --n_docs"),
    ("train-simple", "--batch_size 16", "pass --lr"),
    ("sweep", "--model_sizes=gpt2,gpt2-medium --model_size gpt2", "--model_size is chosen by the sweep"),
    ("sweep", "--ds_name sciq", "--model_sizes is required"),
    ("train-w2s", "--transfer_lr 1e-3", "--transfer_lr 0.001 differs"),
    ("train-w2s", "--weak_model_size gpt2 --strong_model_size gpt2", "self-pair"),
    ("train-w2s", "--bogus 1", "--bogus is not a flag"),
])
def test_refused_by_name(command, args, needle):
    out = CliRunner().invoke(main, ["reference", command, *shlex.split(args)])
    assert out.exit_code == 2, out.output
    assert needle in out.output and "Traceback" not in out.output


def test_print_manifest_is_a_valid_manifest(tmp_path):
    out = CliRunner().invoke(main, ["reference", "train-w2s", *shlex.split(README_W2S), "--print-manifest"])
    assert out.exit_code == 0, out.output
    text = out.output[out.output.index("# Run:"):]
    assert yaml.safe_load(text)["fidelity"] == {"profile": "reference", "precision": "mixed", "ceiling_half": "student_half"}
    (tmp_path / "m.yaml").write_text(text)
    assert keys(load(tmp_path / "m.yaml")) == keys(from_command("train-w2s", README_W2S))


def test_runs_through_w2s_run(tiny_assets, tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_DATA_DIR", str(tiny_assets / "data"))
    args = ["reference", "train-simple", "--model_size", str(tiny_assets / "models" / "tiny-gpt2"), "--ds_name", "sst2",
            "--n_docs", "120", "--n_test_docs", "40", "--max_ctx", "24", "--batch_size", "8", "--lr", "1e-3",
            "--epochs", "1", "--results_folder", str(tmp_path), "--no-tracking"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "gt tiny-gpt2 train1 s0: running" in out.output
    assert (tmp_path / "reference-train-simple-sst2.yaml").exists()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "cached" in again.output
