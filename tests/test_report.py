"""The diagnose stage (synthetic-set metrics into records and leaderboards) and `bench report` / `bench compare`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch

from dfkd.benchmark.assembly import resolve_run_config
from dfkd.benchmark.diagnose import class_balance, diagnose, histogram, per_class_top1, subset_indices
from dfkd.benchmark.progress import Reporter
from dfkd.benchmark.report import write_report
from dfkd.benchmark.runner import run, teacher_logits
from dfkd.cli.main import main as bench
from dfkd.config import DiagnoseConfig
from dfkd.datasets import get_dataset
from dfkd.errors import UserError
from dfkd.metrics.energy import free_energy
from dfkd.models import create_model
from dfkd.synthesis.store import SyntheticStore

SPEC = get_dataset("digits")


def _real_test_uint8(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    test = SPEC.load("test")
    xs, ys = zip(*(test[i] for i in range(n or len(test))))
    images = (SPEC.denormalize(torch.stack(xs)).clamp(0, 1) * 255).round().to(torch.uint8)  # (N, 3, 32, 32)
    return images, torch.tensor(ys)


def _store_of(tmp_path, images, labels, teacher, name="s"):
    """A complete store holding ``images`` with the teacher's scores, as the runner writes them."""
    store = SyntheticStore.open(tmp_path / name, config_hash=name)
    logits = teacher_logits(teacher, images, SPEC, torch.device("cpu"))
    table = {
        "label": labels,
        "teacher_logits": logits,
        "teacher_pred": logits.argmax(1),
        "teacher_confidence": logits.softmax(1).max(1).values,
        "teacher_energy": free_energy(logits),
    }
    store.write_unit("u0000", images, table)
    store.mark_complete(["u0000"])
    return store


@pytest.fixture(scope="module")
def random_teacher():
    torch.manual_seed(0)
    return create_model("resnet8", 10).eval().requires_grad_(False)


def _diagnose(store, teacher, student=None, **cfg):
    test = SPEC.load("test")
    t_pred = torch.cat([teacher(x).argmax(1) for x, _ in torch.utils.data.DataLoader(test, batch_size=256)])
    return diagnose(
        DiagnoseConfig(**cfg),
        spec=SPEC,
        teacher=teacher,
        student=student if student is not None else teacher,
        device=torch.device("cpu"),
        test_set=test,
        teacher_pred=t_pred,
        store=store,
    )


# ---------------------------------------------------------------------------------------------- diagnose


def test_pure_helpers_golden_values():
    edges = torch.tensor([0.0, 0.5, 1.0])
    assert histogram(torch.tensor([0.0, 0.2, 0.5, 0.99, 1.0, 1.5]), edges) == [2, 4]  # last bin closed, clamped
    assert class_balance(torch.tensor([5, 5, 5, 5])) == pytest.approx(1.0)
    assert class_balance(torch.tensor([10, 0, 0, 0])) == 0.0
    assert per_class_top1(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 4) == [100.0, 100.0, 50.0, None]
    assert subset_indices(10, 0, 0).tolist() == list(range(10))
    picked = subset_indices(100, 7, seed=3)
    assert picked.tolist() == sorted(picked.tolist()) and len(set(picked.tolist())) == 7
    assert torch.equal(picked, subset_indices(100, 7, seed=3))


def test_a_copy_of_the_real_test_set_scores_full_precision_recall_coverage(tmp_path, random_teacher):
    images, labels = _real_test_uint8()
    found = _diagnose(_store_of(tmp_path, images, labels, random_teacher), random_teacher)
    s = found.scalars
    assert s["synthetic/precision"] == s["synthetic/recall"] == s["synthetic/coverage"] == 1.0
    assert s["synthetic/teacher_fd"] == pytest.approx(0.0, abs=1e-3)
    assert s["synthetic/student_teacher_agreement"] == 100.0  # student = teacher here
    assert s["synthetic/class_balance"] > 0.99  # digits' test split is stratified
    space = found.details["feature_spaces"]["teacher"]
    assert space["real_images"] == space["synthetic_images"] == 450 and space["dim"] == 64
    assert found.details["class_counts"]["kept"] == torch.bincount(labels, minlength=10).tolist()
    for name in ("confidence_histogram", "energy_histogram"):
        hist = found.details[name]
        assert sum(hist["kept"]) == 450 and len(hist["edges"]) == 21
    assert len(found.details["per_class"]["student_top1"]) == 10
    assert sum(found.details["per_class"]["test_images"]) == 450


