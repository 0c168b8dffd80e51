import json

import numpy as np

from q1_fashion.data import CLASSES as Q1_CLASSES
from q1_fashion.train import RECIPES
from q2_segmentation.data import CLASSES as Q2_CLASSES
from tools import report


def write_q1_run(folder, model, accuracy, per_class, **config):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "model": model, "params": 4414 if model == "basenet" else 164778, "epochs": 7, "best_epoch": 6,
        "train_seconds": 12.5, "val_accuracy": accuracy, "val_per_class": dict(zip(Q1_CLASSES, per_class, strict=True)),
        "config": dict(RECIPES[model], model=model, **config)}))
    (folder / "model.txt").write_text(f"{model.upper()}-PRINT\n")
    (folder / "summary.txt").write_text("SUMMARY-TABLE Total params: 4,414\n")


def test_report_names_every_section_and_number(tmp_path):
    results = tmp_path / "results"
    write_q1_run(results / "q1_fashion" / "basenet", "basenet", 87.125, [80.5 + i for i in range(10)])
    write_q1_run(results / "q1_fashion" / "improved", "improved", 93.875, [90.25 + i / 2 for i in range(10)])
    probabilities = np.full((2000, 10), 0.1, dtype=np.float32)
    np.save(results / "q1_fashion" / "improved" / "Q1_label_predictions.npy", probabilities)
    (results / "q1_fashion" / "ablation.md").write_text("| component | params | epochs | val accuracy (%) |\n"
                                                       "|---|---:|---:|---:|\n| + width | 164,778 | 7 | 93.11 |\n")
    q2 = results / "q2_segmentation" / "efficientnet_lite0_baseline"
    q2.mkdir(parents=True)
    ap = dict(zip(Q2_CLASSES, [0.91, 0.31, 0.41, 0.61, 0.71, 0.81], strict=True))
    iou = dict(zip(Q2_CLASSES, [0.82, 0.12, 0.22, 0.52, 0.62, 0.72], strict=True))
    (q2 / "metrics.json").write_text(json.dumps({
        "backbone": "efficientnet_lite0", "model": "baseline", "params": 4659694, "epochs": 3, "best_epoch": 3,
        "train_seconds": 99.0, "val_mAP": float(np.mean(list(ap.values()))), "val_mIoU": 0.5, "val_ap": ap,
        "val_iou": iou, "config": {"backbone": "efficientnet_lite0", "model": "baseline", "lr": 0.00123,
                                   "trunk_lr_scale": 0.1, "weight_decay": 1e-4, "schedule": "onecycle",
                                   "batch_size": 16, "epochs": 3, "augment": True, "pretrained": True}}))

    text = report.build_report(results)
    assert (results / "REPORT.md").read_text() == text
    for heading in ("## Q1", "### BaseNet", "### Best model: `improved`", "### Secret test predictions",
                    "## Q2", "### Ablation", "Layers (the reference report's format)"):
        assert heading in text
    assert "BASENET-PRINT" in text and "SUMMARY-TABLE" in text
    assert "87.12 %" in text and "93.88 %" in text and "| Shirt | 93.25 |" in text and "| Trouser | 81.50 |" in text
    assert "| + width | 164,778 | 7 | 93.11 |" in text
    assert "| 1 | Conv2d | 5x5 | 28x28 | 24x24 | 1 | 32 |" in text  # the improved model's first layer
    assert "OK " in text and "Q1_label_predictions.npy" in text  # the checker's verdict
    assert "sports: AP: 0.31, IoU: 0.12" in text and "mean: AP: 0.63, IoU: 0.50" in text
    assert "lr 0.00123" in text and "batch 16" in text  # training details from the run's config
    assert "bilinear x32" in text
    # missing runs are named with the command that produces them
    assert "python q1_fashion/train.py --model report_best" in text
    assert "--model improved" in text and "Test predictions" in text and "not found" in text
    assert "curves.png" in text  # figure links stay, marked missing when absent


def test_report_on_empty_results_lists_commands(tmp_path):
    text = report.build_report(tmp_path / "results")
    assert "python q1_fashion/train.py --model basenet" in text
    assert "No Q2 run found: run `python q2_segmentation/train.py`" in text
