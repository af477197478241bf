"""The rehearsal (`w2s run FILE --rehearsal`, `make reproduce-paper REHEARSAL=1`): a paper manifest run as
written (dataset, formatter, splits, losses, fidelity, resources with real DeepSpeed launches, tracking,
`report --compare`) with every model replaced by a tiny random model of the same architecture and
loading path (harness.rehearsal_models) and the data by local or synthetic files (harness.rehearsal_data).
It finds on CPU, in minutes, what would otherwise fail an hour into a GPU run. docs/rehearsal.md says
exactly what is cut (seeds, pairs, n_docs) and why.

Kept apart from real results: the manifest is renamed `<name>-rehearsal` (MLflow experiment, results
folder), its output dir is `<output.dir>-rehearsal`, the stage identities hold the tiny models' paths and
digests (never a real stage's key), and results.json and every MLflow run carry `w2s.rehearsal=true`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from . import rehearsal_data, rehearsal_models

N_DOCS, N_TEST_DOCS = 128, 64   # 64 rows a half: 4 optimizer steps of the reference's batch 32 over 2 epochs
RANKS = 2                        # DeepSpeed ranks on CPU (the manifests ask for 8 GPUs)
TAG = "w2s.rehearsal"
# Parameter counts of models outside the model table (published sizes), for the ZeRO `auto` pick.
PARAMS = {"Qwen/Qwen2.5-0.5B": 0.49e9, "Qwen/Qwen2.5-1.5B": 1.54e9, "Qwen/Qwen2.5-3B": 3.09e9,
          "Qwen/Qwen2.5-7B": 7.62e9, "Qwen/Qwen2.5-14B": 14.7e9}
TRAIN_KEYS = ("lr", "batch_size", "micro_batch", "eval_batch", "epochs", "lr_schedule", "optimizer", "dtype",
              "linear_probe", "head_init", "dropout", "gradient_checkpointing", "lora")


class RehearsalError(ValueError):
    pass


def gpu_memory_gb() -> float:
    """The GPU the real run is rehearsed for: $W2S_REHEARSAL_GPU_GB, else the visible GPU, else 80 GB."""
    if os.environ.get("W2S_REHEARSAL_GPU_GB"):
        return float(os.environ["W2S_REHEARSAL_GPU_GB"])
    from .zero import gpu_memory_gb as visible

    return visible({}) or 80.0


def intended_resources(m, mc, mem: float) -> dict:
    """What the real run's resources resolve to on `mem` GB GPUs: launcher, ZeRO stage and offload."""
    from .models import MODELS
    from .zero import auto_policy, world_size

    res, t = m.resolved_resources(mc), m.resolved_train(mc)
    if res["launcher"] == "none":
        return {"launcher": "none", "world": 1, "zero_stage": None, "offload_optimizer": "none", "offload_params": "none"}
    params = MODELS[mc.id].params if mc.id in MODELS else PARAMS.get(mc.id)
    mixed = m.fidelity.resolved()["precision"] == "mixed" and t["dtype"] != "float32"
    stage, oo, op = res["zero_stage"], res["offload_optimizer"], res["offload_params"]
    if stage == "auto":
        stage, oo2, op2, _ = auto_policy(params, res["gpu_memory_gb"] or mem, world_size(res), mixed,
                                      t["optimizer"])
        oo, op = oo or oo2, op or op2
    return {"launcher": res["launcher"], "world": world_size(res), "zero_stage": stage,
            "offload_optimizer": oo or "none", "offload_params": op or "none"}


def cut_pairs(m, labels: list[str]) -> list[list[str]]:
    """Neighbours among single-process models (each model trains and supervises once), and the weakest
    model -> every launched model (each launched model runs its ground truth and a transfer per loss)."""
    launched = [mc.label for mc in m.models if mc.label in labels and m.resolved_resources(mc)["launcher"] != "none"]
    single = [x for x in labels if x not in launched]
    pairs = [[a, b] for a, b in zip(single, single[1:])]
    return pairs + [[labels[0], s] for s in launched if s != labels[0]]


