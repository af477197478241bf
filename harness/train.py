"""Fine-tuning through HF Trainer: a subclass that applies a registry loss to soft labels.

Reference semantics kept (REFERENCE.md §7): the data is shuffled once, epochs are concatenated in the
same order and a batch may straddle the epoch boundary; the remainder is dropped; Adam without weight
decay or clipping; cosine to 0 without warmup; losses see the whole optimizer batch.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, SequentialSampler
from transformers import Trainer, TrainerCallback, TrainingArguments

from .losses import BATCH_STATS, LOSSES


class Rows(Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class Collator:
    """Right-pads input_ids with `pad_id` (0 under the reference pooling, as the reference pads)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        n, width = len(batch), max(len(b["input_ids"]) for b in batch)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b["input_ids"])] = torch.as_tensor(b["input_ids"])
            mask[i, : len(b["input_ids"])] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if "soft_label" in batch[0]:
            out["soft_label"] = torch.tensor([b["soft_label"] for b in batch], dtype=torch.float32)
        return out


def epoch_concat(items: list[dict], epochs: float, batch_size: int) -> list[dict]:
    """nsteps = floor(|D|·epochs / batch); the same order every epoch; the remainder dropped."""
    nsteps = math.floor(len(items) * epochs / batch_size)
    n = nsteps * batch_size
    return [items[i % len(items)] for i in range(n)]


class JsonlLog(TrainerCallback):
    """Each Trainer log row into the stage's log.jsonl (and the tracker's sink). The epochs are concatenated
    into one HF "epoch" (epoch_concat, reference semantics), so HF's `epoch` counts to 1: the row's `epoch`
    is the manifest's (progress x epochs), HF's is kept as `hf_epoch`."""
    def __init__(self, path: Path, sink=None, epochs: float | None = None):
        self.path, self.sink, self.epochs = path, sink, epochs

    def on_log(self, args, state, control, logs=None, **kw):
        if not state.is_world_process_zero or not logs:
            return
        progress = state.global_step / max(1, state.max_steps)
        row = {"step": state.global_step, "progress": progress, **logs}
        if self.epochs is not None and "epoch" in row:
            row["hf_epoch"], row["epoch"] = row["epoch"], round(progress * self.epochs, 4)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.sink is not None:
            self.sink(row)


def model_inputs(batch: dict) -> dict:
    """What the model sees: everything but the targets (token ids + mask, or features)."""
    return {k: v for k, v in batch.items() if k != "soft_label"}


class HeadInitCheck(TrainerCallback):
    """After engine setup (ZeRO-3 has partitioned everything), gather the head and check its init."""

    def __init__(self, how: str):
        self.how = how

    def on_train_begin(self, args, state, control, model=None, **kw):
        from .models import check_head_init

        norm = check_head_init(model.score, self.how)
        if state.is_world_process_zero:
            print(f"head init check: head_init={self.how} norm={norm:.6g} "
                  f"zero3_partitioned={hasattr(model.score.weight, 'ds_id')}", flush=True)


