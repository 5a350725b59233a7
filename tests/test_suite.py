"""Suites: grid expansion, per-cell overrides, deterministic shards, skip-if-recorded, merged leaderboard."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from dfkd.benchmark.suite import builtin_suites, load_suite, parse_shard, record_path
from dfkd.cli.main import main as bench
from dfkd.errors import ConfigError, UserError


def _write(tmp_path, text: str):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(text))
    return path


SMALL = """
name: small
output_dir: {out}
grid:
  dataset: digits
  method: [noise_kd, real_kd]
  seed: [0, 1]
set:
  distill.epochs: 1
cells:
  - where: {{method: noise_kd}}
    set: {{images_per_class: 4, batch_size: 4}}
  - where: {{method: real_kd}}
    set: {{distill.lr: 0.01}}
exclude:
  - {{method: real_kd, seed: 1}}
"""


@pytest.mark.parametrize(
    "name, cells", [("cifar-table", 450), ("cifar-reproduce", 420), ("imagenet", 12), ("digits", 90)]
)
def test_shipped_suites_resolve_every_cell(name, cells):
    suite = load_suite(name)
    assert len(suite.cells) == cells
    assert len({c.label for c in suite.cells}) == cells  # no cell twice
    assert all(c.config.output_dir == suite.output_dir for c in suite.cells)


def test_cifar_table_has_the_published_columns():
    suite = load_suite("cifar-table")
    pairs = {(c.dataset, c.config.teacher, c.config.student) for c in suite.cells}
    assert ("cifar100", "wrn40_2", "wrn16_1") in pairs and ("cifar10", "vgg11", "resnet18") in pairs
    assert {c.seed for c in suite.cells} == {0, 1, 2}
    assert {c.protocol for c in suite.cells} == {"matched"}
    cell = next(c for c in suite.cells if c.method == "diffdfkd" and c.dataset == "cifar10")
    assert cell.config.distill.temperature == 20.0  # the data set's one recipe survives the suite's `set`
    assert cell.config.distill.num_workers == 8 and cell.config.device == "cuda"
    assert cell.budget()["images"] == 50_000 and cell.budget()["kd_steps"] == 39_200


def test_cifar_reproduce_runs_each_method_with_its_released_recipe():
    suite = load_suite("cifar-reproduce")
    assert {c.protocol for c in suite.cells} == {"published"}
    cell = next(c for c in suite.cells if c.method == "diffdfkd" and c.dataset == "cifar10")
    assert cell.config.distill.temperature == 30.0 and cell.config.distill.milestones == (150, 180, 210)
    assert cell.config.method_config.trajectories_per_class == 5000


def test_grid_order_overrides_and_excludes(tmp_path):
    suite = load_suite(str(_write(tmp_path, SMALL.format(out=tmp_path / "runs"))))
    assert [(c.method, c.seed) for c in suite.cells] == [("noise_kd", 0), ("noise_kd", 1), ("real_kd", 0)]
    lrs = {c.method: c.config.distill.lr for c in suite.cells}
    assert lrs["real_kd"] == 0.01 and lrs["noise_kd"] != 0.01  # the `where` rule applies to its cells only
    assert {c.config.distill.epochs for c in suite.cells} == {1}  # `set` applies to every cell
    assert suite.cells[0].config.method_config.images_per_class == 4  # routed to the method like --set


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_partition_the_suite(count):
    suite = load_suite("cifar-table")
    shards = [suite.shard(i, count) for i in range(count)]
    indices = sorted(c.index for s in shards for c in s)
    assert indices == list(range(len(suite.cells)))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [c.index for c in suite.shard(1, count)] == [c.index for c in load_suite("cifar-table").shard(1, count)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("grid: {method: [prsim]}", "Did you mean: prism"),
        ("grid: {methods: [prism]}", "unknown key"),
        ("grid: {dataset: digits}\nset: {distill.epoch: 3}", "epoch"),
        ("grid: {dataset: digits}\ncells: [{where: {model: x}, set: {}}]", "unknown key"),
        ("grid: {dataset: digits, method: prism}\nexclude: [{method: prism}]", "no cells"),
    ],
)
def test_bad_suites_fail_with_a_pointed_message(tmp_path, text, message):
    with pytest.raises((ConfigError, UserError), match=message):
        load_suite(str(_write(tmp_path, text)))


def test_parse_shard():
    assert parse_shard(None) == (0, 1) and parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(UserError, match="shard"):
            parse_shard(bad)


def test_unknown_suite_name_suggests():
    with pytest.raises(UserError, match="Did you mean: cifar-table"):
        load_suite("cifar-tabel")
    assert set(builtin_suites()) >= {"cifar-table", "imagenet", "digits"}


def test_sharded_suite_runs_skips_recorded_cells_and_merges(tmp_path, digits_teacher, capsys, monkeypatch):
    path = _write(tmp_path, SMALL.format(out=tmp_path / "runs"))
    assert bench(["suite", "run", str(path), "--dry-run", "--shard", "1/2"]) == 0
    listing = capsys.readouterr().out
    assert "3 cells, 0 done, shard 1/2: 1 cells, 1 to run" in listing and "other shard" in listing

    assert bench(["suite", "run", str(path), "--shard", "0/2", "-q"]) == 0  # cells 0 and 2
    suite = load_suite(str(path))
    assert [record_path(c).is_file() for c in suite.cells] == [True, False, True]
    assert bench(["suite", "run", str(path), "--shard", "1/2", "-q"]) == 0  # cell 1
    assert all(record_path(c).is_file() for c in suite.cells)

    def boom(*a, **k):
        raise AssertionError("a recorded cell ran again")

    monkeypatch.setattr("dfkd.benchmark.runner.run", boom)
    assert bench(["suite", "run", str(path), "-q"]) == 0
    capsys.readouterr()
    assert bench(["suite", "run", str(path), "--dry-run"]) == 0
    assert "3 done" in capsys.readouterr().out

    assert bench(["leaderboard", "--runs", str(tmp_path / "runs"), "--no-reference"]) == 0
    board = pd.read_csv(tmp_path / "runs" / "leaderboard-digits.csv")
    assert board.set_index("method").loc["noise_kd", "n_seeds"] == 2  # two seeds of one config, one row
    assert board.set_index("method").loc["real_kd", "n_seeds"] == 1


def test_leaderboard_merges_several_run_folders(tmp_path, digits_teacher):
    for seed in (0, 1):
        text = SMALL.format(out=tmp_path / f"shard{seed}").replace("seed: [0, 1]", f"seed: [{seed}]")
        text = text.replace("method: [noise_kd, real_kd]", "method: [noise_kd]")
        assert bench(["suite", "run", str(_write(tmp_path, text)), "-q"]) == 0
    out = tmp_path / "merged"
    out.mkdir()
    runs = [str(tmp_path / "shard0"), str(tmp_path / "shard1")]
    assert bench(["leaderboard", "--runs", *runs, "--out", str(out), "--no-reference"]) == 0
    board = pd.read_csv(out / "leaderboard-digits.csv")
    assert board["method"].tolist() == ["noise_kd"] and board["n_seeds"].tolist() == [2]
