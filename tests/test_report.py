import json

import numpy as np
import pytest
from PIL import Image

from q1_fashion.data import CLASSES as Q1_CLASSES
from q1_fashion.data import describe_views as q1_views
from q1_fashion.train import RECIPES
from q2_segmentation.data import CLASSES as Q2_CLASSES
from q2_segmentation.data import describe_views as q2_views
from q2_segmentation.train import RECIPES as Q2_RECIPES
from tests.helpers import matches_expected
from tools import report


@pytest.fixture
def pypdf():
    """pypdf reads the PDF back; only the tests of the PDF need it (the Markdown tests run without)."""
    return pytest.importorskip("pypdf")


def png(path, size=(400, 300)):
    Image.new("RGB", size, (200, 220, 240)).save(path)


def recorded(data_dir, val):
    """What every run of this version records besides its figures: the version, the precisions, the data."""
    return {"version": "4.0.0", "train_precision": "fp32", "eval_precision": "fp32", "other_data": False,
            "data": {"folder": data_dir, "images": {"train": 55000, "val": val, "test": 2000}, "val_split": "val",
                     "val_fingerprint": "0123456789abcdef"}}


def write_q1_run(folder, model, accuracy, per_class, **config):
    folder.mkdir(parents=True)
    settings = dict(RECIPES[model], model=model, precision="fp32", epochs=7, **config)
    (folder / "metrics.json").write_text(json.dumps({
        **recorded("data", 5000), "views": q1_views(settings),
        "model": model, "params": 4414 if model == "basenet" else 164778, "epochs": 7, "best_epoch": 6,
        "train_seconds": 12.5, "final": False, "val_accuracy": accuracy,
        "val_per_class": dict(zip(Q1_CLASSES, per_class, strict=True)),
        "config": settings}))
    (folder / "model.txt").write_text(f"{model.upper()}-PRINT\n")
    (folder / "summary.txt").write_text("SUMMARY-TABLE Total params: 4,414\n")
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        png(folder / name)


def write_q2_run(folder, model, ap, iou, **extra):
    folder.mkdir(parents=True)
    settings = dict(Q2_RECIPES[model], backbone="efficientnet_lite0", model=model, lr=0.00123, pretrained=True,
                    weights=None, precision="fp32", epochs=3)
    (folder / "metrics.json").write_text(json.dumps({
        **recorded("data", 100), "views": q2_views(settings),
        "backbone": "efficientnet_lite0", "model": model, "head": f"HEAD-{model}", "params": 4659694, "epochs": 3,
        "best_epoch": 3, "train_seconds": 99.0, "final": False,
        "val_mAP": float(np.mean(ap)), "val_mIoU": float(np.mean(iou)),
        "val_ap": dict(zip(Q2_CLASSES, ap, strict=True)), "val_iou": dict(zip(Q2_CLASSES, iou, strict=True)),
        "config": settings, **extra}))
    for name in ("curves.png", "per_class.png", "vis_val.png"):
        png(folder / name)


def write_results(results):
    """A results tree: both Q1 runs, a Q1 ablation, two Q2 runs and a --final Q1 run."""
    write_q1_run(results / "q1_fashion" / "basenet", "basenet", 87.125, [80.5 + i for i in range(10)])
    write_q1_run(results / "q1_fashion" / "improved", "improved", 93.875, [90.25 + i / 2 for i in range(10)])
    probabilities = np.full((2000, 10), 0.1, dtype=np.float32)
    np.save(results / "q1_fashion" / "improved" / "Q1_label_predictions.npy", probabilities)
    (results / "q1_fashion" / "ablation.md").write_text("| component | params | epochs | val accuracy (%) |\n"
                                                       "|---|---:|---:|---:|\n| + width | 164,778 | 7 | 93.11 |\n")
    png(results / "q1_fashion" / "ablation.png")
    q2 = results / "q2_segmentation"
    write_q2_run(q2 / "efficientnet_lite0_baseline", "baseline", [0.91, 0.31, 0.41, 0.61, 0.71, 0.81],
                 [0.82, 0.12, 0.22, 0.52, 0.62, 0.72])
    write_q2_run(q2 / "efficientnet_lite0_improved", "improved", [0.95, 0.52, 0.77, 0.94, 0.82, 0.88],
                 [0.81, 0.31, 0.49, 0.76, 0.59, 0.67])
    # a --final run trained on val: its val figures must not be reported as held out
    write_q1_run(results / "q1_fashion" / "improved-final", "improved", 99.5, [99.0] * 10)
    json_path = results / "q1_fashion" / "improved-final" / "metrics.json"
    metrics = json.loads(json_path.read_text())
    json_path.write_text(json.dumps(dict(metrics, final=True, config=dict(metrics["config"], final=True))))
    return results


