"""Issue #16, finding 5: inputs that are not (sane) manifests give a clean error naming the file, the
line and the field, with exit 2 and no traceback: duplicate keys, non-finite numbers, impossible sizes,
unsafe names, alias bombs, binary files, directories, bad `-o` values."""
import time

import pytest
from click.testing import CliRunner

from harness.cli import main

BASE = """\
name: probe
dataset: {name: sst2, n_docs: 2000, n_test_docs: 500}
models: [{id: gpt2}, {id: gpt2-medium}]
"""


def validate(path, *overrides):
    args = ["validate", str(path)] + [a for o in overrides for a in ("-o", o)]
    res = CliRunner().invoke(main, args, catch_exceptions=False)    # a traceback fails the test
    return res.exit_code, res.output


def manifest(tmp_path, text, name="m.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,expect", [
    (BASE + "name: other\n", ["m.yaml:4", "duplicate key 'name'", "first on line 1"]),
    (BASE + "train: {lr: .inf}\n", ["m.yaml:4", "train.lr", "not a finite number"]),
    (BASE + "train:\n  epochs: .nan\n", ["m.yaml:5", "train.epochs", "not a finite number"]),
    (BASE + "losses: [{name: logconf, params: {aux_coef: -.inf}}]\n", ["losses.0.params.aux_coef", "finite"]),
    (BASE + "train: {epochs: 1.0e9}\n", ["train.epochs", "cannot fit in memory"]),
    # the spellings: YAML reads `1e9` as a string (pydantic then parses it) and `10**12` as text
    (BASE + "train: {epochs: 1e9}\n", ["m.yaml:4", "train.epochs", "1000 rows per half x 1e+09 epochs = 1e+12 "
                                        "training rows per stage (3.12e+10 optimizer steps", "cannot fit in memory"]),
    (BASE.replace("n_docs: 2000", "n_docs: 10**12"), ["m.yaml:2", "dataset.n_docs", "valid integer", "'10**12'"]),
    (BASE.replace("n_docs: 2000", "n_docs: 500000000"), ["dataset.n_docs", "250000000 rows per half x 2 epochs",
                                                         "cannot fit in memory"]),
    (BASE.replace("models: [{id: gpt2}", "models: [{id: gpt2, epochs: 1.0e8}"), ["m.yaml:3", "models.0.epochs",
                                                                                 "model gpt2)", "cannot fit"]),
    (BASE.replace("n_docs: 2000", "n_docs: 1000000000000"), ["dataset.n_docs", "more than any dataset"]),
    (BASE + "seeds: [0, 100000000000000000000000]\n", ["m.yaml:4", "seeds.1", "outside 0..2**32-1"]),
    (BASE.replace("name: probe", "name: .."), ["m.yaml:1", "name", "not a safe folder name"]),
    (BASE.replace("name: probe", "name: ."), ["not a safe folder name"]),
])
def test_bad_values_are_refused_with_file_line_and_field(tmp_path, text, expect):
    code, out = validate(manifest(tmp_path, text))
    assert code == 2, out
    for e in expect:
        assert e in out, (e, out)


def test_alias_bomb_is_refused_fast(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 10)]
    path = manifest(tmp_path, BASE + "x-bomb:\n" + "\n".join("  " + x for x in lines) + "\n")
    started = time.time()
    code, out = validate(path)
    assert code == 2 and "expands to more than" in out, out
    assert time.time() - started < 5


def test_self_referencing_alias_is_refused(tmp_path):
    code, out = validate(manifest(tmp_path, BASE + "x-loop: &loop [1, *loop]\n"))
    assert code == 2 and "refers to itself" in out, out


def test_binary_file_directory_and_huge_file(tmp_path):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    code, out = validate(binary)
    assert code == 2 and "weights.bin: not a text file" in out, out
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "a.yaml").write_text(BASE)
    code, out = validate(tmp_path / "exp")
    assert code == 2 and "is a directory" in out and "a.yaml" in out, out
    huge = manifest(tmp_path, BASE + "#" * (2 << 20) + "\n", "huge.yaml")
    code, out = validate(huge)
    assert code == 2 and "larger than" in out, out


def test_bad_override_values(tmp_path):
    path = manifest(tmp_path, BASE)
    marker = tmp_path / "pwned"
    code, out = validate(path, f'name=!!python/object/apply:os.system ["touch {marker}"]')
    assert code == 2 and "override -o name=" in out and "not a YAML value" in out, out
    assert not marker.exists()
    code, out = validate(path, "models=[gpt2, gpt2-medium")
    assert code == 2 and "not a YAML value" in out, out
    code, out = validate(path, "train.lr=.inf")
    assert code == 2 and "override -o train.lr" in out and "finite" in out, out


def test_duplicate_key_in_a_base_manifest_names_the_base(tmp_path):
    manifest(tmp_path, BASE + "seeds: [0]\nseeds: [1]\n", "base.yaml")
    code, out = validate(manifest(tmp_path, "extends: base.yaml\nname: child\n"))
    assert code == 2 and "base.yaml:5" in out and "duplicate key 'seeds'" in out, out


def test_merge_keys_are_not_duplicates(tmp_path):
    text = BASE + "x-t: &t {lr: 1.0e-5, epochs: 2}\ntrain:\n  <<: *t\n  epochs: 3\n"
    code, out = validate(manifest(tmp_path, text))
    assert code == 0, out


def test_the_real_cli_prints_no_traceback(tmp_path):
    """The same refusals through the installed entry point (a subprocess), not only the click runner."""
    from conftest import w2s

    (tmp_path / "d").mkdir()
    for args in (["validate", tmp_path / "d"], ["plan", tmp_path / "d"], ["run", tmp_path / "d", "--no-tracking"]):
        proc = w2s(*args, check=False, timeout=300)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "is a directory" in proc.stderr, proc.stderr
