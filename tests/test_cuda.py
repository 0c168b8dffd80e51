"""The CUDA path: mixed precision, the loss scaler and CUDA RNG state in checkpoints, resume on the GPU.

Marked `cuda`; skipped where PyTorch sees no GPU (see conftest.py). bench/gpu_smoke.sh runs the same paths
from the command line."""
import json

import numpy as np
import pytest
import torch

from common.precision import resolve_precision
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train
from tests.helpers import interrupt_at_epoch

pytestmark = pytest.mark.cuda
GPU = torch.device("cuda")


def test_auto_precision_on_the_gpu():
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto", GPU)[0] == expected


def run(main, tmp_path, name, data_dir, *extra):
    out, ckpt = tmp_path / name / "out", tmp_path / name / "ckpt"
    main(["--device", "cuda", "--data-dir", str(data_dir), "--out-dir", str(out), "--checkpoint-dir", str(ckpt),
          *extra])
    return out, ckpt


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_q1_on_the_gpu_trains_checkpoints_and_resumes(tmp_path, course_data, monkeypatch, precision):
    common = ("--width", "8", "--epochs", "2", "--limit", "2000", "--precision", precision)
    straight, _ = run(q1_train.main, tmp_path, "straight", course_data, *common)
    undo = interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run(q1_train.main, tmp_path, "resumed", course_data, *common)
    undo()
    state = torch.load(tmp_path / "resumed" / "ckpt" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and "cuda" in state["rng"]
    if state["config"]["precision"] == "fp16":
        assert state["scaler"]["scale"] > 0  # the loss scaler's state travels with the checkpoint
    resumed, _ = run(q1_train.main, tmp_path, "resumed", course_data, *common, "--resume")
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in (straight, resumed))
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    # GPU kernels are not bitwise deterministic by default (cuDNN's backward uses atomics), so two runs of
    # one seed differ in the last bits; a resume that lost its state (RNG, schedule, average) differs by far
    # more. 0.2 points = 10 of the 5,000 val images. (Not yet run on a GPU: none was available.)
    assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=0.2)
    probabilities = np.load(resumed / "Q1_label_predictions.npy")
    assert probabilities.dtype == np.float32 and probabilities.shape == (2000, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_q2_on_the_gpu_trains_and_evaluates(tmp_path, tiny_course_data):
    common = ("--backbone", "efficientnet_lite0", "--model", "improved")
    out, _ = run(q2_train.main, tmp_path, "q2", tiny_course_data, *common, "--epochs", "1")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] in ("bf16", "fp16")
    scores = np.load(out / "Q2_sseg_predictions.npy")
    assert scores.dtype == np.uint8 and 249 <= scores.astype(int).sum(axis=1).min()
    run(q2_train.main, tmp_path, "q2", tiny_course_data, *common, "--eval-only")
    again = json.loads((out / "metrics.json").read_text())  # the same checkpoint evaluated again
    assert again["best_epoch"] == metrics["best_epoch"] and again["config"] == metrics["config"]
    assert again["val_mIoU"] == pytest.approx(metrics["val_mIoU"], abs=1e-3)
