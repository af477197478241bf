"""DeepSpeed ZeRO: config generation and validation (fast, no processes), gradient checkpointing and
the head-init check (fast), and 2-rank CPU runs with real DeepSpeed + gloo (marked `deepspeed`)."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import zero
from harness.manifest import ManifestError, load
from harness.plan import stage_specs

from conftest import w2s


def _load(tiny, *overrides):
    return load(tiny, list(overrides))


def _spec(m, mc):
    """The model's resolved stage description (harness.spec), as the plan attaches it to its stages."""
    return stage_specs(m)[mc.label]


# -- fast: config generation / validation ------------------------------------------------------
def test_ds_config_generated_and_validated(tiny):
    m = _load(tiny, "resources.launcher=torchrun", "resources.gpus=2", "resources.zero_stage=3")
    mc = m.models[1]
    r = zero.resolve(_spec(m, mc))
    assert (r["world"], r["zero_stage"], r["offload_optimizer"]) == (2, 3, "none")
    cfg = zero.validate(zero.ds_config(_spec(m, mc), r), r["world"])
    assert cfg["train_batch_size"] == 16 and cfg["train_micro_batch_size_per_gpu"] == 8
    assert cfg["gradient_accumulation_steps"] == 1 and cfg["zero_optimization"]["stage"] == 3
    assert cfg["bf16"] == {"enabled": False} and cfg["gradient_clipping"] == 0.0
    one = _load(tiny, "resources.launcher=deepspeed", "resources.zero_stage=2")   # 1 GPU: accumulate 2
    assert zero.ds_config(_spec(one, one.models[1]))["gradient_accumulation_steps"] == 2
    # resources are operational: the same stage keys as without them
    from harness.plan import build_plan
    assert [s.key for s in build_plan(m)] == [s.key for s in build_plan(_load(tiny))]


def test_unknown_deepspeed_key_rejected(tiny):
    with pytest.raises(ManifestError, match=r"unknown DeepSpeed key 'zero_optimisation'.*ignore it silently"):
        _load(tiny, "resources.launcher=deepspeed", "resources.deepspeed={zero_optimisation: {stage: 3}}")
    with pytest.raises(ManifestError, match=r"'train_batch_size' is generated from train.batch_size"):
        _load(tiny, "resources.launcher=deepspeed", "resources.deepspeed={train_batch_size: 64}")
    m = _load(tiny, "resources.launcher=deepspeed", "resources.deepspeed={wall_clock_breakdown: true}")
    cfg = zero.ds_config(_spec(m, m.models[0]))
    assert cfg["wall_clock_breakdown"] is True
    with pytest.raises(zero.ConfigError, match=r"unknown top-level key\(s\) \['bogus'\]"):
        zero.validate({**cfg, "bogus": 1}, 1)
    with pytest.raises(zero.ConfigError, match="DeepSpeed rejected"):   # DeepSpeed's own parser
        zero.validate({**cfg, "zero_optimization": {"stage": 3, "no_such_option": 1}}, 1)


def test_batch_arithmetic_error_names_field_and_fix(tiny):
    with pytest.raises(ManifestError) as e:
        _load(tiny, "resources.launcher=torchrun", "resources.gpus=3")
    msg = str(e.value)
    assert "resources.gpus" in msg and "must equal batch_size 16" in msg and "set resources.gpus to one of [1, 2]" in msg
    assert msg.count("\n") == 0, "reported once, not once per model"
    with pytest.raises(ManifestError, match=r"models\.1\.resources\.gpus.*set micro_batch to one of \[1, 2, 4\]"):
        _load(tiny, "models.1.resources={launcher: torchrun, gpus: 4}")
    m = _load(tiny, "resources.launcher=torchrun", "resources.gpus=2")
    cfg = zero.ds_config(_spec(m, m.models[0]))
    with pytest.raises(zero.ConfigError, match=r"world size 4 = 32 != train_batch_size 16; set train.micro_batch"):
        zero.validate(cfg, 4)
    with pytest.raises(ManifestError, match="need a launcher"):
        _load(tiny, "resources.gpus=2")
    with pytest.raises(ManifestError, match=r"fidelity\.precision.*no DeepSpeed equivalent"):
        _load(tiny, "resources.launcher=deepspeed", "train.dtype=bfloat16", "fidelity.precision=reference")


@pytest.mark.parametrize("params,mem,world,mixed,want", [
    (1.56e9, 80, 1, True, (0, "none", "none")),     # gpt2-xl fits one H100 without ZeRO
    (7.7e9, 80, 1, True, (2, "cpu", "none")),       # Qwen-7B on one GPU: optimizer states to CPU
    (7.7e9, 80, 8, True, (2, "none", "none")),      # ... on 8 GPUs: shard optimizer + grads
    (72.3e9, 80, 8, True, (3, "cpu", "none")),      # Qwen-72B on 8 GPUs
    (72.3e9, 80, 1, True, (3, "cpu", "cpu")),       # does not fit: the most offload, flagged
    (1e9, None, 2, True, (2, "none", "none")),      # unknown memory
])
def test_auto_policy(params, mem, world, mixed, want):
    assert zero.auto_policy(params, mem, world, mixed)[:3] == want


