"""Bootstrapping chains (Burns et al. 2023, §4.3.1): `chains: [[gpt2, gpt2-medium, gpt2-large]]` trains
gpt2-medium on gpt2's weak labels, then gpt2-large on gpt2-medium's, and so on up the chain; results compare
the chain's students with the direct transfer from the chain's first model (harness.report_chains).

Halves (docs/research.md). A stage's weak labels must be predictions on rows it did not train on, so the
protocol's two halves alternate along the chain:

    gt(m0)           trains on train1 (ground truth)     labels train2   (as for every pair)
    step 1: m0 -> m1 trains on train2 (m0's labels)       labels train1
    step 2: m1 -> m2 trains on train1 (m1's labels)       labels train2   ... and so on

Every step trains on as many rows as the direct transfer. Disjoint slices (one per step) would shrink the
training set with the chain's length, and the bootstrapped-vs-direct comparison would confound data size
with bootstrapping. The labeller never trained on the rows it labels; only its own teacher did, one step up.

Stages. A chain step is a stage of kind `chain`: a transfer (same training) whose teacher is the previous
step (a transfer stage) or, for step 1, the first model's ground-truth stage, and which also labels the
other half. Its identity is a transfer's plus the teacher key and {step, half, labels}; model names are
labels (operational), the teacher key carries everything upstream. `Stage.weak` of a step is the chain so
far ("gpt2>gpt2-medium"), so slugs, stats roles and tables stay distinct when two chains share a model.
Step 1 trains the same student as the direct m0 -> m1 transfer but also labels train1: a different key,
one extra transfer per chain, seed and loss. Nothing here imports torch (`w2s plan` stays fast).
"""
from __future__ import annotations

import difflib

SEP = ">"          # joins a chain's model names: "gpt2>gpt2-medium>gpt2-large"


def other(half: str) -> str:
    return "train1" if half == "train2" else "train2"


def name(chain) -> str:
    return SEP.join(chain)


def problems(m) -> list[tuple[tuple, str]]:
    """Every problem with `chains`, each at its place (manifest.Problems): names, length, order, repeats."""
    labels = [mc.label for mc in m.models]
    out, seen = [], {}
    for i, chain in enumerate(getattr(m, "chains", None) or []):
        loc = ("chains", i)
        if len(chain) < 3:
            out.append((loc, f"{list(chain)}: a chain needs at least 3 models (weak -> intermediate -> strong), "
                             f"weakest first; for two models use `pairs: [[weak, strong]]`"))
        bad = False
        for j, x in enumerate(chain):
            if x not in labels:
                close = difflib.get_close_matches(str(x), labels, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                out.append(((*loc, j), f"{x!r} is not a model name{hint}; names: {labels}"))
                bad = True
        if bad:
            continue
        for j in range(1, len(chain)):
            if labels.index(chain[j]) <= labels.index(chain[j - 1]):
                out.append(((*loc, j), f"{chain[j - 1]} -> {chain[j]}: each model of a chain must come after the "
                                       f"one before it in `models` (weakest first), and appear once; reorder the chain"))
        key = tuple(chain)
        if key in seen:
            out.append((loc, f"{list(chain)} is listed twice (also chains.{seen[key]}); list each chain once"))
        seen.setdefault(key, i)
    return out


def direct_pairs(m, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The direct transfers the chains are compared with, where `pairs` lacks them: first -> every later
    model of each chain (the paper's plot puts bootstrapped and direct at every student size)."""
    out: list[tuple[str, str]] = []
    for chain in getattr(m, "chains", None) or []:
        for strong in chain[1:]:
            if (chain[0], strong) not in pairs and (chain[0], strong) not in out:
                out.append((chain[0], strong))
    return out


def chain_stages(m, models: dict, data: dict, gt, warmup: str, Stage) -> list:
    """The chain steps, in dependency order (each after its teacher), deduplicated by key (chains that
    share a prefix share its steps). `gt(label, seed, half, role)` is harness.plan's ground-truth stage maker
    and `Stage` its stage class (passed in: the manifest validates chains with this module, so importing the
    planner here would be an import cycle)."""
    from . import __version__
    from .code_identity import stage_code
    from .losses import resolve_params
    from .store import content_key

    out, made = [], set()
    for seed in m.seeds:
        for chain in getattr(m, "chains", None) or []:
            for lc in m.losses:
                loss = {"name": lc.name, "params": resolve_params(lc.name, lc.params, warmup)}
                root = teacher = gt(chain[0], seed, "train1", "weak")
                half = "train2"
                for k, strong in enumerate(chain[1:], 1):
                    ident = {"kind": "chain", "model": models[strong], "data": data, "seed": seed, "loss": loss,
                             "teacher": teacher.key, "chain": {"step": k, "half": half, "labels": other(half)},
                             "harness": __version__, "code": stage_code(m.dataset.name, lc.name)}
                    st = Stage(content_key(ident), "chain", strong, seed, half, loss, ident,
                               weak=name(chain[:k]), teacher=teacher.key, roles=["chain"], root=root.key)
                    if st.key not in made:
                        made.add(st.key)
                        out.append(st)
                    teacher, half = st, other(half)
    return out
