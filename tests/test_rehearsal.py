"""The rehearsal (harness.rehearsal, docs/rehearsal.md): paper manifests as written, tiny stand-ins.

Fast tier: the stand-ins' configs, tokenizer, data layout, cut and the ZeRO picks they rehearse.
`rehearsal` marker: a real paper manifest end to end (DeepSpeed launches on 2 CPU ranks, MLflow, report
--compare), asserting what ran: stages, PGR rows, tags, the separate output dir and each stage's code path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import ROOT, w2s

SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def rehearsal_env(tmp_path_factory) -> dict:
    data = os.environ.get("W2S_DATA_DIR") or str(SHARED / "data")
    code = os.environ.get("W2S_QWEN1_CODE") or str(SHARED / "assets" / "qwen1-remote-code")
    if not (Path(data) / "boolq" / "validation.jsonl").is_file() or not (Path(code) / "modeling_qwen.py").is_file():
        pytest.fail(f"the rehearsal needs the shared data ({data}) and Qwen-1 code ({code}); set W2S_DATA_DIR / W2S_QWEN1_CODE")
    cache = os.environ.get("W2S_REHEARSAL_CACHE") or str(tmp_path_factory.mktemp("rehearsal-cache"))
    return {"W2S_DATA_DIR": data, "W2S_QWEN1_CODE": code, "W2S_REHEARSAL_CACHE": cache, "HF_HUB_OFFLINE": "1",
            "W2S_REHEARSAL_GPU_GB": "80"}


def test_standins_keep_the_real_architecture_ratios():
    from harness.rehearsal_models import tiny_config

    layers = [tiny_config(m)["n_layer"] for m in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")]
    assert layers == [1, 2, 3, 4]                       # 12 : 24 : 36 : 48
    assert {tiny_config(m)["activation_function"] for m in ("gpt2", "gpt2-xl")} == {"gelu_new"}
    q = [tiny_config(m)["num_hidden_layers"] for m in ("Qwen/Qwen-1_8B", "Qwen/Qwen-7B", "Qwen/Qwen-14B", "Qwen/Qwen-72B")]
    assert q == sorted(q) and q[-1] > q[0]
    q25 = tiny_config("Qwen/Qwen2.5-14B")
    assert q25["num_attention_heads"] > q25["num_key_value_heads"] and not q25["tie_word_embeddings"]
    assert tiny_config("Qwen/Qwen2.5-0.5B")["tie_word_embeddings"]
    with pytest.raises(ValueError, match="no tiny stand-in"):
        tiny_config("bert-base-uncased")


def test_bpe_tokenizer_is_byte_level_with_bang_at_zero():
    from harness.rehearsal_models import bpe_tokenizer

    tok = bpe_tokenizer()
    assert tok.convert_ids_to_tokens(0) == "!"          # the reference's nonzero-count pooling (Q1) sees real 0s
    text = "Passage: naïve café — 42°\nQuestion: does it work?"
    assert tok.decode(tok(text)["input_ids"]) == text   # every byte encodes: nothing is unknown
    assert tok.eos_token == "<|endoftext|>"


def test_local_path_falls_back_to_name_split_jsonl(tmp_path):
    from harness.data import DATASETS, local_path

    (tmp_path / "sciq").mkdir()
    (tmp_path / "sciq" / "train.jsonl").write_text("{}\n")
    assert local_path(DATASETS["sciq"], "train", str(tmp_path)) == tmp_path / "sciq" / "train.jsonl"
    with pytest.raises(FileNotFoundError, match="no local file for split 'test'"):
        local_path(DATASETS["sciq"], "test", str(tmp_path))


def test_cut_and_rehearsed_zero_picks():
    from harness.manifest import load
    from harness.rehearsal import cut_pairs, intended_resources

    m = load(ROOT / "experiments/paper/sciq.yaml")
    labels = [mc.label for mc in m.models]
    pairs = cut_pairs(m, labels)
    assert pairs[:2] == [["gpt2", "gpt2-medium"], ["gpt2-medium", "gpt2-large"]]
    assert [p[1] for p in pairs[2:]] == ["gpt2-xl", "Qwen-1_8B", "Qwen-7B", "Qwen-14B"]
    picks = {mc.label: intended_resources(m, mc, 80.0) for mc in m.models}
    assert picks["gpt2"]["launcher"] == "none"
    assert (picks["gpt2-xl"]["zero_stage"], picks["Qwen-14B"]["zero_stage"]) == (0, 2)
    assert all(picks[x]["world"] == 8 for x in ("gpt2-xl", "Qwen-14B"))


def test_vision_manifest_is_refused_before_compute(rehearsal_env):
    proc = w2s("run", ROOT / "experiments/paper/imagenet_resnet50.yaml", "--rehearsal", "--no-tracking",
               check=False, env=rehearsal_env)
    assert proc.returncode == 2 and "vision manifests are not rehearsed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.rehearsal
def test_paper_boolq_rehearses_end_to_end(rehearsal_env, tmp_path):
    """boolq as written, on gpt2 (single process) -> Qwen-1_8B (remote code, DeepSpeed on 2 CPU ranks)."""
    from mlflow import MlflowClient

    runs = tmp_path / "runs"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    w2s("run", ROOT / "experiments/paper/boolq.yaml", "--rehearsal", "--models", "gpt2,Qwen-1_8B",
        "-o", f"output.dir={runs}", "--tracking-uri", uri, env=rehearsal_env, timeout=1500)
    out = tmp_path / "runs-rehearsal"
    assert not runs.exists()                          # nothing written where real results live
    doc = json.loads((out / "paper-boolq-rehearsal" / "results.json").read_text())
    meta = doc["meta"]
    assert meta["w2s.rehearsal"] is True and meta["name"] == "paper-boolq-rehearsal"
    r = meta["rehearsal"]
    assert r["problems"] == [] and r["finished"] == r["stage_count"] == 4
    assert r["data"]["validation"].startswith("real ") and r["data"]["train"].startswith("synthetic")
    assert {row["loss"] for row in doc["pgr"]} == {"xent", "logconf"}
    assert all(row["weak"] == "gpt2" and row["strong"] == "Qwen-1_8B" for row in doc["pgr"])
    # each stage's code path, as recorded by the process that trained it
    st = r["stages"]
    assert st["gt gpt2 train1 s0"]["loader"] == "transformers.AutoModel.from_pretrained"
    assert st["gt gpt2 train1 s0"]["deepspeed"] is False
    for slug in ("gt Qwen-1_8B train1 s0", "transfer gpt2->Qwen-1_8B xent s0", "transfer gpt2->Qwen-1_8B logconf s0"):
        cp = st[slug]
        assert cp["loader"] == "harness.qwen1.load_backbone" and cp["remote_code"] is True
        assert cp["backbone"].endswith("QWenModel")
        assert (cp["deepspeed"], cp["world_size"], cp["zero_stage"], cp["grad_ckpt"]) == (True, 2, 0, True)
        assert "AdamW" in cp["optimizer"] and cp["weight_dtype"] == "bfloat16"   # DeepSpeed bf16, fp32 master
    # stage identities hold the stand-in, never the hub model
    idents = [json.loads(p.read_text())["identity"] for p in (out / "stages").glob("*/stage.json")]
    assert idents and all(not i["model"]["id"].startswith(("Qwen/", "openai-community/")) for i in idents)
    # MLflow: its own experiment, tagged, and every run tagged with its code path
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("paper-boolq-rehearsal")
    assert exp.tags["w2s.rehearsal"] == "true" and client.get_experiment_by_name("paper-boolq") is None
    stage_runs = client.search_runs([exp.experiment_id], "tags.`w2s.role` = 'stage'")
    assert len(stage_runs) == 4 and all(x.data.tags["w2s.rehearsal"] == "true" for x in stage_runs)
    assert {x.data.tags["w2s.code_path.loader"] for x in stage_runs} == {
        "transformers.AutoModel.from_pretrained", "harness.qwen1.load_backbone"}
    # report --compare against the paper's expected numbers: it runs and compares rows (random weights fail them)
    rep = w2s("report", out / "paper-boolq-rehearsal", "--compare", ROOT / "experiments/expected/boolq.yaml",
              "--out", tmp_path / "report", check=False, env=rehearsal_env)
    assert rep.returncode in (0, 1), rep.stderr
    assert "passed" in rep.stdout and (tmp_path / "report").exists()


def _declared(tmp_path, files: dict) -> Path:
    byod = (ROOT / "experiments" / "byod.yaml").read_text()
    body = byod[byod.index("dataset:"):byod.index("models:")]
    decl = "\n".join(f"      {k}: {v}" for k, v in files.items())
    body = body.replace("      train: byod/train.jsonl\n      test: byod/test.jsonl", decl)
    path = tmp_path / "mine.yaml"
    path.write_text(f"name: mine\n{body}models: [{{id: gpt2}}, {{id: gpt2-medium}}]\nlosses: [xent]\nseeds: [0]\n"
                    f"output: {{dir: {tmp_path / 'runs'}}}\n")
    return path


def test_a_declared_dataset_from_the_hub_is_refused_with_the_fix(rehearsal_env, tmp_path):
    path = _declared(tmp_path, {"train": ROOT / "experiments/byod/train.jsonl"})
    text = path.read_text().replace("    files:", "    hub: someone/arithmetic\n    files:")
    path.write_text(text)
    proc = w2s("run", path, "--rehearsal", "--no-tracking", check=False, env=rehearsal_env)
    assert proc.returncode == 2 and "split(s) test of arithmetic come from the hub" in proc.stderr, proc.stderr
    assert "dataset.declare.files" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.rehearsal
def test_a_declared_dataset_rehearses_on_its_own_files(rehearsal_env, tmp_path):
    files = {"train": ROOT / "experiments/byod/train.jsonl", "test": ROOT / "experiments/byod/test.jsonl"}
    w2s("run", _declared(tmp_path, files), "--rehearsal", "--no-tracking", env=rehearsal_env, timeout=900)
    doc = json.loads((tmp_path / "runs-rehearsal" / "mine-rehearsal" / "results.json").read_text())
    r = doc["meta"]["rehearsal"]
    assert r["problems"] == [] and r["finished"] == r["stage_count"] == 3
    assert r["data"] == {s: f"declared {f}" for s, f in files.items()}
    assert doc["meta"]["dataset"] == "arithmetic" and [row["strong"] for row in doc["pgr"]] == ["gpt2-medium"]


def test_check_names_each_stage_that_took_another_path():
    from harness.rehearsal import check

    want = {"launcher": "deepspeed", "zero_stage": 2, "optimizer": "adafactor", "grad_ckpt": True, "remote_code": True}
    meta = {"models": {"Qwen-72B": {"intended": want}}}
    ok = {"remote_code": True, "loader": "harness.qwen1.load_backbone", "deepspeed": True, "grad_ckpt": True,
          "zero_stage": 2, "world_size": 2, "optimizer": "DeepSpeedOptimizerWrapper > DeepSpeedZeroOptimizer > Adafactor"}
    assert check(meta, {"gt Qwen-72B train1 s0": ok}) == []
    bad = {**ok, "loader": "transformers.AutoModel.from_pretrained", "grad_ckpt": False, "optimizer": "X > AdamW"}
    problems = check(meta, {"transfer gpt2->Qwen-72B xent s0": bad})
    assert len(problems) == 3 and all(p.startswith("transfer gpt2->Qwen-72B xent s0: ") for p in problems)
    assert any("grad_ckpt was False, expected True" in p for p in problems)
    assert any("optimizer was 'adam', expected 'adafactor'" in p for p in problems)
    assert any("loader was 'transformers.AutoModel.from_pretrained'" in p for p in problems)