def declared_data(path, d, splits: list[str]) -> dict:
    """A declared dataset is rehearsed on its own local files (the rehearsal is offline: a split the
    declaration reads from the hub needs a file, a sample is enough)."""
    hub = [s for s in splits if s not in d.declare.files]
    if hub:
        raise RehearsalError(f"{path}: dataset.declare: the rehearsal runs offline, and split(s) {', '.join(hub)} of "
                             f"{d.name} come from the hub ({d.declare.hub}); give a local file for each under "
                             f"dataset.declare.files (a few hundred rows are enough), e.g. files: {{{hub[0]}: sample.jsonl}}")
    return d.declare.model_dump(mode="json", exclude_defaults=True)


def prepare(path: str, overrides=(), models: str | None = None) -> Path:
    """Writes the rehearsal manifest of `path` (tiny models built, data laid out) and returns its path."""
    from .data.declared import spec_of
    from .manifest import load

    m = load(path, list(overrides))
    from .kinds import kind_of

    if kind_of(m).name != "language":
        raise RehearsalError(f"{path}: vision manifests are not rehearsed (docs/rehearsal.md says why)")
    if models:
        m = m.select_models([x.strip() for x in models.split(",") if x.strip()])
    d = m.dataset
    spec = spec_of(d)
    splits = [d.splits.train or spec.train_split] + ([] if d.splits.test == "cut" else [d.splits.test or spec.test_split])
    if d.declare is not None:
        data = {"declare": declared_data(path, d, splits)}      # your own files, as they are
        origin = {s: f"declared {d.declare.files[s]}" for s in splits}
    else:
        data_root, origin = rehearsal_data.build(d.name, splits, max(2 * N_DOCS, N_TEST_DOCS + 1))
        data = {"source": str(data_root)}
    mem = gpu_memory_gb()
    entries, record = [], {}
    for mc in m.models:
        if rehearsal_models.family(mc.id) is None:
            raise RehearsalError(f"{path}: model {mc.label} ({mc.id}) has no tiny stand-in; the rehearsal builds "
                                 f"GPT-2, Qwen-1 and Qwen2.5 (harness/rehearsal_models.py)")
        t = m.resolved_train(mc)
        intended = intended_resources(m, mc, mem)
        local = rehearsal_models.build(mc.id)
        entry = {"name": mc.label, "id": str(local), "trust_remote_code": m.trust_remote_code(mc),
                 **{k: t[k] for k in TRAIN_KEYS if t.get(k) is not None}}
        if mc.pooling:
            entry["pooling"] = mc.pooling
        if intended["launcher"] == "none":
            entry["resources"] = {"launcher": "none"}
        else:   # the real run's pick, on RANKS CPU ranks (the optimizer batch stays batch_size)
            entry["resources"] = {"launcher": intended["launcher"], "gpus": RANKS, "nodes": 1,
                                  **{k: intended[k] for k in ("zero_stage", "offload_optimizer", "offload_params")}}
        entries.append(entry)
        record[mc.label] = {"stands_in_for": mc.id, "path": str(local), "config": rehearsal_models.tiny_config(mc.id),
                            "intended": {**intended, "optimizer": t["optimizer"], "grad_ckpt": bool(t["gradient_checkpointing"]),
                                         "remote_code": m.trust_remote_code(mc), "dtype": t["dtype"]}}
    labels = [mc.label for mc in m.models]
    out_dir = f"{m.output.dir.rstrip('/')}-rehearsal"
    raw = {"name": f"{m.name}-rehearsal",
           "dataset": {"name": d.name, **data, "n_docs": min(d.n_docs, N_DOCS),
                       "n_test_docs": min(d.n_test_docs, N_TEST_DOCS), "max_ctx": d.max_ctx,
                       **({"sampling": d.sampling} if d.sampling else {}),
                       "splits": d.splits.model_dump(exclude_none=True), "cut_seed": d.cut_seed},
           "models": entries, "pairs": cut_pairs(m, labels) if len(labels) > 1 else m.pairs,
           "losses": [lc.model_dump() for lc in m.losses], "gt_loss": m.gt_loss.model_dump(),
           "seeds": m.seeds[:1], "fidelity": m.fidelity.model_dump(exclude_none=True),
           "output": {"dir": out_dir, "log_every": m.output.log_every}, "tracking": m.tracking.model_dump(exclude_none=True)}
    meta = {"source_manifest": str(path), "source_name": m.name, "gpu_memory_gb": mem, "models": record,
            "data": origin, "cut": {"seeds": f"{m.seeds} -> {m.seeds[:1]}", "n_docs": f"{d.n_docs} -> {raw['dataset']['n_docs']}",
                                    "n_test_docs": f"{d.n_test_docs} -> {raw['dataset']['n_test_docs']}",
                                    "pairs": f"{len(m.pairs_list())} -> {len(raw['pairs'])}", "gpus": f"-> {RANKS} CPU ranks"}}
    target = Path(out_dir) / "manifests" / f"{raw['name']}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"# The rehearsal of {path} (harness/rehearsal.py; docs/rehearsal.md). Generated: do not edit.\n"
                      + yaml.safe_dump(raw, sort_keys=False))
    (target.with_suffix(".json")).write_text(json.dumps(meta, indent=2))
    return target