def test_noise_scores_below_real_images_and_the_subset_cap_holds(tmp_path, random_teacher):
    images, labels = _real_test_uint8(200)
    noise = torch.randint(0, 256, images.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    real = _diagnose(_store_of(tmp_path, images, labels, random_teacher, "real"), random_teacher, max_images=120)
    fake = _diagnose(_store_of(tmp_path, noise, labels, random_teacher, "noise"), random_teacher, max_images=120)
    assert fake.scalars["synthetic/precision"] < real.scalars["synthetic/precision"]
    assert fake.scalars["synthetic/teacher_fd"] > real.scalars["synthetic/teacher_fd"]
    space = fake.details["feature_spaces"]["teacher"]
    assert space["real_images"] == space["synthetic_images"] == 120


def test_clip_features_need_weights_and_then_add_a_second_space(tmp_path, random_teacher):
    import open_clip

    tiny = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny}))
    images, labels = _real_test_uint8(60)
    store = _store_of(tmp_path, images, labels, random_teacher)
    with pytest.raises(UserError, match="has no weights"):
        _diagnose(store, random_teacher, clip_model=f"local-dir:{folder}")
    with pytest.raises(UserError, match=r"needs diagnose\.clip_pretrained"):
        _diagnose(store, random_teacher, clip_model="ViT-B-32")
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", pretrained=None)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    found = _diagnose(store, random_teacher, clip_model=f"local-dir:{folder}")
    assert found.scalars["synthetic/clip_precision"] == 1.0  # the real test images themselves
    assert found.details["feature_spaces"]["clip"]["dim"] == 16


# ------------------------------------------------------------------------------------ runs and reports


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, digits_teacher_file):
    """noise_kd and deepinversion on digits (tiny budgets), each with its record, store and report."""
    import os

    root = tmp_path_factory.mktemp("report-runs")
    cache = root / "cache"
    (cache / "teachers").mkdir(parents=True)
    shutil.copy(digits_teacher_file, cache / "teachers" / "digits_resnet20.pth")
    old = os.environ.get("DFKD_CACHE")
    os.environ["DFKD_CACHE"] = str(cache)
    try:
        out = {}
        for method, sets in (
            ("noise_kd", ["images_per_class=6", "batch_size=6"]),
            ("deepinversion", ["iterations=3", "batch_size=10", "kd_steps=2"]),
        ):
            cfg = resolve_run_config(
                method=method,
                dataset="digits",
                sets=["distill.epochs=2", "diagnose.grid_images=3", *sets],
                flags={"output_dir": str(root / "runs")},
            )
            record = run(cfg, reporter=Reporter(quiet=True))
            out[method] = (record, next((root / "runs").rglob(f"{method}/*/record.json")).parent)
        yield root, out
    finally:
        if old is None:
            os.environ.pop("DFKD_CACHE", None)
        else:
            os.environ["DFKD_CACHE"] = old


def test_bench_run_records_the_metrics_and_writes_the_report(two_runs):
    root, runs = two_runs
    record, folder = runs["noise_kd"]
    for key in ("precision", "recall", "density", "coverage", "teacher_fd", "class_balance"):
        assert f"synthetic/{key}" in record.extra
    assert record.diagnostics["class_counts"]["kept"] == [6] * 10
    page = (folder / "report.html").read_text()
    assert 'id="metrics"' in page and 'id="fig-grid"' in page and 'id="fig-curves"' in page
    for png in ("grid", "curves", "confidence", "energy", "per-class"):
        assert (folder / f"report-{png}.png").stat().st_size > 1000
    from PIL import Image

    grid = Image.open(folder / "report-grid.png")  # 10 class rows, real test | synthetic, 3 images a side
    assert grid.height > 10 * 64 and grid.width > 2 * 3 * 64
    board = (root / "runs" / "leaderboard-digits.csv").read_text().splitlines()
    header = board[0].split(",")
    for column in ("precision_mean", "recall_mean", "density_mean", "coverage_mean", "teacher_fd_mean"):
        assert column in header
    row = next(line.split(",") for line in board if ",noise_kd," in line)
    assert row[header.index("precision_mean")] != ""


def test_metrics_table_holds_each_runs_numbers(two_runs, tmp_path):
    _, runs = two_runs
    out = write_report([runs["noise_kd"][1], runs["deepinversion"][1]], tmp_path / "cmp.html", grid_classes=4)
    page = out.read_text()
    table = page[page.index('<table id="metrics">') : page.index("</table>")]
    assert "<th>noise_kd</th>" in table and "<th>deepinversion</th>" in table
    for method in ("noise_kd", "deepinversion"):
        precision = runs[method][0].extra["synthetic/precision"]
        row = re.search(r'data-key="synthetic/precision"><td>[^<]*</td>(.*?)</tr>', table).group(1)
        assert f"{precision:.4f}" in row
    assert (tmp_path / "cmp-grid.png").is_file() and "deepinversion" in page[page.index("<h1>") :]