def test_memory_estimate_formula():
    e = zero.estimate_gb(1e9, 0, "none", "none", 1, True)
    assert e["total_gb"] == pytest.approx(16e9 / 2 ** 30)                  # 2 + 2 + 12 bytes/param
    e3 = zero.estimate_gb(1e9, 3, "none", "none", 4, True)
    assert e3["total_gb"] == pytest.approx(4e9 / 2 ** 30)                  # everything / 4
    assert zero.estimate_gb(1e9, 0, "none", "none", 1, False)["total_gb"] == pytest.approx(16e9 / 2 ** 30)


def test_plan_shows_resources(tiny):
    out = w2s("plan", tiny, "-o", "resources.launcher=deepspeed", "-o", "resources.gpus=2",
              "-o", "resources.gpu_memory_gb=80").stdout
    assert "deepspeed x2, ZeRO-0" in out and "model states" in out and "auto: fits" in out


# -- fast: head init check and gradient checkpointing -------------------------------------------
def test_head_init_check_fails_loudly():
    import torch
    from harness.models import check_head_init, init_head

    lin = torch.nn.Linear(64, 2, bias=False)
    with pytest.raises(RuntimeError, match="head_init=zero.*transformers#28244"):
        check_head_init(lin, "zero")
    init_head(lin, "zero")
    assert check_head_init(lin, "zero") == 0.0
    init_head(lin, "normal")
    check_head_init(lin, "normal")