class W2STrainer(Trainer):
    def __init__(self, *a, loss_name: str, loss_params: dict, **kw):
        super().__init__(*a, **kw)
        self.loss_name, self.loss_params = loss_name, loss_params
        self._batch_stats: dict = {}
        self._acc = [0, 0]

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, n_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._batch_stats = {}
        if self.loss_name in BATCH_STATS and batches and (len(batches) > 1 or self.args.world_size > 1):
            self._batch_stats = self._whole_batch_stats(batches)
        return batches, n_items

    @torch.no_grad()
    def _whole_batch_stats(self, batches) -> dict:
        """logconf's threshold is a statistic of the whole optimizer batch (Q3): a no-grad pass over
        every micro-batch of this step (same weights, dropout off => the same probabilities the
        training forward sees), gathered over ranks."""
        p0, y1 = [], []
        for b in batches:
            b = self._prepare_inputs(b)
            logits = self.model(**model_inputs(b))
            p0.append(torch.softmax(logits.float(), -1)[:, 0])
            y1.append(b["soft_label"][:, 1].float())
        p0, y1 = torch.cat(p0), torch.cat(y1)
        if self.args.world_size > 1:
            p0, y1 = self.accelerator.gather(p0), self.accelerator.gather(y1)
        return {"batch_p0": p0, "batch_prior1": y1.mean()}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = model(**model_inputs(inputs))
        labels = inputs["soft_label"]
        step_frac = self.state.global_step / max(1, self.state.max_steps)
        loss = LOSSES[self.loss_name](logits, labels, step_frac, **self.loss_params, **self._batch_stats)
        with torch.no_grad():
            self._acc[0] += (logits.argmax(-1) == labels.argmax(-1)).sum().item()
            self._acc[1] += labels.shape[0]
        return (loss, logits) if return_outputs else loss

    def log(self, logs, *args, **kw):
        if "loss" in logs and self._acc[1]:
            logs["train_accuracy"] = self._acc[0] / self._acc[1]
            self._acc = [0, 0]
        super().log(logs, *args, **kw)

    # Adafactor as the reference's `torch_optimizer.Adafactor(params, lr)` (Qwen-72B): relative step size
    # and parameter scaling, so `lr` and the lr schedule have no effect. HF's own "adafactor" (relative_step
    # off, lr scheduled) would be a different optimizer. transformers' Adafactor is the same fairseq
    # algorithm. Its AdafactorSchedule reads the param groups' params, which ZeRO-3 empties between steps
    # (IndexError): harness.optim.RelativeStepSchedule reports the relative step without reading them.
    def create_optimizer(self, model=None):
        if self.args.optim != "adafactor" or self.optimizer is not None:
            return super().create_optimizer(model)
        from transformers.optimization import Adafactor

        params = [p for p in (model or self.model).parameters() if p.requires_grad]
        self.optimizer = Adafactor(params, lr=None, relative_step=True, scale_parameter=True, warmup_init=False)
        return self.optimizer

    def create_scheduler(self, num_training_steps, optimizer=None):
        if self.args.optim != "adafactor" or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        from transformers.optimization import Adafactor

        from .optim import RelativeStepSchedule

        opt = optimizer or self.optimizer
        while not isinstance(opt, Adafactor) and hasattr(opt, "optimizer"):   # accelerate / DeepSpeed wrappers
            opt = opt.optimizer
        self.lr_scheduler = RelativeStepSchedule(opt)
        return self.lr_scheduler

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            logits = model(**model_inputs(inputs))
        return None, logits.float(), None


def training_args(out_dir: Path, t: dict, seed: int, nsteps: int, world_size: int, precision: str,
                  log_every: int, deepspeed: dict | None = None) -> TrainingArguments:
    cuda = torch.cuda.is_available()
    accum = t["batch_size"] // (t["micro_batch"] * world_size)
    mixed = precision == "mixed" and t["dtype"] != "float32"
    optim = "adafactor" if t["optimizer"] == "adafactor" else ("adamw_torch_fused" if cuda else "adamw_torch")
    if optim == "adafactor" and deepspeed and "optimizer" in deepspeed:
        raise ValueError("optimizer adafactor (the reference's, for Qwen-72B) cannot run with ZeRO-Offload: DeepSpeed's "
                         "config brings its own optimizer (CPU AdamW), which would silently replace Adafactor; set "
                         "resources.offload_optimizer: none for this model, or train it with optimizer: adam")
    return TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=t["micro_batch"],
        gradient_accumulation_steps=max(1, accum), per_device_eval_batch_size=t["eval_batch"],
        learning_rate=t["lr"], weight_decay=0.0, max_grad_norm=0.0,   # Adam: no decay, no clipping
        lr_scheduler_type="cosine" if t["lr_schedule"] == "cosine_anneal" else "constant",
        warmup_steps=0, max_steps=nsteps, num_train_epochs=1, optim=optim,
        logging_steps=log_every, logging_first_step=True, save_strategy="no", report_to=[],
        seed=seed, data_seed=seed, use_cpu=not cuda, remove_unused_columns=False,
        bf16=mixed and t["dtype"] == "bfloat16", fp16=mixed and t["dtype"] == "float16",
        activation_checkpointing=bool(t["gradient_checkpointing"]), dataloader_drop_last=False,
        disable_tqdm=False, deepspeed=deepspeed,
    )


def predict(trainer: W2STrainer, items: list[dict]) -> np.ndarray:
    """Softmax probabilities [N,2] in the order given. Rows are run sorted by length (less padding)
    and put back in order afterwards."""
    if not items:
        return np.zeros((0, 2), dtype=np.float32)
    order = np.argsort([len(x.get("input_ids", ())) for x in items], kind="stable")
    logits = trainer.predict(Rows([items[i] for i in order])).predictions
    probs = torch.softmax(torch.as_tensor(logits).float(), -1).numpy()
    out = np.empty_like(probs)
    out[order] = probs
    return out
