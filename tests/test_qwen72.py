"""Qwen-72B (issue #10): the reference's Adafactor under DeepSpeed.

Fast: the Adafactor-aware memory estimate, `zero_stage: auto` never offloading Adafactor's optimizer,
an explicit offload refused before any compute, the plan-time warning about ZeRO's flat partitions,
and a scheduler that survives ZeRO-3's emptied param groups. `deepspeed`: a tiny Qwen-1 with the
Qwen-72B table settings trains under ZeRO-3 on 2 gloo ranks. `rehearsal`: the Qwen-72B rehearsal with
auto resolved for the real 72.3B parameters on 8 x 80 GB GPUs."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import zero
from harness.manifest import ManifestError, lint, load
from harness.plan import stage_specs
from harness.models import MODELS

from conftest import ROOT, w2s

Q72 = MODELS["Qwen/Qwen-72B"]
GB = 1024 ** 3
SHARED = ROOT.parent / "shared"


# -- fast: estimate and auto policy --------------------------------------------------------------
def test_adafactor_estimate_uses_its_real_state():
    """Adam: master 4 + m 4 + v 4 bytes/param (mixed). Adafactor (beta1 None): no momentum; factored
    (~0 bytes) on the model's own tensors (ZeRO-0), a full fp32 moment on ZeRO's flat partitions."""
    assert zero.optim_bytes("adam", True, 3) == 12 and zero.optim_bytes("adam", False, 0) == 8
    assert zero.optim_bytes("adafactor", True, 0) == 4 and zero.optim_bytes("adafactor", False, 0) == 0
    assert zero.optim_bytes("adafactor", True, 2) == 8 and zero.optim_bytes("adafactor", True, 3) == 8
    e3 = zero.estimate_gb(Q72.params, 3, "none", "none", 8, True, "adafactor")
    assert e3["total_gb"] == pytest.approx(Q72.params * (2 + 2 + 8) / 8 / GB)      # 101.0 GiB
    adam3 = zero.estimate_gb(Q72.params, 3, "none", "none", 8, True)
    assert adam3["total_gb"] == pytest.approx(Q72.params * 16 / 8 / GB)             # 134.7 GiB


def test_adafactor_state_is_factored_only_on_2d_tensors():
    """What the estimate assumes, checked on transformers' Adafactor as the harness builds it."""
    from transformers.optimization import Adafactor

    mat, flat = torch.nn.Parameter(torch.randn(6, 4)), torch.nn.Parameter(torch.randn(24))
    opt = Adafactor([mat, flat], lr=None, relative_step=True, scale_parameter=True, warmup_init=False)
    (mat.sum() + flat.sum()).backward()
    opt.step()
    assert opt.param_groups[0]["beta1"] is None
    assert sorted(opt.state[mat]) == ["RMS", "exp_avg_sq_col", "exp_avg_sq_row", "step"]   # 6 + 4 numbers
    assert sorted(opt.state[flat]) == ["RMS", "exp_avg_sq", "step"]                        # 24 numbers
    assert opt.state[flat]["exp_avg_sq"].numel() == flat.numel()


@pytest.mark.parametrize("mem,world,want,fits", [
    (80, 8, (3, "none", "cpu"), False),     # the paper's 8 x 80 GB: nothing fits without optimizer offload
    (141, 8, (3, "none", "cpu"), True),     # 8 x H200: ZeRO-3 + weights on CPU, 84.2 GiB of 98.7
    (80, 16, (3, "none", "none"), True),    # two 8 x 80 GB nodes: ZeRO-3, 50.5 GiB of 56
])
def test_auto_never_offloads_adafactors_optimizer(mem, world, want, fits):
    stage, oo, op, why = zero.auto_policy(Q72.params, mem, world, True, "adafactor")
    assert (stage, oo, op) == want and why.startswith("fits") == fits
    if not fits:
        assert "expect OOM" in why and "ZeRO-3 needs at least 15 GPUs of 80 GB" in why
    assert zero.auto_policy(Q72.params, mem, 8, True)[1] == "cpu"    # Adam's estimate would offload