def test_release_shm_unlinks_only_this_launchs_deepspeed_segments(tmp_path, monkeypatch):
    from harness import launch

    monkeypatch.setattr(launch, "SHM", tmp_path)
    uid = os.getuid()
    mine = [f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_57379_{r}" for r in (0, 1)]
    others = [f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_5737_0", f"deepspeed_allreduce_buffer_{uid + 1}_127.0.0.1_57379_0",
              f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_157379_0", "unrelated_57379_0"]
    for name in mine + others:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(launch.release_shm(57379)) == mine
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(others)


def test_a_launched_stage_feeds_its_training_rows_live(tmp_path):
    """harness.launch.follow: rows reach the sink while the workers run (the bar and MLflow move), a row
    still being written waits for its newline, and the rows written just before the exit are not lost."""
    import subprocess
    import sys
    import time

    from harness import launch

    log = tmp_path / "log.jsonl"
    writer = ("import json, sys, time\n"
              "f = open(sys.argv[1], 'a', buffering=1)\n"
              "f.write(json.dumps({'step': 1}) + '\\n'); time.sleep(1.5)\n"
              "f.write('{\"step\": '); f.flush(); time.sleep(1.5); f.write('2}\\n')\n"
              "f.write(json.dumps({'step': 3}) + '\\n')\n")
    seen = []
    proc = subprocess.Popen([sys.executable, "-c", writer, str(log)])
    launch.follow(proc, log, lambda row: seen.append((row["step"], proc.poll() is None)), poll=0.2)
    assert [step for step, _ in seen] == [1, 2, 3]
    assert seen[0][1], "the first row arrived while the writer was still running"


def _ds_shm() -> set[str]:
    return {f.name for f in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")}


def test_gradient_checkpointing_really_acts(tiny_assets, tmp_path, monkeypatch):
    """Training runs in train() mode with dropout off via the config, so HF checkpointing acts."""
    import transformers.modeling_utils as mu
    from harness.models import load_classifier, load_tokenizer
    from harness.train import Collator, Rows, W2STrainer, training_args

    calls = []
    real = mu.checkpoint     # what activation_checkpointing_enable binds into every layer
    monkeypatch.setattr(mu, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    path = str(tiny_assets / "models" / "tiny-gpt2")
    tok = load_tokenizer(path, None)
    model, _, _ = load_classifier(path, None, "float32", None, "last", False, "zero", False)
    assert all(v == 0.0 for k, v in vars(model.config).items() if "pdrop" in k)
    t = dict(batch_size=4, micro_batch=4, eval_batch=4, lr=1e-3, lr_schedule="constant", optimizer="adam",
             dtype="float32", gradient_checkpointing=True)
    items = [{"input_ids": tok("good film")["input_ids"], "soft_label": [0.0, 1.0]}] * 4
    args = training_args(tmp_path, t, 0, 1, 1, "mixed", 1)
    W2STrainer(model=model, args=args, train_dataset=Rows(items), data_collator=Collator(tok.pad_token_id),
               loss_name="xent", loss_params={}).train()
    assert model.is_activation_checkpointing and model.backbone.training
    assert len(calls) >= 2, "one checkpointed call per transformer block (2 layers)"


# -- deepspeed tier: 2 CPU ranks, gloo ---------------------------------------------------------
DS_ENV = {"OMP_NUM_THREADS": "1",
          "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR",
                                                 str(Path.home() / ".cache" / "torch_extensions"))}


def _stage_tables(runs: Path) -> dict:
    out = {}
    for d in sorted((runs / "stages").iterdir()):
        if d.name.startswith("_"):
            continue
        assert (d / "done.json").exists()
        out[d.name] = {p.stem: pd.read_parquet(p) for p in d.glob("*.parquet")}
    return out


@pytest.fixture(scope="module")
def single(tiny_assets, tmp_path_factory):
    """The single-process run everything below must reproduce."""
    root = tmp_path_factory.mktemp("single")
    path = root / "tiny.yaml"
    path.write_text((tiny_assets / "tiny.yaml").read_text().replace(f"{tiny_assets}/runs", str(root / "runs")))
    w2s("run", path, "--no-tracking", env=DS_ENV)
    return root / "runs"


@pytest.mark.deepspeed
@pytest.mark.parametrize("launcher,stage", [("torchrun", 2), ("deepspeed", 3)])
def test_zero_two_ranks_match_single_process(single, tiny, launcher, stage):
    """ZeRO-2 (torchrun) and ZeRO-3 (deepspeed launcher) on 2 gloo ranks, fp32: the same predictions
    row by row (|dp| <= 1e-4; observed ~1e-7) and the same PGR table. The logconf stage checks that
    its threshold is taken over the whole optimizer batch across ranks (per-rank quantiles differ).
    Every stage's head init is checked after engine setup (HeadInitCheck) or the worker fails."""
    runs = tiny.parent / "runs"
    shm_before = _ds_shm()
    tracking = [] if launcher == "deepspeed" else ["--no-tracking"]     # one launcher tracked (embedded MLflow)
    w2s("run", tiny, *tracking, "-o", f"resources.launcher={launcher}", "-o", "resources.gpus=2",
        "-o", f"resources.zero_stage={stage}", env=DS_ENV)
    assert _ds_shm() <= shm_before, "DeepSpeed's 66 MB CPU shm workspaces are released after each launch"
    want, got = _stage_tables(single), _stage_tables(runs)
    assert sorted(got) == sorted(want) and len(got) == 4, "one output per stage, same keys"
    for key, tables in want.items():
        assert sorted(got[key]) == sorted(tables)
        for name, a in tables.items():
            b = got[key][name]
            assert list(a["id"]) == list(b["id"]), f"{key}/{name}: example order"
            pa, pb = np.stack(a["soft_label"]), np.stack(b["soft_label"])
            np.testing.assert_allclose(pb, pa, atol=1e-4, err_msg=f"{key}/{name}")
            close = np.abs(pa[:, 1] - 0.5) < 1e-4
            assert (a["hard_label"][~close] == b["hard_label"][~close]).all()
        metrics = json.loads((runs / "stages" / "_launch" / key / "metrics.json").read_text())
        assert metrics["world_size"] == 2
        ds = json.loads((runs / "stages" / "_launch" / key / "ds_config.json").read_text())
        assert ds["zero_optimization"]["stage"] == stage
        log = (runs / "stages" / "_launch" / key / "worker.log").read_text()
        assert f"head init check: head_init=zero norm=0 zero3_partitioned={stage == 3}" in log
    if not tracking:     # the parent followed rank 0's training log into MLflow: every row, once
        from mlflow import MlflowClient

        from harness.mlflow_store import default_uri

        m = load(tiny, [f"resources.launcher={launcher}"])
        c = MlflowClient(default_uri(m))
        tracked = c.search_runs([c.get_experiment_by_name(m.name).experiment_id], "tags.`w2s.role` = 'stage'")
        assert len(tracked) == 4
        for r in tracked:
            rows = (runs / "stages" / r.data.tags["w2s.stage_key"][:16] / "log.jsonl").read_text().splitlines()
            losses = [json.loads(x)["loss"] for x in rows if "loss" in json.loads(x)]
            assert losses and [h.value for h in c.get_metric_history(r.info.run_id, "train_loss")] == losses
    pgr_a, pgr_b = pd.read_csv(single / "tiny" / "pgr.csv"), pd.read_csv(runs / "tiny" / "pgr.csv")
    assert len(pgr_a) == len(pgr_b) == 2
    for col in ("weak_acc", "w2s_acc", "ceiling_acc", "pgr"):
        np.testing.assert_allclose(pgr_b[col], pgr_a[col], atol=1e-6, err_msg=col)
