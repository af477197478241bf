"""The weak-to-strong protocol (Burns et al. 2023), as stages that are plain functions.

1. Ground truth: fine-tune every model on the weak half with true labels; evaluate it on the test set.
2. Weak labels: each weak supervisor labels the held-out student half with its soft predictions.
3. Ceiling: fine-tune each strong model on ground truth (on the weak half as the reference does, or on
   the student half, per fidelity.ceiling_half).
4. Transfer: fine-tune each strong student on its supervisor's weak labels, with each loss.
5. PGR = (w2s - weak) / (ceiling - weak), per pair, loss and seed (harness.results).

Every stage is content-addressed (harness.plan) and finishes with a done marker (harness.store), so
a rerun is all cache hits and a killed run resumes at the first unfinished stage.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import time

import numpy as np
import pandas as pd
import torch
from transformers import set_seed

from .data.splits import Splits, splits_for, text_hash
from .envinfo import versions
from .features import FeatureCache, FeatureCollator, HeadOnly, as_feature_items, fresh_head
from .manifest import Manifest
from .spec import thaw
from .lora import apply_lora
from .metrics import accuracy, auroc
from .models import load_classifier, load_tokenizer
from .plan import Stage, build_plan
from .rehearsal_trace import code_path
from .runner import run_stages
from .store import StageStore
from . import launch
from .train import Collator, HeadInitCheck, JsonlLog, Rows, W2STrainer, epoch_concat, predict, training_args

log = logging.getLogger(__name__)
# What determines a text's pooled features (the training hyper-parameters do not).
FEATURE_KEYS = ("id", "revision", "local_digest", "dtype", "precision", "decoder_pooling")
_FROZEN: dict[tuple, tuple] = {}   # loaded probe backbones, reused across stages of one process


def run(m: Manifest, tracker, *, force: bool = False, only: tuple[str, ...] = (),
        shard: tuple[int, int] | None = None, echo=print, backend=None) -> list[Stage]:
    plan = build_plan(m)
    store = StageStore(m.output.dir)
    splits: dict[int, Splits] = {}

    def execute(stage: Stage, sink) -> dict:
        if stage.seed not in splits:     # also before a launch: bad data is a DataError here, not in a worker
            splits[stage.seed] = splits_for(m, stage.seed)
        if launch.launched(stage):       # resources.launcher: a multi-process worker trains the stage
            return launch.run_stage(m, stage, store, sink, echo=echo)
        return (ground_truth if stage.kind == "gt" else transfer)(stage, splits[stage.seed], store, sink)

    run_stages(plan, store, tracker, execute, force=force, only=only, shard=shard, echo=echo, backend=backend)
    return plan


def ground_truth(stage: Stage, splits: Splits, store: StageStore, sink, deepspeed: dict | None = None) -> dict:
    """Train on true labels; on the weak half, also label the student half (the weak labels).
    `deepspeed`: the config a launched worker (harness.worker) trains with; None in a single process."""
    store.begin(stage.key, stage.identity)
    rows = splits.part(stage.half)
    label_rows = splits.train2 if stage.half == "train1" else []
    out = fine_tune(stage, rows, splits.test, label_rows, store, sink, deepspeed)
    # texts dropped / still overlapping (fidelity.dedup): numbers, so that MLflow shows them as metrics
    out.update({f"dedup_{k}": v for k, v in splits.info.get("dedup", {}).items() if k != "mode"})
    if stage.half == "train1":
        kept, probs = out.pop("labelled")
        store.write_table(stage.key, "weak_labels", label_table(kept, probs, with_text=True))
        out["weak_label_acc"] = accuracy(probs, np.array([r["hard_label"] for r in kept]))   # Q10
    return out


def transfer(stage: Stage, splits: Splits, store: StageStore, sink, deepspeed: dict | None = None) -> dict:
    """Train the strong student on its supervisor's soft labels. Ground truth is never read from the
    weak-label table (Q25): only ids, text hashes and probabilities are loaded. A chain step (harness.chains)
    trains on its own half and labels the other one, for the next step."""
    weak = store.read_table(stage.teacher, "weak_labels", columns=["id", "text_hash", "soft_label"])
    store.begin(stage.key, stage.identity)
    by_id = {r["id"]: r for r in splits.part(stage.half)}
    rows = []
    for wid, h, soft in zip(weak["id"], weak["text_hash"], weak["soft_label"]):
        row = by_id.get(wid)
        if row is None or text_hash(row["txt"]) != h:
            raise RuntimeError(f"{stage.slug}: weak label {wid} does not match the {stage.half} half; the teacher "
                               f"stage was computed from other data (stale cache?)")
        rows.append({"id": wid, "txt": row["txt"], "soft_label": [float(soft[0]), float(soft[1])],
                     "hard_label": None})
    label_rows = splits.part("train1" if stage.half == "train2" else "train2") if stage.kind == "chain" else []
    out = fine_tune(stage, rows, splits.test, label_rows, store, sink, deepspeed)
    if label_rows:
        kept, probs = out.pop("labelled")
        store.write_table(stage.key, "weak_labels", label_table(kept, probs, with_text=True))
        out["weak_label_acc"] = accuracy(probs, np.array([r["hard_label"] for r in kept]))
    teacher_test = store.read_table(stage.teacher, "predictions_test", columns=["id", "hard_label"])
    student_test = store.read_table(stage.key, "predictions_test", columns=["id", "hard_label"])
    both = student_test.merge(teacher_test, on="id", suffixes=("", "_teacher"))
    out["agreement_test"] = float((both["hard_label"] == both["hard_label_teacher"]).mean())
    out["weak_acc"] = store.metrics(stage.teacher)["test_acc"]
    return out


def feature_identity(stage: Stage, pooling: str, max_ctx: int, overlength: str) -> dict:
    """What a text's cached probe features depend on: the backbone, the pooling, the tokenization, and
    the code that loads the model and embeds texts (a change there must not reuse old features)."""
    code = stage.identity.get("code", {})
    return {**{k: stage.identity["model"].get(k) for k in FEATURE_KEYS}, "pooling": pooling, "max_ctx": max_ctx,
            "overlength": overlength, "code": {k: code.get(k) for k in ("version", "protocol", "model")}}


def fine_tune(stage: Stage, train_rows, test_rows, label_rows, store: StageStore, sink,
              deepspeed: dict | None = None) -> dict:
    """One HF Trainer run: tokenize, train, evaluate on test, optionally predict `label_rows`. Everything
    it is configured by comes from `stage.spec` (harness.spec), resolved once when the plan was built."""
    spec = stage.spec
    ms, t = spec.model, spec.train
    hub_id, revision, remote = ms.id, ms.revision, ms.trust_remote_code
    set_seed(stage.seed)
    tok = load_tokenizer(hub_id, revision, remote)
    mixed = ms.precision == "mixed"
    decoder_pooling = "nonzero_count" if ms.decoder_pooling == "nonzero_count" else "last"
    max_ctx, overlength = spec.data.max_ctx, spec.data.overlength
    train_items, train_kept, drop_train = encode(tok, train_rows, max_ctx, overlength)
    test_items, test_kept, drop_test = encode(tok, test_rows, max_ctx, overlength)
    label_items, label_kept, drop_label = encode(tok, label_rows, max_ctx, overlength)
    if not train_items:
        raise RuntimeError(f"{stage.slug}: no training rows left after the max_ctx={max_ctx} filter")
    nsteps = math.floor(len(train_items) * t.epochs / t.batch_size)
    # Launched workers (harness.worker) pass the DeepSpeed config in; the arguments come before the model
    # so that HF's ZeRO-3 integration (zero.Init) is on while it is built. HF fills the dict in: a copy.
    ds = thaw(deepspeed) if deepspeed else None
    args = training_args(store.dir(stage.key) / "trainer", t.as_dict(), stage.seed, max(1, nsteps),
                         int(os.environ.get("WORLD_SIZE", 1)) if ds else 1, ms.precision, spec.log_every,
                         deepspeed=ds)
    if ds:
        _ = args.device     # sets up the process group before zero.Init
    def load():
        model, _, commit = load_classifier(hub_id, revision, "float32" if mixed else t.dtype, ms.pooling,
                                             decoder_pooling, t.linear_probe, t.head_init, t.dropout,
                                             head_fp32=mixed, trust_remote_code=remote)
        # train.lora: adapters into the built backbone; only they and the head train (harness.lora)
        return apply_lora(model, thaw(t.lora), stage.seed, t.gradient_checkpointing), commit
    # A probe never changes its backbone: keep it loaded for the next stage of the same model.
    probe_key = (hub_id, revision, mixed, t.dtype, ms.pooling, decoder_pooling, remote)
    if t.linear_probe and not ds:
        if probe_key not in _FROZEN:
            _FROZEN[probe_key] = load()
        model, commit = _FROZEN[probe_key]
    else:
        model, commit = load()
    pooling = model.pooling
    pad_id = 0 if pooling == "nonzero_count" else tok.pad_token_id
    collate = Collator(pad_id)
    if t.linear_probe:
        # Frozen backbone, no dropout: pooled features are a constant per text, so compute them once
        # (cached across stages) and train the head alone (harness.features).
        cache = FeatureCache(spec.output_dir, feature_identity(stage, pooling, max_ctx, overlength))
        backbone = model

        def to_features(items, rows):
            hashes = [text_hash(r["txt"]) for r in rows]
            return as_feature_items(items, cache.get(backbone, items, hashes, t.eval_batch, collate))
        train_items, test_items = to_features(train_items, train_kept), to_features(test_items, test_kept)
        label_items = to_features(label_items, label_kept)
        model, collate = HeadOnly(fresh_head(model.score, t.head_init)), FeatureCollator()
    steps_items = epoch_concat(train_items, t.epochs, t.batch_size)   # nsteps x batch rows
    if nsteps == 0:
        raise RuntimeError(f"{stage.slug}: {len(train_items)} rows x {t.epochs} epochs is less than one batch "
                           f"of {t.batch_size}; raise dataset.n_docs")
    d = store.dir(stage.key)
    trainer = W2STrainer(model=model, args=args, train_dataset=Rows(steps_items), data_collator=collate,
                         loss_name=stage.loss["name"], loss_params=stage.loss["params"],
                         callbacks=[JsonlLog(d / "log.jsonl", sink, t.epochs), HeadInitCheck(t.head_init)])
    started = time.time()
    trainer.train()
    train_s = time.time() - started
    test_probs = predict(trainer, test_items)
    test_y = np.array([r["hard_label"] for r in test_kept])
    store.write_table(stage.key, "predictions_test", label_table(test_kept, test_probs, with_text=False))
    out = {"test_acc": accuracy(test_probs, test_y), "test_auroc": auroc(test_probs[:, 1], test_y),
           "n_train": len(train_items), "n_test": len(test_items), "steps": nsteps,
           "dropped_train": drop_train, "dropped_test": drop_test, "dropped_label": drop_label,
           "train_seconds": round(train_s, 2), "train_samples_per_s": round(nsteps * t.batch_size / train_s, 2),
           "model_commit": commit, "pooling": pooling, "versions": versions()}
    out["code_path"] = code_path(model, trainer)    # what really trained it (harness.rehearsal_trace)
    if label_rows:
        out["labelled"] = (label_kept, predict(trainer, label_items))
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def encode(tok, rows: list[dict], max_ctx: int, overlength: str):
    """Tokenize; rows with >= max_ctx tokens are dropped (reference) or truncated, and counted (Q12)."""
    if not rows:
        return [], [], 0
    ids = tok([r["txt"] for r in rows], add_special_tokens=True)["input_ids"]
    items, kept, dropped = [], [], 0
    for r, x in zip(rows, ids):
        if len(x) >= max_ctx:
            dropped += 1
            if overlength == "drop":
                continue
            x = x[: max_ctx - 1]
        items.append({"input_ids": x, "soft_label": r["soft_label"]})
        kept.append(r)
    return items, kept, dropped


def label_table(rows: list[dict], probs: np.ndarray, with_text: bool) -> pd.DataFrame:
    """Predictions: id, text hash, probabilities, hard label; ground truth only in `analysis_gt_label`."""
    df = pd.DataFrame({"id": [r["id"] for r in rows], "text_hash": [text_hash(r["txt"]) for r in rows],
                       "soft_label": [list(map(float, p)) for p in probs],
                       "hard_label": probs.argmax(-1).astype(int) if len(probs) else np.zeros(0, int)})
    if with_text:
        df.insert(2, "txt", [r["txt"] for r in rows])
    df["analysis_gt_label"] = [r["hard_label"] for r in rows]
    return df