def _q72(tmp_path, *overrides):
    """A tiny manifest whose strong model is listed with the Qwen-72B table settings (the id is the real
    one: validation and plan need no weights; the table gives Adafactor and 72.3e9 params)."""
    path = tmp_path / "q72.yaml"
    path.write_text(f"""\
name: q72
dataset: {{name: sciq, n_docs: 64, n_test_docs: 32}}
models:
  - {{id: gpt2}}
  - {{id: Qwen/Qwen-72B, dtype: bfloat16, micro_batch: 1, gradient_checkpointing: true,
      resources: {{launcher: deepspeed, gpus: 8, zero_stage: auto, gpu_memory_gb: 141}}}}
train: {{batch_size: 32, micro_batch: 16}}
fidelity: {{precision: mixed}}
output: {{dir: {tmp_path}/runs}}
""")
    return path


def test_resolve_and_plan_pick_no_offload_for_qwen72(tmp_path):
    m = load(_q72(tmp_path))
    r = zero.resolve(stage_specs(m)[m.models[1].label])
    assert (r["zero_stage"], r["offload_optimizer"], r["offload_params"], r["optimizer"]) == (3, "none", "cpu", "adafactor")
    assert r["estimate"]["total_gb"] == pytest.approx(84.17, abs=0.01)
    cfg = zero.validate(zero.ds_config(stage_specs(m)[m.models[1].label], r), r["world"])
    assert "optimizer" not in cfg and "offload_optimizer" not in cfg["zero_optimization"]
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    out = w2s("plan", _q72(tmp_path)).stdout
    assert "deepspeed x8, ZeRO-3 + offload params" in out and "fits 84.2 of 141 GB" in out