def test_charts_are_matplotlib_png_and_svg_and_a_comparison_marks_the_best_and_what_differs(two_runs, tmp_path):
    _, runs = two_runs
    (noise, a), (deepinv, b) = runs["noise_kd"], runs["deepinversion"]
    page = write_report([a, b], tmp_path / "cmp.html", grid_classes=4).read_text()
    for name in ("curves", "confidence", "energy", "per-class"):
        assert (tmp_path / f"cmp-{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (tmp_path / f"cmp-{name}.svg").read_text()
    per_class_svg = (tmp_path / "cmp-per-class.svg").read_text()
    assert "chance 10.0 %" in per_class_svg and "teacher" in per_class_svg and "student noise_kd" in per_class_svg

    row = re.search(r'data-key="student_top1"><td>[^<]*</td>(.*?)</tr>', page).group(1)
    cells = re.findall(r"<td( class=\"best\")?>([^<]*)</td>", row)
    if noise.student_top1 != deepinv.student_top1:
        winner = 0 if noise.student_top1 > deepinv.student_top1 else 1
        assert [bool(c[0]) for c in cells] == [i == winner for i in range(2)]  # the higher top-1 in bold
    assert noise.num_synthetic_images != deepinv.num_synthetic_images
    differ = page[page.index('id="differences"') :].split("</p>")[0]
    assert "compare with care" in differ and f"synthetic images: {noise.num_synthetic_images} (noise_kd)" in differ


def test_per_class_chart_groups_one_bar_per_run_with_teacher_and_chance_lines():
    from dfkd.benchmark import plots

    students = {"a": [10.0, 50.0, 90.0], "b": [20.0, 40.0, 80.0]}
    fig = plots.per_class(students, [95.0, 96.0, 97.0], chance=33.3, class_names=["x", "y", "z"])
    ax = fig.axes[0]
    bars = [p for p in ax.patches if type(p).__name__ == "Rectangle"]
    assert [round(b.get_height(), 1) for b in bars] == [10.0, 50.0, 90.0, 20.0, 40.0, 80.0]
    xs = [b.get_x() for b in bars]
    assert all(xs[c] < xs[3 + c] < xs[c + 1] if c < 2 else xs[c] < xs[3 + c] for c in range(3))  # grouped per class
    assert any(list(line.get_ydata()) == [33.3, 33.3] for line in ax.lines)  # chance
    labels = ax.get_legend_handles_labels()[1]
    assert {"a", "b", "teacher", "chance 33.3 %"} <= set(labels)


def test_bench_report_and_compare_cli(two_runs, tmp_path, capsys):
    _, runs = two_runs
    a, b = runs["noise_kd"][1], runs["deepinversion"][1]
    assert bench(["report", str(a / "record.json"), "--out", str(tmp_path / "one.html"), "--classes", "3"]) == 0
    assert (tmp_path / "one.html").is_file() and (tmp_path / "one-grid.png").is_file()
    assert bench(["compare", str(a), str(b), "--out", str(tmp_path / "two.html")]) == 0
    assert "<th>deepinversion</th>" in (tmp_path / "two.html").read_text()
    assert bench(["report", str(tmp_path / "nowhere")]) == 1
    assert "has no record.json" in capsys.readouterr().err


def test_report_of_a_run_whose_store_is_gone_still_renders(two_runs, tmp_path):
    _, runs = two_runs
    copy = tmp_path / "run"
    shutil.copytree(runs["noise_kd"][1], copy)
    data = json.loads((copy / "record.json").read_text())
    data["store"] = str(tmp_path / "moved-away")
    (copy / "record.json").write_text(json.dumps(data))
    page = write_report([copy], copy / "r.html").read_text()
    assert "not found (moved or deleted)" in page and 'id="metrics"' in page and "real test" in page


def test_compare_refuses_runs_of_different_data_sets(two_runs, tmp_path):
    _, runs = two_runs
    other = tmp_path / "other"
    shutil.copytree(runs["noise_kd"][1], other)
    data = json.loads((other / "record.json").read_text())
    data["dataset"] = "cifar10"
    (other / "record.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="compare runs of one data set"):
        write_report([runs["noise_kd"][1], other], tmp_path / "x.html")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium on PATH (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(two_runs, tmp_path):
    _, runs = two_runs
    page = write_report([runs["noise_kd"][1], runs["deepinversion"][1]], tmp_path / "page.html")
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [*cmd, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    shown = int(re.search(r'data-images="(\d+)"', dom).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom).group(1))
    assert shown >= 5 and loaded == shown  # grid, curves, two histograms, per-class: every image decoded
    assert 'id="fig-grid"' in dom and '<table id="metrics">' in dom and 'data-key="synthetic/precision"' in dom
    shot = tmp_path / "page.png"
    subprocess.run(
        [*cmd, "--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000
