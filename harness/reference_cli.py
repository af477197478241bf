"""`w2s reference train-simple | train-w2s | sweep`: the reference's own command lines (REFERENCE.md §2),
so that someone with openai/weak-to-strong's README open can paste its commands.

Each command parses the reference's fire-style flags (`--name value`, `--name=value`, a bare `--flag`
for True, `--noflag` for False; names and defaults exactly as REFERENCE.md §2), builds the equivalent
manifest with `fidelity: reference`, and either prints it (`--print-manifest`) or writes it beside the
results and runs it through the ordinary `w2s run` path (validation, cache, tracking). Flags the harness
cannot honour are refused by name (exit 2) before anything runs.

Mapping decisions (docs/research.md):
- sweep runs every pair i < j; the reference's self-pairs (gpt2 -> gpt2) have no PGR and are not run.
- sweep/train-simple forward `--loss` to the ground-truth runs as the reference does (Q4): gt_loss = loss.
- precision is `mixed`, as in experiments/paper (Q9: pure-bf16 Adam has no DeepSpeed equivalent);
  the model table's dtype (bf16 for Qwen-1; for every model in train_weak_to_strong) is kept.
- train-w2s trains the ceiling on the student half (Q14) and accepts the README's `--loss` as
  `--transfer_loss` (Q21).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import yaml

from .model_table import MODELS

TMP_RESULTS = str(Path(tempfile.gettempdir()) / "results")
TRAIN_SIMPLE = dict(batch_size=32, max_ctx=1024, ds_name="sciq", loss="xent", n_docs=20000, n_test_docs=10000,
                    model_size="gpt2", lr=None, optim=None, epochs=2, force_retrain=False, seed=0,
                    minibatch_size_per_device=None, train_with_dropout=False, linear_probe=False,
                    results_folder=TMP_RESULTS, lr_schedule="cosine_anneal", weak_model_size=None,
                    weak_labels_path=None, sweep_subfolder="default", eval_every=1000000, sync_command=None)
SWEEP = {"model_sizes": None, **{k: v for k, v in TRAIN_SIMPLE.items()
                                 if k not in ("model_size", "weak_model_size", "weak_labels_path")}}
TRAIN_W2S = dict(batch_size=32, max_ctx=1024, ds_name="sciq", transfer_loss="xent,logconf", n_docs=10000,
                 n_test_docs=200, weak_model_size="gpt2", strong_model_size="gpt2-xl", weak_lr=None,
                 strong_lr=None, transfer_lr=None, weak_optim=None, strong_optim=None, transfer_optim=None,
                 gt_epochs=2, transfer_epochs=None, force_retrain=False, seed=0, minibatch_size_per_device=None,
                 train_with_dropout=False, linear_probe=False, results_folder=TMP_RESULTS,
                 lr_schedule="cosine_anneal", log_prefix="", eval_every=100000000)
# Flags the reference has and the harness refuses, with the reason and what to do instead.
REFUSED = {
    "weak_labels_path": "weak labels are a cached stage of the harness; pass --weak_model_size instead",
    "sync_command": "results are synced through MLflow (--tracking-uri) and the stage cache, not a command",
}


class RefError(Exception):
    pass


def _value(text: str):
    """fire's literal parsing, enough for these flags: ints, floats, booleans, None, lists, strings."""
    low = text.strip()
    if low in ("True", "true"):
        return True
    if low in ("False", "false"):
        return False
    if low == "None":
        return None
    for cast in (int, float):
        try:
            return cast(low)
        except ValueError:
            pass
    if low.startswith("[") and low.endswith("]"):
        low = low[1:-1]
    if "," in low:
        return [x.strip().strip("'\"") for x in low.split(",") if x.strip()]
    return low.strip("'\"")


def parse_flags(argv: list[str], defaults: dict, command: str, aliases: dict | None = None) -> dict:
    """fire-style flags -> {name: value}; unknown and refused flags raise RefError naming them."""
    out, i, bad = dict(defaults), 0, []
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise RefError(f"{command}: unexpected argument {tok!r}; flags are --name value")
        name, eq, val = tok[2:].partition("=")
        name = name.replace("-", "_")
        if not eq and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            val, flag = "True", True          # a bare --flag
            if name.startswith("no") and name[2:] in defaults and isinstance(defaults[name[2:]], bool):
                name, val = name[2:], "False"
        elif not eq:
            i += 1
            val = argv[i]
        i += 1
        name = (aliases or {}).get(name, name)
        if name in REFUSED:
            bad.append(f"--{name} is not supported by `w2s reference {command}`: {REFUSED[name]}")
        elif name not in defaults:
            import difflib

            close = difflib.get_close_matches(name, defaults, n=1)
            bad.append(f"--{name} is not a flag of the reference's {command}"
                       + (f" (did you mean --{close[0]}?)" if close else f"; its flags: {', '.join(sorted(defaults))}"))
        else:
            out[name] = _value(val)
    if bad:
        raise RefError("\n".join(bad))
    return out