def test_explicit_offload_with_adafactor_is_refused_before_compute(tmp_path):
    path = _q72(tmp_path)
    with pytest.raises(ManifestError, match=r"models\.1\.resources\.offload_optimizer.*replace Adafactor.*"
                                            r"offload_optimizer: none"):
        load(path, ["models.1.resources.offload_optimizer=cpu"])
    proc = w2s("run", path, "--no-tracking", "-o", "models.1.resources.offload_optimizer=cpu", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert "q72.yaml" in proc.stderr + proc.stdout and "offload_optimizer" in proc.stderr + proc.stdout
    assert not (tmp_path / "runs").exists()


def test_plan_warns_that_zero_changes_adafactor(tmp_path):
    m = load(_q72(tmp_path))
    assert any("Adafactor steps on flat 1-D fp32 partitions" in w for w in lint(m))
    single = load(_q72(tmp_path), ["models.1.resources={launcher: none}"])
    assert not any("flat 1-D" in w for w in lint(single))


# -- fast: the scheduler under ZeRO-3's emptied param groups -------------------------------------
def test_relative_step_schedule_survives_empty_param_groups():
    from transformers.optimization import Adafactor, AdafactorSchedule

    from harness.optim import RelativeStepSchedule, relative_step

    p = torch.nn.Parameter(torch.randn(8))
    opt = Adafactor([p], lr=None, relative_step=True, scale_parameter=True, warmup_init=False)
    opt.param_groups[0]["params"] = []          # what DeepSpeed ZeRO-3 leaves between steps
    with pytest.raises(IndexError):             # the bug the rehearsal found (transformers' schedule)
        AdafactorSchedule(opt)
    sched = RelativeStepSchedule(opt)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(3):
        opt.param_groups[0]["params"] = [p]     # ZeRO-3 puts its fp32 partition back for the step
        p.grad = torch.ones_like(p)
        opt.step()
        opt.param_groups[0]["params"] = []
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs == [relative_step(t) for t in (1, 2, 3, 4)] == [1e-2] * 4
    assert relative_step(10_000) == 1e-2 and relative_step(40_000) == pytest.approx(1 / 200)
    assert opt.state[p]["step"] == 3


# -- deepspeed tier: ZeRO-3 on 2 gloo ranks, a tiny Qwen-1 as Qwen-72B's table trains it -------
WORKER = Path(__file__).with_name("qwen72_zero3_worker.py")


@pytest.mark.deepspeed
def test_tiny_qwen1_trains_with_adafactor_under_zero3(tmp_path):
    from harness.tiny import make_qwen1

    os.environ.setdefault("W2S_QWEN1_CODE", str(SHARED / "assets" / "qwen1-remote-code"))
    qwen = make_qwen1(tmp_path / "tiny-qwen1")
    real = load(_q72(tmp_path))     # what the table and _reference.yaml's listing give the real Qwen-72B
    t = real.resolved_train(real.models[1])
    assert (t["optimizer"], t["dtype"], t["micro_batch"], t["gradient_checkpointing"], t["batch_size"]) == (
        "adafactor", "bfloat16", 1, True, 32)
    path = tmp_path / "z3.yaml"
    path.write_text(f"""\
name: z3
dataset: {{name: sciq, n_docs: 64, n_test_docs: 32}}
models:
  - {{id: gpt2}}
  - {{id: {qwen}, trust_remote_code: true, optimizer: {t['optimizer']}, lr: {t['lr']}, dtype: {t['dtype']},
      micro_batch: {t['micro_batch']}, gradient_checkpointing: {str(t['gradient_checkpointing']).lower()},
      resources: {{launcher: torchrun, gpus: 2, zero_stage: 3}}}}
train: {{batch_size: {t['batch_size']}, micro_batch: 16}}
fidelity: {{precision: mixed}}
output: {{dir: {tmp_path}/runs}}
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={29500 + os.getpid() % 1000}", str(WORKER), str(path), str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    got = json.loads((tmp_path / "out" / "result.json").read_text())
    assert got["zero_stage"] == 3 and got["world_size"] == 2 and got["ds_optimizer"] is None
    assert got["optimizer"].endswith("Adafactor") and got["lr_scheduler"] == "RelativeStepSchedule"
    assert got["steps"] == 3 and len(got["losses"]) >= 3 and all(math.isfinite(x) for x in got["losses"])
    # gathered from the partitions: every matrix moved. The RMSNorm gains (1-D, all 1.0) may not have yet:
    # ZeRO's per-partition parameter scale gives them steps of ~1e-2 x RMS(partition) ~ 2e-4, below bf16's
    # resolution at 1.0 (per-tensor Adafactor: 1e-2 x RMS(gain) = 1e-2); docs/footguns.md.
    assert got["tensors"] == 19 and got["changed"] >= 14, got
    assert all(got["ndim"][n] == 1 and n.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight"))
               for n in got["unchanged"]), got["unchanged"]
    assert got["lrs"] == [1e-2] * len(got["lrs"])


# -- rehearsal tier: Qwen-72B as docs/rehearsal.md runs it, auto for the real 72.3B on 80 GB ---------
@pytest.mark.rehearsal
def test_qwen72_rehearses_with_auto_zero(tmp_path):
    env = {"W2S_DATA_DIR": os.environ.get("W2S_DATA_DIR") or str(SHARED / "data"),
           "W2S_QWEN1_CODE": os.environ.get("W2S_QWEN1_CODE") or str(SHARED / "assets" / "qwen1-remote-code"),
           "W2S_REHEARSAL_GPU_GB": "80", "HF_HUB_OFFLINE": "1"}
    path = tmp_path / "q72.yaml"
    path.write_text(f"""\
extends: {ROOT}/experiments/paper/_reference.yaml
name: paper-sciq-q72
dataset: {{name: sciq}}
x-zero: &zero {{launcher: deepspeed, gpus: 8, zero_stage: auto}}
models:
  - {{id: gpt2}}
  - {{id: Qwen/Qwen-72B, dtype: bfloat16, micro_batch: 1, gradient_checkpointing: true, resources: *zero}}
output: {{dir: {tmp_path}/runs}}
""")
    w2s("run", path, "--rehearsal", "--no-tracking", env=env, timeout=1500)
    doc = json.loads((tmp_path / "runs-rehearsal" / "paper-sciq-q72-rehearsal" / "results.json").read_text())
    r = doc["meta"]["rehearsal"]
    assert r["problems"] == [] and r["finished"] == r["stage_count"]
    want = r["models"]["Qwen-72B"]["intended"]
    assert (want["zero_stage"], want["offload_optimizer"], want["offload_params"]) == (3, "none", "cpu")
    q = [v for k, v in r["stages"].items() if "Qwen-72B" in k]
    assert len(q) == 3 and {row["loss"] for row in doc["pgr"]} == {"xent", "logconf"}
    for cp in q:
        assert (cp["deepspeed"], cp["zero_stage"], cp["world_size"]) == (True, 3, 2)
        assert cp["optimizer"].endswith("Adafactor") and cp["lr_scheduler"] == "RelativeStepSchedule"
    cfgs = [json.loads(p.read_text()) for p in (tmp_path / "runs-rehearsal" / "stages" / "_launch").glob("*/ds_config.json")]
    assert len(cfgs) == 3 and all("optimizer" not in c for c in cfgs)        # no CPU AdamW in Adafactor's place
    assert all(c["zero_optimization"]["offload_param"]["device"] == "cpu" and c["bf16"]["enabled"] for c in cfgs)
