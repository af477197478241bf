"""`w2s data preview`, `w2s datasets`, `w2s models`: what a manifest's dataset looks like once formatted,
and what this machine has registered and cached. Listing is light (no torch, no datasets); only a
preview reads data, through the same code a run uses (harness.data.splits), so what it shows is what
trains, and a bad declaration fails here with the same file/row/field message."""
from __future__ import annotations

import os
import sys

import click


@click.group()
def data():
    """Look at a manifest's data before training on it."""


@data.command()
@click.argument("file", type=click.Path())
@click.option("-n", "rows", default=5, show_default=True, help="formatted rows to show")
@click.option("-o", "--override", "overrides", multiple=True, help="dotted key=value, e.g. -o dataset.n_docs=200")
@click.option("--seed", type=int, default=None, help="run seed to draw with (default: the manifest's first)")
def preview(file, rows, overrides, seed):
    """Formatted rows (text and label) of a manifest's dataset, and the label balance of each part."""
    from .data import DataError
    from .data.splits import splits_for
    from .pipeline import load_or_exit

    m = load_or_exit(file, overrides)
    if not hasattr(m, "dataset") or not hasattr(m.dataset, "splits"):
        click.echo(f"error: {file}: preview is for language manifests (a `dataset:` section)", err=True)
        sys.exit(2)
    seed = m.seeds[0] if seed is None else seed
    try:
        splits = splits_for(m, seed)
    except (DataError, FileNotFoundError) as e:
        click.echo(f"error: {file}: {e}", err=True)
        sys.exit(2)
    click.echo(f"{m.dataset.name} (seed {seed}): first {min(rows, len(splits.train1))} rows of the weak half")
    for r in splits.train1[:rows]:
        click.echo(f"--- {r['id']}  label {r['hard_label']}")
        click.echo(r["txt"])
    click.echo("---")
    for part in ("train1", "train2", "test"):
        info = splits.info[part]
        click.echo(f"{part}: {info['rows']} rows, label 1: {info['positive_frac']:.1%}, label 0: {1 - info['positive_frac']:.1%}")


@click.command()
@click.argument("files", nargs=-1, type=click.Path())
def datasets(files):
    """Registered datasets (and those the given manifests declare): source and local files found."""
    from .data import DATASETS, DATA_DIR_ENV, data_dir, local_path

    specs = list(DATASETS.values())
    if files:
        from .data.declared import spec_of
        from .pipeline import load_or_exit

        specs += [spec_of(m.dataset) for m in map(load_or_exit, files) if getattr(m.dataset, "declare", None)]
    root = data_dir()
    click.echo(f"local data: {root or f'none (${DATA_DIR_ENV} unset: built-ins come from the hub)'}")
    for spec in specs:
        source = (f"hub {spec.hub_id}@{spec.revision or 'unpinned'}" if spec.hub_id else "files") + \
                 (" + declared files" if spec.paths else "")
        found = []
        for split in dict.fromkeys((spec.train_split, spec.test_split, *spec.paths, *spec.local_files)):
            try:
                path = local_path(spec, split, None)
            except FileNotFoundError:
                path = None
            found.append(f"{split}: {'found' if path is not None and path.is_file() else 'hub' if spec.hub_id else 'MISSING'}")
        click.echo(f"{spec.name:16} {source:52} {', '.join(found)}")


@click.command()
def models():
    """The model table (harness.model_table) and which models are in the Hugging Face cache."""
    from .model_table import MODELS

    click.echo(f"HF cache: {os.environ.get('HF_HUB_CACHE') or os.environ.get('HF_HOME') or '~/.cache/huggingface'}")
    for name, e in MODELS.items():
        params = f"{e.params / 1e6:,.0f}M" if e.params else "?"
        click.echo(f"{name:48} {params:>9}  lr {e.lr:<7g} {'cached' if _cached(e.hub_id, e.revision) else 'not cached'}")


def _cached(hub_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json", revision=revision), str)


COMMANDS = (data, datasets, models)