def model_entry(model_id: str, dtype: str | None = None) -> dict:
    """A model as the reference's table sets it up: Qwen-1 in bf16, gradient checkpointing where the
    table asks for it (Q8: in the harness it acts)."""
    e = MODELS.get(model_id)
    out = {"id": model_id}
    if dtype or (e and e.trust_remote_code):
        out["dtype"] = dtype or "bfloat16"
    if e and e.grad_ckpt:
        out["gradient_checkpointing"] = True
    return out


def _common(f: dict, name: str) -> dict:
    if f["eval_every"] in (0, None):
        raise RefError("--eval_every 0 crashes the reference (Q19); leave it unset (final evaluation only)")
    train = {"batch_size": f["batch_size"], "lr_schedule": f["lr_schedule"], "linear_probe": bool(f["linear_probe"]),
             "dropout": bool(f["train_with_dropout"])}
    if f["minibatch_size_per_device"]:      # operational: only memory changes
        train["micro_batch"] = int(f["minibatch_size_per_device"])
    sub = f.get("sweep_subfolder", "default")
    return {"name": f"reference-{name}-{f['ds_name']}" + ("" if sub in ("default", None) else f"-{sub}"),
            "dataset": {"name": f["ds_name"], "n_docs": f["n_docs"], "n_test_docs": f["n_test_docs"],
                        "max_ctx": f["max_ctx"]},
            "train": train, "seeds": [f["seed"]],
            "fidelity": {"profile": "reference", "precision": "mixed"},
            "output": {"dir": f["results_folder"]}}


def _lr(f: dict, lr, key: str, train: dict, model: dict | None = None):
    if lr is None and f["batch_size"] != 32:   # the reference asserts this
        raise RefError(f"--batch_size {f['batch_size']} without --{key}: the reference's learning rates were "
                       f"tuned on batch size 32; pass --{key} or use --batch_size 32")
    if lr is not None:
        (model if model is not None else train)["lr"] = float(lr)


def _losses(value) -> list[str]:
    return value if isinstance(value, list) else [x for x in str(value).split(",") if x]


def simple_manifest(f: dict) -> dict:
    m = _common(f, "train-simple")
    _lr(f, f["lr"], "lr", m["train"])
    m["train"]["epochs"] = f["epochs"]
    if f["optim"]:
        m["train"]["optimizer"] = f["optim"]
    loss = f["loss"]
    m["gt_loss"] = loss          # Q4: the reference trains its ground-truth runs with --loss
    if f["weak_model_size"]:
        if f["weak_model_size"] == f["model_size"]:
            raise RefError("--weak_model_size equals --model_size: a self-pair has no PGR and is not run")
        m["models"] = [model_entry(f["weak_model_size"]), model_entry(f["model_size"])]
        m["losses"] = [loss]
    else:   # one ground-truth run: no pairs (plan: every model trains on the weak half and labels the other)
        m["models"] = [model_entry(f["model_size"])]
        m["pairs"] = []
        m["losses"] = [loss]
    return m


def sweep_manifest(f: dict) -> dict:
    sizes = f["model_sizes"]
    if not sizes:
        raise RefError("sweep: --model_sizes is required, e.g. --model_sizes=gpt2,gpt2-medium")
    sizes = sizes if isinstance(sizes, list) else [sizes]
    m = simple_manifest({**f, "model_size": sizes[0], "weak_model_size": None})
    m["name"] = m["name"].replace("train-simple", "sweep")
    m["models"] = [model_entry(s) for s in sizes]
    m.pop("pairs", None)      # every pair i < j in list order, as sweep.py (minus self-pairs)
    return m


