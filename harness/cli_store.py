"""`w2s store check|repair [TARGET]`: the embedded MLflow store (docs/tracking.md, "A broken store")."""
from __future__ import annotations

import sys

import click


def _dir(target):
    from .manifest import ManifestError
    from .mlflow_store import find_store_dir

    try:
        return find_store_dir(target)
    except ManifestError as e:
        raise click.ClickException("\n".join(e.problems)) from None


@click.group()
def store():
    """Check or repair the embedded MLflow store (<output.dir>/mlflow/mlflow.db)."""


@store.command()
@click.argument("target", required=False, default=None)
def check(target):
    """Exit 0 if the store under TARGET (manifest, output dir or its mlflow/ folder; default ./runs) is sound."""
    from .mlflow_store import DB, broken_message, diagnose

    d = _dir(target)
    if not (d / DB).exists():
        click.echo(f"no store at {d / DB} yet (the first `w2s run` creates it)")
        return
    why = diagnose(d / DB)
    if why:
        click.echo(f"error: {broken_message(d / DB, why)}", err=True)
        sys.exit(3)
    click.echo(f"ok: {d / DB}")


@store.command()
@click.argument("target", required=False, default=None)
def repair(target):
    """Move a broken store aside (mlflow.db.broken-<time>) and create a fresh one; a sound store is left alone."""
    from .mlflow_store import DB, diagnose, repair as do_repair

    d = _dir(target)
    existed = (d / DB).exists() and (d / DB).stat().st_size > 0
    why = diagnose(d / DB) if existed else None
    moved, db = do_repair(d)
    if existed and why is None:
        click.echo(f"ok: {db} is sound; nothing changed")
        return
    if moved:
        click.echo(f"moved the broken store ({why}) to {moved}")
    click.echo(f"created a fresh store: {db}. The next `w2s run` logs every cached stage into it.")


COMMANDS = [store]