@pytest.fixture
def results(tmp_path):
    return write_results(tmp_path / "results")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One report of the results tree, built once for the tests that only read it: (results folder, its text)."""
    results = write_results(tmp_path_factory.mktemp("built") / "results")
    return results, report.build_report(results)


def pdf_text(pypdf, path):
    reader = pypdf.PdfReader(path)
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def test_report_reads_every_section_and_number(built):
    results, text = built
    assert (results / "REPORT.md").read_text() == text
    for heading in ("## Summary: this repository next to the reference report", "## Q1", "### BaseNet",
                    "### Best model: improved", "### Secret test predictions", "## Q2", "### Ablation",
                    "Layers (the reference report's format)"):
        assert heading in text
    assert "BASENET-PRINT" in text and "SUMMARY-TABLE" in text
    assert "87.12 %" in text and "93.88 %" in text and "| Shirt | 93.25 |" in text and "| Trouser | 81.50 |" in text
    assert "| + width | 164,778 | 7 | 93.11 |" in text
    assert "| 1 | Conv2d | 5x5 | 28x28 | 24x24 | 1 | 32 |" in text  # the improved model's first layer
    assert "OK " in text and "Q1_label_predictions.npy" in text  # the checker's verdict
    assert "sports: AP: 0.31, IoU: 0.12" in text and "mean: AP: 0.63, IoU: 0.50" in text
    assert "peak lr 0.00123" in text and "batch 16" in text  # training details from the run's config
    assert "Upsampling: HEAD-baseline" in text  # the head's description, as the run recorded it
    # the comparison at the top: the reference report's figures next to ours, with how ours were made
    assert "| Q1 BaseNet, val accuracy | 87.0 % | 87.12 % | BaseNet, fp32, 1 test-time view (the image), 7 epochs |" \
        in text
    assert "| Q2 best model, val mAP / mIoU | 0.79 / 0.58 | 0.813 / 0.605 |" in text
    assert "99.50" not in text  # the --final run is not a held-out figure
    assert "`improved-final`: --final: trained on val" in text  # but is listed as what it is
    # missing runs are named with the command that produces them
    assert "python q1_fashion/train.py --model report_best" in text
    assert "python q2_segmentation/train.py --model report_best" in text
    assert "confusion.png" in text and "per_class.png" in text and "misclassified.png" in text


def test_report_pdf_has_the_sections_numbers_and_figures(built, pypdf):
    pdf = built[0] / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    pages, text = pdf_text(pypdf, pdf)
    assert pages == 8
    for heading in ("Summary: this repository next to the reference report", "Q1: Fashion-MNIST classification",
                    "BaseNet", "Best model: improved", "Secret test predictions", "Q2: semantic segmentation",
                    "Ablation (each row adds one component to the row above)"):
        assert heading in text
    for number in ("87.12 %", "93.88 %", "93.25", "0.813 / 0.605", "164,778", "92.1 %", "0.73 / 0.53"):
        assert number in text
    assert f"page 1 of {pages}" in text and f"page {pages} of {pages}" in text
    images = sum(len(page.images) for page in pypdf.PdfReader(pdf).pages)
    assert images == 10  # the best Q1 run's 3 figures, the Q1 ablation chart, 3 for each of 2 Q2 runs


def test_an_empty_results_tree_still_gives_a_pdf_with_the_commands(tmp_path, pypdf):
    report.build_report(tmp_path / "results")
    pages, text = pdf_text(pypdf, tmp_path / "results" / "report.pdf")
    assert pages == 1
    for command in ("python q1_fashion/train.py --model basenet", "python q1_fashion/train.py",
                    "python q2_segmentation/train.py --model baseline", "python q2_segmentation/ablate.py"):
        assert command in text
    assert "not run" in text


def test_each_damaged_metrics_file_is_left_out_with_one_warning_and_the_report_says_why(results, capsys):
    """README: a damaged metrics.json is left out with one warning line, and the report says why. Three kinds of
    damage in one report (one build instead of three: the PDF is most of a build's cost)."""
    q1, q2 = results / "q1_fashion", results / "q2_segmentation"
    damaged = {  # path: (what it is given, the problem the warning and the report must name)
        q1 / "basenet" / "metrics.json": ((q1 / "basenet" / "metrics.json").read_text()[:100], "not readable JSON"),
        q1 / "improved-final" / "metrics.json": ("", "empty"),
        q2 / "efficientnet_lite0_baseline" / "metrics.json": (
            '{"model": "baseline"}', "no version, params, epochs, best_epoch, train_seconds, train_precision, "
                                     "eval_precision, views, data, other_data, config, backbone, head, val_mAP, "
                                     "val_mIoU, val_ap, val_iou"),
    }
    for path, (text, _) in damaged.items():
        path.write_text(text)
    text = report.build_report(results)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == len(damaged)
    for warning, (path, (_, problem)) in zip(warnings, sorted(damaged.items()), strict=True):
        assert warning.startswith(f"warning: {path}: {problem}") and warning.endswith("; left out")
        assert f"{path} is damaged ({problem}" in text
    assert f"left out: {q1 / 'basenet' / 'metrics.json'} is damaged (not readable JSON" in text  # BaseNet's row
    assert "no `baseline` run: left out:" in text  # Q2's list of missing heads says why
    # the rest of the report is written: the improved runs of both questions with their figures, and the PDF
    assert "93.88 %" in text and "0.813 / 0.605" in text and (results / "report.pdf").is_file()


def test_the_report_shows_paths_relative_to_the_repository(tmp_path, monkeypatch):
    from common import files as paths
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    results = tmp_path / "results"
    write_q1_run(results / "q1_fashion" / "improved", "improved", 93.875, [90.25 + i / 2 for i in range(10)])
    np.save(results / "q1_fashion" / "improved" / "Q1_label_predictions.npy", np.full((2000, 10), 0.1, np.float32))
    text = report.build_report(results)
    assert "`results/q1_fashion/improved/Q1_label_predictions.npy`, checked by" in text
    assert str(tmp_path) not in text  # no absolute path of this machine, the checker's verdict included


def test_holdout_limited_and_unfinished_runs_are_labelled_and_kept_out_of_the_comparison(results):
    """Report docstring: a --holdout, --limit or unfinished run is listed with its label, never compared with the
    reference report or chosen as the best model, however high its figure."""
    q1 = results / "q1_fashion"
    write_q1_run(q1 / "improved-holdout5000", "improved", 99.1, [99.0] * 10, holdout=5000)
    write_q1_run(q1 / "improved-limited", "improved", 99.2, [99.0] * 10, limit=600)
    write_q1_run(q1 / "improved-stopped", "improved", 99.3, [99.0] * 10)
    stopped = q1 / "improved-stopped" / "metrics.json"
    metrics = json.loads(stopped.read_text())
    stopped.write_text(json.dumps(dict(metrics, epochs=1)))  # 1 of the config's 7
    text = report.build_report(results)
    for figure in ("99.10", "99.20", "99.30"):
        assert figure not in text  # neither in the comparison nor as the best model
    assert "### Best model: improved\n" in text and "93.88 %" in text
    assert "`improved-holdout5000`: --holdout 5000: figures on training images, not val" in text
    assert "`improved-limited`: --limit 600: trained on part of the data" in text
    assert "`improved-stopped`: unfinished: 1 of 7 epochs" in text


@pytest.mark.parametrize("field, value, problem", [
    ("val_accuracy", "93.1", "val_accuracy is str"),
    ("config", None, "config is NoneType"),
    ("val_per_class", [90.0] * 10, "val_per_class is list"),
    ("params", True, "params is bool"),
])
def test_a_field_of_the_wrong_type_is_left_out_with_one_warning(results, capsys, field, value, problem):
    path = results / "q1_fashion" / "basenet" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics[field] = value
    path.write_text(json.dumps(metrics))
    runs, left_out = report.read_runs(results / "q1_fashion")
    assert "basenet" not in runs and problem in left_out["basenet"]
    assert capsys.readouterr().err.strip() == f"warning: {path}: {problem}; left out"


def test_a_config_that_cannot_build_the_network_is_left_out(results, capsys):
    """A Q1 config without its width, a Q2 config without its backbone: the layer tables could not be drawn."""
    q1_path = results / "q1_fashion" / "improved" / "metrics.json"
    metrics = json.loads(q1_path.read_text())
    del metrics["config"]["width"]
    q1_path.write_text(json.dumps(metrics))
    q2_path = results / "q2_segmentation" / "efficientnet_lite0_baseline" / "metrics.json"
    metrics = json.loads(q2_path.read_text())
    del metrics["config"]["backbone"]
    q2_path.write_text(json.dumps(metrics))
    text = report.build_report(results)
    err = capsys.readouterr().err
    assert "improved/metrics.json: its config does not describe a network (KeyError: 'width')" in err
    assert "efficientnet_lite0_baseline/metrics.json: its config does not describe a network" in err
    assert (results / "report.pdf").is_file() and "87.12 %" in text


def test_runs_are_found_by_what_their_metrics_say_not_by_their_folder_names(tmp_path):
    """A BaseNet run in a folder of another name is the report's BaseNet; an improved Q2 run in a folder named
    anything is a Q2 run of its recorded head."""
    results = tmp_path / "results"
    write_q1_run(results / "q1_fashion" / "my-first-try", "basenet", 86.5, [80.0] * 10)
    write_q2_run(results / "q2_segmentation" / "whatever", "improved", [0.9] * 6, [0.6] * 6)
    text = report.build_report(results)
    assert "| Q1 BaseNet, val accuracy | 87.0 % | 86.50 % |" in text
    assert "| Q2 best model, val mAP / mIoU | 0.79 / 0.58 | 0.900 / 0.600 |" in text


def test_the_whole_report_text_is_the_expected_one(tmp_path, monkeypatch):
    """The report is what students hand in: its whole text for the results tree of write_results() is compared
    with tests/data/report.md, in which every number is one of those inputs'. A change of wording shows here as a
    diff; CS543_UPDATE_REPORT=1 rewrites the file after a deliberate change."""
    from common import files as paths
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    matches_expected(report.build_report(write_results(tmp_path / "results")), "report.md", "CS543_UPDATE_REPORT")


def test_the_report_texts_of_other_trees_are_the_expected_ones(tmp_path, monkeypatch):
    """Two more trees, compared with tests/data/report_other.md: an empty one (every
    missing run named with its command), and one with a run made by an older version (listed as such, without its
    figures), a run trained in bf16 and evaluated in fp32, --holdout, --limit and unfinished runs, and no Q2
    baseline. CS543_UPDATE_REPORT=1 rewrites the file."""
    from common import files as paths
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    texts = [report.build_report(tmp_path / "empty" / "results")]
    results = tmp_path / "other" / "results"
    write_q1_run(results / "q1_fashion" / "base", "basenet", 86.25, [80.0 + i for i in range(10)])
    write_q1_run(results / "q1_fashion" / "wide", "improved", 94.5, [90.0 + i / 2 for i in range(10)], width=48)
    wide = results / "q1_fashion" / "wide" / "metrics.json"
    metrics = json.loads(wide.read_text())
    wide.write_text(json.dumps(dict(metrics, train_precision="bf16", eval_precision="fp32",
                                    views="2 test-time views (the image and its mirror)")))
    write_q1_run(results / "q1_fashion" / "tuned", "improved", 99.0, [99.0] * 10, holdout=5000)
    write_q1_run(results / "q1_fashion" / "quick", "improved", 99.0, [99.0] * 10, limit=600)
    write_q2_run(results / "q2_segmentation" / "lite0", "improved", [0.9, 0.5, 0.6, 0.7, 0.8, 0.85],
                 [0.8, 0.3, 0.4, 0.5, 0.6, 0.7], epochs=1, planned_epochs=3, finished=False)
    write_q2_run(results / "q2_segmentation" / "scales", "baseline", [0.9, 0.4, 0.5, 0.6, 0.7, 0.8],
                 [0.8, 0.2, 0.3, 0.4, 0.5, 0.6])  # made by version 3.2.0, which recorded no version
    older = results / "q2_segmentation" / "scales" / "metrics.json"
    metrics = json.loads(older.read_text())
    del metrics["version"]
    older.write_text(json.dumps(metrics))
    texts.append(report.build_report(results))
    matches_expected("\n\n=====\n\n".join(texts), "report_other.md", "CS543_UPDATE_REPORT")