def w2s_manifest(f: dict) -> dict:
    for a, b in (("transfer_lr", "strong_lr"), ("transfer_optim", "strong_optim"), ("transfer_epochs", "gt_epochs")):
        if f[a] is not None and f[a] != f[b]:
            raise RefError(f"--{a} {f[a]} differs from --{b} {f[b]}: the harness trains a model's ceiling and its "
                           f"students with the same settings; drop --{a}")
    if f["weak_model_size"] == f["strong_model_size"]:
        raise RefError("--weak_model_size equals --strong_model_size: a self-pair has no PGR")
    m = _common(f, "train-w2s")
    m["train"]["epochs"] = f["gt_epochs"]
    weak, strong = model_entry(f["weak_model_size"], "bfloat16"), model_entry(f["strong_model_size"], "bfloat16")
    for model, lr, opt, key in ((weak, f["weak_lr"], f["weak_optim"], "weak_lr"),
                                (strong, f["strong_lr"], f["strong_optim"], "strong_lr")):
        _lr(f, lr, key, m["train"], model)
        if opt:
            model["optimizer"] = opt
    m["models"] = [weak, strong]
    m["losses"] = _losses(f["transfer_loss"])
    m["fidelity"]["ceiling_half"] = "student_half"     # Q14: train_weak_to_strong's ceiling
    return m


BUILDERS = {"train-simple": (TRAIN_SIMPLE, simple_manifest, {}),
            "sweep": (SWEEP, sweep_manifest, {}),
            "train-w2s": (TRAIN_W2S, w2s_manifest, {"loss": "transfer_loss"})}


def build(command: str, argv: list[str]) -> tuple[dict, dict]:
    """(manifest dict, parsed flags) for one reference command line; RefError on bad input."""
    defaults, fn, aliases = BUILDERS[command]
    if command == "sweep":
        bad = [a for a in argv if a.lstrip("-").split("=")[0].replace("-", "_") in ("model_size", "weak_model_size", "weak_labels_path")]
        if bad:
            raise RefError(f"sweep: {bad[0]} is chosen by the sweep itself (the reference refuses it too)")
    f = parse_flags(list(argv), defaults, command, aliases)
    return fn(f), f


def to_yaml(manifest: dict, command: str, argv: list[str]) -> str:
    head = (f"# Run: w2s run THIS_FILE   (or: w2s reference {command} {' '.join(argv)})\n"
            f"# Generated by `w2s reference {command} --print-manifest` from the reference's flags.\n")
    return head + yaml.safe_dump(manifest, sort_keys=False)


def _command(name: str, help_text: str):
    @click.command(name, help=help_text, context_settings={"ignore_unknown_options": True,
                                                            "allow_extra_args": True, "help_option_names": ["-h"]})
    @click.option("--print-manifest", is_flag=True, help="print the equivalent manifest and exit")
    @click.option("--no-tracking", is_flag=True, help="record nothing in MLflow")
    @click.option("--tracking-uri", default=None, help="MLflow tracking URI")
    @click.argument("flags", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def cmd(ctx, print_manifest, no_tracking, tracking_uri, flags):
        try:
            manifest, f = build(name, list(flags))
        except RefError as e:
            for line in str(e).splitlines():
                click.echo(f"error: {line}", err=True)
            sys.exit(2)
        if name == "train-w2s" and any(a.lstrip("-").split("=")[0] == "loss" for a in flags):
            click.echo("note: --loss is not a flag of train_weak_to_strong.py (the README's example passes it, "
                       "Q21); read as --transfer_loss", err=True)
        if name == "sweep" or f.get("weak_model_size") and name == "train-simple":
            click.echo("note: self-pairs (a model supervising itself) have no PGR and are not run", err=True)
        text = to_yaml(manifest, name, list(flags))
        if print_manifest:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{manifest['name']}.yaml"
                path.write_text(text)
                _validate(str(path))
            click.echo(text, nl=False)
            return
        path = Path(f["results_folder"]) / f"{manifest['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        click.echo(f"manifest: {path}", err=True)
        run = ctx.find_root().command.get_command(ctx, "run")   # harness.cli's, without importing it (a cycle)
        ctx.invoke(run, file=str(path), overrides=(), force=bool(f["force_retrain"]), only=(), shard=None,
                   tracking_uri=tracking_uri, no_tracking=no_tracking, models=None)
    return cmd


def _validate(path: str) -> None:
    from .pipeline import load_or_exit

    load_or_exit(path)


@click.group("reference")
def reference():
    """The reference's command lines (train_simple.py, train_weak_to_strong.py, sweep.py) as manifests."""


reference.add_command(_command("train-simple", "train_simple.py's flags (REFERENCE.md §2.1): one ground-truth "
                               "run, or a transfer run with --weak_model_size."))
reference.add_command(_command("train-w2s", "train_weak_to_strong.py's flags (REFERENCE.md §2.3): weak, ceiling "
                               "(student half) and one transfer per --transfer_loss."))
reference.add_command(_command("sweep", "sweep.py --model_sizes=a,b,c plus any train_simple flag (REFERENCE.md "
                               "§2.2): ground truth for every size, then every pair."))
