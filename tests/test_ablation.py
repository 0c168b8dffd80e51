import json
from pathlib import Path

import pytest

from q1_fashion import ablate as q1_ablate
from q1_fashion import train as q1_train
from q1_fashion.models import FAMILY_KEYS
from q2_segmentation import ablate as q2_ablate
from q2_segmentation import train as q2_train
from tests.helpers import settings


def fake_train(calls, metrics):
    """A train_main that records its argv and writes a metrics.json, instead of training."""
    def train_main(argv):
        calls.append(argv)
        out = Path(argv[argv.index("--out-dir") + 1])
        out.mkdir(parents=True)
        step = len(calls)
        (out / "metrics.json").write_text(json.dumps({"params": 1000 * step, "epochs": 3, **metrics(step)}))
    return train_main


def test_q1_driver_runs_each_cumulative_step_and_tabulates(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(q1_train, "main", fake_train(calls, lambda step: {"val_accuracy": 80.0 + step}))
    q1_ablate.main(["--epochs", "3", "--results-dir", str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c")])
    assert len(calls) == len(q1_ablate.STEPS) == 6
    assert all(argv[:2] == ["--model", "improved"] and "--epochs" in argv for argv in calls)
    first = calls[0]
    for flag in ("--no-augment", "--no-batchnorm"):
        assert flag in first
    assert first[first.index("--width") + 1] == "6" and first[first.index("--depth") + 1] == "1"
    assert "--augment" in calls[1] and "--no-batchnorm" in calls[1]  # one change: augmentation only
    table = (tmp_path / "r" / "ablation.md").read_text().splitlines()
    assert table[0] == "| component | params | epochs | val accuracy (%) |"
    assert table[2] == "| baseline (BaseNet) | 1,000 | 3 | 81.00 |"
    assert table[-1] == "| + width (= improved) | 6,000 | 3 | 86.00 |"
    assert (tmp_path / "r" / "ablation.png").stat().st_size > 0
    assert (Path(calls[-1][calls[-1].index("--out-dir") + 1])).parent == tmp_path / "r" / "ablation"


def test_q1_ladder_ends_at_the_default_model(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(q1_train, "main", fake_train(calls, lambda step: {"val_accuracy": 90.0}))
    q1_ablate.main(["--results-dir", str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c")])
    last = settings(q1_train, *calls[-1]).recipe
    default = settings(q1_train).recipe
    for key in ("model", "augment", *FAMILY_KEYS):
        assert last[key] == default[key], key


def test_q2_driver_runs_the_report_ladder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(q2_train, "main", fake_train(calls, lambda step: {"val_mAP": 0.5 + step / 100,
                                                                           "val_mIoU": 0.3 + step / 100}))
    q2_ablate.main(["--backbone", "efficientnet_lite0", "--results-dir", str(tmp_path / "r"),
                    "--checkpoints-dir", str(tmp_path / "c")])
    assert len(calls) == 6
    assert "--no-dilated" in calls[0] and "--dilated" in calls[2] and "--stepwise" in calls[4]
    assert all(argv[argv.index("--epochs") + 1] == str(q2_ablate.EPOCHS) for argv in calls)
    assert calls[0][calls[0].index("--ladder-width") + 1] == "128"  # narrowed for a CPU, and said so below
    # the last row is the default head with its own recipe: no ladder switch reaches it
    last = q2_train.parse_args(calls[-1])
    assert last.model == "improved" and all(getattr(last, key) is None for key in q2_train.LADDER_KEYS)
    table = (tmp_path / "r" / "ablation.md").read_text().splitlines()
    assert table[0] == "| component | params | epochs | val mAP | val mIoU |"
    assert table[2] == "| baseline (1x1 conv, x32 upsampling) | 1,000 | 3 | 0.5100 | 0.3100 |"
    assert table[4].startswith("| + dilated convs (128 channels) |")
    assert table[-1].startswith("| default improved head, its recipe |")


@pytest.mark.slow
def test_q2_ablation_end_to_end_on_tiny_data(tmp_path, tiny_course_data):
    q2_ablate.main(["--backbone", "efficientnet_lite0", "--epochs", "1", "--data-dir", str(tiny_course_data),
                    "--results-dir", str(tmp_path / "r"), "--checkpoints-dir", str(tmp_path / "c")])
    table = (tmp_path / "r" / "ablation.md").read_text().splitlines()
    assert len(table) == 2 + 6
    assert table[-2].startswith("| + stepwise upsampling |")
    params = [int(line.split("|")[2].replace(",", "")) for line in table[2:]]
    assert params[0] < params[2]  # the dilated blocks add parameters
    for step in ("1_baseline", "5_stepwise_upsampling", "6_default_improved_head_its_recipe"):
        assert (tmp_path / "r" / "ablation" / step / "Q2_sseg_predictions.npy").is_file()