def check(meta: dict, stages: dict) -> list[str]:
    """Each stage's recorded code path against what its model should have taken; problems as lines."""
    out = []
    for slug, cp in stages.items():
        label = slug.split()[1].split("->")[-1]
        want = meta["models"][label]["intended"]
        got = {"remote_code": cp.get("remote_code"), "deepspeed": cp.get("deepspeed"), "grad_ckpt": cp.get("grad_ckpt"),
               "zero_stage": cp.get("zero_stage"), "world": cp.get("world_size"),
               "optimizer": "adafactor" if "Adafactor" in (cp.get("optimizer") or "") else "adam"}
        exp = {"remote_code": want["remote_code"], "deepspeed": want["launcher"] != "none", "grad_ckpt": want["grad_ckpt"],
               "zero_stage": want["zero_stage"], "world": RANKS if want["launcher"] != "none" else 1,
               "optimizer": want["optimizer"]}
        out += [f"{slug}: {k} was {got[k]!r}, expected {exp[k]!r}" for k in exp if got[k] != exp[k]]
        if want["remote_code"] and cp.get("loader") != "harness.qwen1.load_backbone":
            out.append(f"{slug}: loader was {cp.get('loader')!r}, expected harness.qwen1.load_backbone")
    return out


def finish(m, rehearsal_manifest: Path, stage_list, tracker, results_dir: Path) -> list[str]:
    """After the run: code paths checked, results.json and MLflow tagged. Returns the problems."""
    from .store import StageStore

    meta = json.loads(rehearsal_manifest.with_suffix(".json").read_text())
    store = StageStore(m.output.dir)
    paths = {s.slug: store.metrics(s.key).get("code_path", {}) for s in stage_list if store.is_done(s.key)}
    problems = check(meta, paths)
    meta.update(stages=paths, stage_count=len(stage_list), finished=len(paths), problems=problems)
    res = results_dir / "results.json"
    if res.exists():
        doc = json.loads(res.read_text())
        doc["meta"][TAG] = True
        doc["meta"]["rehearsal"] = meta
        res.write_text(json.dumps(doc, indent=2))
    client, exp_id = getattr(tracker, "client", None), getattr(tracker, "exp_id", None)
    if client is not None and exp_id is not None:
        client.set_experiment_tag(exp_id, TAG, "true")
        client.set_experiment_tag(exp_id, "w2s.rehearsal_of", meta["source_manifest"])
        keys = {s.key: s.slug for s in stage_list}
        for run in client.search_runs([exp_id], max_results=5000):
            client.set_tag(run.info.run_id, TAG, "true")
            cp = paths.get(keys.get(run.data.tags.get("w2s.stage_key"), ""), {})
            for k, v in cp.items():
                client.set_tag(run.info.run_id, f"w2s.code_path.{k}", str(v))
    return problems
