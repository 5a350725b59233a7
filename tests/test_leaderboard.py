"""Leaderboard: grouping and means by hand, fixed columns, reference rows kept apart, files written."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from dfkd.benchmark.leaderboard import (
    LEADERBOARD_COLUMNS,
    REFERENCE_COLUMNS,
    REFERENCE_CSV,
    build_leaderboard,
    combine_leaderboards,
    load_reference,
    read_leaderboard,
    write_leaderboard,
)
from dfkd.benchmark.records import RecordError, check_record, load_records
from dfkd.errors import UserError

REPO = Path(__file__).resolve().parents[1]

# Counted by hand from the published tables (the spec's reference-results.md), "–" cells skipped:
# CIFAR-10: 9 methods × 5 pairs, Fast-2/5/10 split into 3 × 5  → 10 × 5 + 15 - 5 = 60
# CIFAR-100: 8 methods × 5 pairs + SpaceshipNet's one cell      → 41
# ImageNet: scratch 3 + DeepInversion 1 + Fast-50 3 + DM-KD 3 image counts × 2 students → 13
EXPECTED_REFERENCE_ROWS = {"cifar10": 60, "cifar100": 41, "imagenet": 13}


def make_record(**overrides) -> dict:
    record = {
        "schema_version": 1,
        "run_id": "run",
        "created": "2025-01-01T00:00:00+00:00",
        "method": "dafl",
        "dataset": "digits",
        "teacher": "lenet5",
        "student": "lenet5_half",
        "seed": 0,
        "student_top1": 90.0,
        "student_top1_best": 91.0,
        "student_top1_best_epoch": 3,
        "student_top5": 99.0,
        "teacher_top1": 98.0,
        "teacher_student_agreement": 92.0,
        "num_synthetic_images": 1000,
        "synthesis_seconds": 10.0,
        "distill_seconds": 5.0,
        "epochs": 4,
        "protocol": "matched",
        "extra": {},
        "config": {},
        "env": {},
    }
    record.update(overrides)
    return record


def write_record(runs: Path, record: dict) -> Path:
    pair = f"{record['teacher']}-{record['student']}".replace("/", "__")
    path = runs / record["dataset"] / pair / record["method"] / record["run_id"] / "record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


FIXTURE = [
    # digits lenet5 → lenet5_half: two methods × two seeds
    dict(method="dafl", seed=0, run_id="a0", student_top1=80.0, student_top1_best=82.0, student_top5=97.0,
         num_synthetic_images=1000, synthesis_seconds=10.0, distill_seconds=4.0, extra={"precision": 0.5}),
    dict(method="dafl", seed=1, run_id="a1", student_top1=84.0, student_top1_best=85.0, student_top5=99.0,
         num_synthetic_images=1000, synthesis_seconds=12.0, distill_seconds=6.0, extra={"precision": 0.7},
         teacher_student_agreement=None),
    dict(method="deepinversion", seed=0, run_id="b0", student_top1=90.0, student_top1_best=92.0, student_top5=99.5,
         num_synthetic_images=2000, synthesis_seconds=30.0, distill_seconds=8.0,
         extra={"precision": 0.8, "recall": 0.4}),
    dict(method="deepinversion", seed=1, run_id="b1", student_top1=93.0, student_top1_best=93.5, student_top5=99.7,
         num_synthetic_images=2000, synthesis_seconds=34.0, distill_seconds=10.0, extra={"recall": 0.6}),
    # one cifar10 run on a published pair
    dict(dataset="cifar10", teacher="resnet34", student="resnet18", method="cmi", seed=0, run_id="c0",
         student_top1=93.0, student_top1_best=93.4, teacher_top1=95.7, extra={}),
]  # fmt: skip


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for overrides in FIXTURE:
        write_record(root, make_record(**overrides))
    return root


@pytest.fixture
def reference() -> pd.DataFrame:
    return load_reference()


def row(df: pd.DataFrame, **key) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for column, value in key.items():
        mask &= df[column] == value
    assert mask.sum() == 1, f"expected one row for {key}, found {mask.sum()}"
    return df[mask].iloc[0]


# -- records -------------------------------------------------------------------------------------


def test_load_records_finds_every_record(runs: Path) -> None:
    records = load_records(runs)
    assert sorted(r["run_id"] for r in records) == ["a0", "a1", "b0", "b1", "c0"]
    assert all(Path(r["_path"]).name == "record.json" for r in records)


def test_malformed_record_is_skipped_naming_file_and_field(runs: Path) -> None:
    bad = make_record(run_id="bad")
    del bad["student_top1"]
    path = write_record(runs, bad)
    with pytest.warns(UserWarning, match="student_top1") as caught:
        records = load_records(runs)
    assert str(path) in str(caught[0].message)
    assert sorted(r["run_id"] for r in records) == ["a0", "a1", "b0", "b1", "c0"]  # the others still load
    with pytest.raises(RecordError, match="student_top1"):
        check_record(bad, path)


@pytest.mark.parametrize("field, value", [("seed", "zero"), ("student_top1", float("nan"))])
def test_wrong_type_or_non_finite_headline_is_skipped(runs: Path, field: str, value) -> None:
    path = write_record(runs, make_record(run_id="bad", **{field: value}))
    with pytest.warns(UserWarning, match=f"'{field}'") as caught:
        records = load_records(runs)
    assert str(path) in str(caught[0].message) and "bad" not in [r["run_id"] for r in records]


def test_unreadable_and_other_schema_are_skipped_with_warning(runs: Path) -> None:
    broken = runs / "digits" / "x-y" / "dafl" / "broken" / "record.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    write_record(runs, make_record(run_id="future", schema_version=2))
    with pytest.warns(UserWarning) as caught:
        records = load_records(runs)
    messages = " ".join(str(w.message) for w in caught)
    assert "broken" in messages and "schema_version 2" in messages
    assert len(records) == 5


def test_missing_runs_dir_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_records(tmp_path / "nope")


# -- leaderboard ---------------------------------------------------------------------------------


def test_means_and_stds_match_hand_computation(runs: Path) -> None:
    df = build_leaderboard(load_records(runs), dataset="digits")
    assert list(df["kind"]) == ["measured", "measured"]

    dafl = row(df, method="dafl")
    assert dafl["n_seeds"] == 2 and dafl["seeds"] == "0,1"
    assert dafl["student_top1_mean"] == pytest.approx(82.0)
    assert dafl["student_top1_std"] == pytest.approx(statistics.stdev([80.0, 84.0]))  # sample std = 2.828...
    assert dafl["student_top1_std"] == pytest.approx(math.sqrt(8))
    assert dafl["student_top1_best_mean"] == pytest.approx(83.5)
    assert dafl["student_top5_mean"] == pytest.approx(98.0)
    assert dafl["teacher_top1_mean"] == pytest.approx(98.0)
    assert dafl["top1_ratio"] == pytest.approx(82.0 / 98.0)
    assert dafl["teacher_student_agreement_mean"] == pytest.approx(92.0)  # the null one is left out
    assert dafl["num_synthetic_images"] == pytest.approx(1000)
    assert dafl["synthesis_seconds_mean"] == pytest.approx(11.0)
    assert dafl["distill_seconds_mean"] == pytest.approx(5.0)
    assert dafl["source"] == "" and dafl["note"] == ""

    di = row(df, method="deepinversion")
    assert di["student_top1_mean"] == pytest.approx(91.5)
    assert di["student_top1_std"] == pytest.approx(statistics.stdev([90.0, 93.0]))
    assert di["top1_ratio"] == pytest.approx(91.5 / 98.0)
    assert di["synthesis_seconds_mean"] == pytest.approx(32.0)


def test_sorted_by_top1_descending_within_pair(runs: Path) -> None:
    df = build_leaderboard(load_records(runs), dataset="digits")
    assert list(df["method"]) == ["deepinversion", "dafl"]


def test_extra_keys_become_sorted_columns_after_the_fixed_ones(runs: Path) -> None:
    df = build_leaderboard(load_records(runs), dataset="digits")
    assert list(df.columns) == [*LEADERBOARD_COLUMNS, "precision", "recall"]
    assert row(df, method="dafl")["precision"] == pytest.approx(0.6)
    assert math.isnan(row(df, method="dafl")["recall"])
    assert row(df, method="deepinversion")["precision"] == pytest.approx(0.8)  # only the run that has it
    assert row(df, method="deepinversion")["recall"] == pytest.approx(0.5)


def test_column_order_is_the_constant(runs: Path, reference: pd.DataFrame) -> None:
    df = build_leaderboard(load_records(runs), dataset="cifar10", reference=reference)
    assert tuple(df.columns) == LEADERBOARD_COLUMNS  # the cifar10 run has no extra metrics
    assert LEADERBOARD_COLUMNS[:5] == ("dataset", "teacher", "student", "method", "kind")


def test_single_seed_std_is_empty(runs: Path) -> None:
    df = build_leaderboard(load_records(runs), dataset="cifar10")
    assert math.isnan(row(df, method="cmi")["student_top1_std"])


def test_reference_rows_are_apart_from_measured(runs: Path, reference: pd.DataFrame) -> None:
    df = build_leaderboard(load_records(runs), dataset="cifar10", reference=reference)
    assert set(df["dataset"]) == {"cifar10"}
    assert list(df["kind"]) == ["measured"] + ["reference"] * EXPECTED_REFERENCE_ROWS["cifar10"]

    ours = row(df, kind="measured", method="cmi")
    assert ours["student_top1_mean"] == pytest.approx(93.0)  # not averaged with the published 94.84
    assert ours["student_top1_best_mean"] == pytest.approx(93.4)
    assert ours["n_seeds"] == 1

    published = row(df, kind="reference", method="cmi", teacher="resnet34", student="resnet18")
    assert published["student_top1_best_mean"] == pytest.approx(94.84)
    assert math.isnan(published["student_top1_mean"])  # never in the last-epoch column
    assert math.isnan(published["top1_ratio"])
    assert pd.isna(published["n_seeds"]) and published["seeds"] == ""
    assert "zju-vipa/CMI" in published["source"]

    ref = df[df["kind"] == "reference"]
    assert ref["student_top1_mean"].isna().all()
    assert (ref["source"] != "").all()


def test_reference_follows_the_datasets_of_the_records(runs: Path, reference: pd.DataFrame) -> None:
    df = build_leaderboard(load_records(runs), reference=reference)
    assert set(df.loc[df["kind"] == "reference", "dataset"]) == {"cifar10"}  # digits has none; no cifar100 runs
    # by data set, then protocol: cifar10's matched run, its published reference rows, then digits
    assert list(df["kind"]) == ["measured"] + ["reference"] * EXPECTED_REFERENCE_ROWS["cifar10"] + ["measured"] * 2
    assert list(df["dataset"]) == ["cifar10"] * (1 + EXPECTED_REFERENCE_ROWS["cifar10"]) + ["digits"] * 2
    only_ref = build_leaderboard([], dataset="imagenet", reference=reference)
    assert len(only_ref) == EXPECTED_REFERENCE_ROWS["imagenet"]


def test_no_records_and_no_reference_gives_empty_frame_with_columns() -> None:
    df = build_leaderboard([])
    assert df.empty and tuple(df.columns) == LEADERBOARD_COLUMNS


# -- writing -------------------------------------------------------------------------------------


def test_write_csv_and_markdown(runs: Path, reference: pd.DataFrame, tmp_path: Path) -> None:
    df = build_leaderboard(load_records(runs), dataset="digits", reference=reference)
    paths = write_leaderboard(df, tmp_path / "out" / "board.csv")
    assert [p.name for p in paths] == ["board.csv", "board.md"]

    back = pd.read_csv(paths[0], keep_default_na=False)
    assert list(back.columns) == list(df.columns)
    assert float(back.loc[0, "student_top1_std"]) == pytest.approx(math.sqrt(4.5))  # raw, not rounded

    md = paths[1].read_text()
    assert "best" in md and "over epochs" in md and "last epoch" in md
    assert "| deepinversion |" in md
    assert "| 91.50 |" in md and "| 2.12 |" in md  # rounded there only


def test_a_written_table_reads_back_with_its_types_and_combines_with_new_rows(runs: Path, tmp_path: Path) -> None:
    board = build_leaderboard(load_records(runs), dataset="digits", reference=None)
    (csv, _) = write_leaderboard(board, tmp_path / "board.csv")
    kept = read_leaderboard(csv)
    assert kept.equals(board)  # every value and type survives the CSV

    # a new run of dafl (another result) and of a method the table did not have
    new_runs = tmp_path / "new"
    write_record(new_runs, make_record(method="dafl", run_id="n0", student_top1=50.0))
    write_record(new_runs, make_record(method="nayer", run_id="n1", student_top1=88.0))
    both = combine_leaderboards(kept, build_leaderboard(load_records(new_runs), dataset="digits", reference=None))
    assert list(both["method"]) == ["deepinversion", "nayer", "dafl"]  # by last-epoch top-1, as built
    assert row(both, method="dafl")["student_top1_mean"] == 50.0  # the new measurement replaces the kept one
    assert (
        row(both, method="deepinversion")["student_top1_mean"]
        == row(board, method="deepinversion")["student_top1_mean"]
    )  # a cell not run again is carried over unchanged
    assert both.dtypes.equals(board.dtypes)

    (tmp_path / "not.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match=r"not a leaderboard CSV.*bench leaderboard"):
        read_leaderboard(tmp_path / "not.csv")


def test_write_directory_one_pair_per_dataset(runs: Path, reference: pd.DataFrame, tmp_path: Path) -> None:
    df = build_leaderboard(load_records(runs), reference=reference)
    paths = write_leaderboard(df, tmp_path / "results")
    assert sorted(p.name for p in paths) == [
        "leaderboard-cifar10.csv",
        "leaderboard-cifar10.md",
        "leaderboard-digits.csv",
        "leaderboard-digits.md",
    ]
    cifar = pd.read_csv(tmp_path / "results" / "leaderboard-cifar10.csv", keep_default_na=False)
    assert list(cifar.columns) == list(LEADERBOARD_COLUMNS)  # digits' extra metrics are not carried over
    assert len(cifar) == 1 + EXPECTED_REFERENCE_ROWS["cifar10"]
    cifar_md = (tmp_path / "results" / "leaderboard-cifar10.md").read_text()
    assert "Reference rows" in cifar_md and "94.84" in cifar_md


# -- reference table -----------------------------------------------------------------------------


def test_reference_copies_are_byte_identical() -> None:
    assert REFERENCE_CSV.read_bytes() == (REPO / "results" / "reference.csv").read_bytes(), (
        "results/reference.csv must be a copy of dfkd/benchmark/reference.csv (the packaged one): "
        "cp dfkd/benchmark/reference.csv results/reference.csv"
    )


def test_reference_table_shape(reference: pd.DataFrame) -> None:
    assert tuple(reference.columns) == REFERENCE_COLUMNS
    assert reference["dataset"].value_counts().to_dict() == EXPECTED_REFERENCE_ROWS
    assert not reference.duplicated(["dataset", "teacher", "student", "method", "images"]).any()
    assert (reference["source"] != "").all()
    assert reference["student_top1_best"].between(0, 100).all()
    assert not reference["method"].isin(["diffdfkd", "prism"]).any()  # no readable numbers published


@pytest.mark.parametrize(
    ("dataset", "teacher", "student", "method", "images", "expected"),
    [
        ("cifar10", "resnet34", "resnet18", "cmi", None, 94.84),
        ("cifar10", "resnet34", "resnet18", "teacher", None, 95.70),
        ("cifar10", "vgg11", "resnet18", "fast5", None, 89.94),
        ("cifar10", "wrn40_2", "wrn16_2", "fast10", None, 92.45),
        ("cifar10", "wrn40_2", "wrn16_1", "adadfkd", None, 90.05),
        ("cifar100", "wrn40_2", "wrn16_2", "dmkd", None, 66.89),
        ("cifar100", "resnet34", "resnet18", "spaceshipnet", None, 77.41),
        ("cifar100", "wrn40_2", "wrn40_1", "real_kd", None, 68.58),
        # DM-KD distils ResNet-18 → ResNet-18 (scripts/imagenet_distill.sh), though its README prints the column
        # beside the ResNet-50 rows
        ("imagenet", "torchvision/resnet18", "torchvision/resnet18", "dmkd", 200000, 61.61),
        ("imagenet", "torchvision/resnet50", "torchvision/mobilenet_v2", "fast50", 140000, 43.02),
        ("imagenet", "torchvision/resnet50", "torchvision/resnet50", "scratch", 1280000, 75.45),
    ],
)
def test_reference_spot_values(reference, dataset, teacher, student, method, images, expected) -> None:
    found = reference[
        (reference["dataset"] == dataset)
        & (reference["teacher"] == teacher)
        & (reference["student"] == student)
        & (reference["method"] == method)
    ]
    if images is not None:
        found = found[found["images"] == images]
    assert len(found) == 1
    assert found.iloc[0]["student_top1_best"] == pytest.approx(expected)


def test_cifar100_disagreement_is_noted(reference: pd.DataFrame) -> None:
    dfq = reference[(reference["dataset"] == "cifar100") & (reference["method"] == "dfq")]
    assert len(dfq) == 5 and dfq["note"].str.contains("disagree").all()


def test_different_configs_of_one_cell_get_their_own_rows():
    from dfkd.benchmark.leaderboard import build_leaderboard

    base = {
        "schema_version": 1,
        "dataset": "digits",
        "teacher": "resnet20",
        "student": "resnet8",
        "method": "noise_kd",
        "student_top1_best": 50.0,
        "student_top5": 90.0,
        "teacher_top1": 99.0,
        "num_synthetic_images": 10,
        "synthesis_seconds": 1.0,
        "distill_seconds": 1.0,
        "epochs": 2,
        "teacher_student_agreement": None,
    }
    records = [
        {**base, "run_id": "a", "seed": 0, "config_id": "aaaa", "student_top1": 40.0},
        {**base, "run_id": "b", "seed": 1, "config_id": "aaaa", "student_top1": 42.0},
        {**base, "run_id": "c", "seed": 0, "config_id": "bbbb", "student_top1": 60.0},
    ]
    df = build_leaderboard(records, dataset="digits")
    measured = df[df["kind"] == "measured"].set_index("note")
    assert measured.loc["config aaaa", "student_top1_mean"] == 41.0
    assert measured.loc["config aaaa", "n_seeds"] == 2
    assert measured.loc["config bbbb", "student_top1_mean"] == 60.0


def test_protocols_are_never_averaged_together_and_reference_rows_sit_with_published(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base = dict(dataset="cifar10", teacher="resnet34", student="resnet18", method="deepinversion")
    write_record(runs, make_record(**base, run_id="m0", seed=0, protocol="matched", student_top1=80.0))
    write_record(runs, make_record(**base, run_id="m1", seed=1, protocol="matched", student_top1=82.0))
    write_record(runs, make_record(**base, run_id="p0", seed=0, protocol="published", student_top1=60.0))
    legacy = make_record(**base, run_id="u0", seed=0, student_top1=10.0)
    del legacy["protocol"]
    write_record(runs, legacy)
    df = build_leaderboard(load_records(runs), dataset="cifar10", reference=load_reference())
    measured = df[df["kind"] == "measured"]
    assert list(zip(measured["protocol"], measured["student_top1_mean"])) == [
        ("matched", 81.0),
        ("published", 60.0),
        ("unstated", 10.0),
    ]
    assert set(df[df["kind"] == "reference"]["protocol"]) == {"published"}
    order = list(df["protocol"])  # matched, then published (measured, then reference), then unstated
    assert order == sorted(order, key=["matched", "published", "unstated"].index)
    md = write_leaderboard(df, tmp_path / "out")[1].read_text()
    sections = [line for line in md.splitlines() if line.startswith("## Protocol: ")]
    assert sections == ["## Protocol: matched", "## Protocol: published", "## Protocol: unstated"]


def test_paper_view_puts_methods_by_pairs_with_the_published_number_beside_ours(tmp_path: Path) -> None:
    from dfkd.benchmark.leaderboard import paper_markdown, paper_view, write_paper_view

    common = {"dataset": "cifar10", "teacher": "resnet34", "student": "resnet18", "protocol": "published"}
    records = [
        make_record(run_id="a", seed=0, student_top1=90.0, **common),
        make_record(run_id="b", seed=1, student_top1=92.0, **common),
        make_record(run_id="m", method="noise_kd", protocol="matched", **{k: common[k] for k in ("teacher", "student")},
                    dataset="cifar10"),
    ]  # fmt: skip
    tables = paper_view(build_leaderboard(records, dataset="cifar10", reference=load_reference()))
    published = tables[("cifar10", "published")]
    dafl = published[published["method"] == "dafl"].iloc[0]
    assert dafl["resnet34→resnet18"] == "91.00 ± 1.41 [92.22]"  # ours (last epoch, 2 seeds) [published, best]
    assert dafl["vgg11→resnet18"] == "[81.10]"  # a published pair we did not run
    matched = tables[("cifar10", "matched")]
    assert list(matched.columns) == ["method", "resnet34→resnet18"] and matched.iloc[0]["method"] == "noise_kd"
    assert "[" not in matched.iloc[0]["resnet34→resnet18"]  # published numbers only beside published runs
    assert "## cifar10 — published" in paper_markdown(tables)
    (path,) = write_paper_view(build_leaderboard(records, dataset="cifar10", reference=load_reference()), tmp_path)
    assert path.name == "leaderboard-cifar10-paper.md" and "91.00 ± 1.41 [92.22]" in path.read_text()


def test_rows_say_which_runs_configuration_generator_and_teacher_weights_they_average(tmp_path: Path) -> None:
    card = {"title": "PRISM", "paper_only": True}
    for seed in (0, 1):
        write_record(
            tmp_path,
            make_record(
                method="prism",
                seed=seed,
                run_id=f"seed{seed}-abcd1234",
                config_id="abcd1234",
                epochs=20,
                config={"prism": {"generator": {"path": "glyphs", "dtype": "float32"}}},
                teacher_file={"digest": "0123456789abcdef" * 4},
                method_card=card,
            ),
        )
    write_record(tmp_path, make_record(method="dafl", run_id="d0", config={"dafl": {"generator": "large"}}))
    df = build_leaderboard(load_records(tmp_path), reference=None)
    prism = row(df, method="prism")
    assert (prism["config_id"], prism["run_ids"], prism["epochs"]) == ("abcd1234", "seed0-abcd1234,seed1-abcd1234", 20)
    assert (prism["generator"], prism["teacher_digest"]) == ("glyphs", "0123456789abcdef")
    assert prism["reconstructed"] == "yes"
    dafl = row(df, method="dafl")
    assert (dafl["generator"], dafl["reconstructed"], dafl["teacher_digest"]) == ("large", "", "")  # no card: unknown
