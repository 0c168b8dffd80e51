"""Helpers the tests share: tiny synthetic course items, metrics without timings, a simulated Ctrl-C."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_segmentation_item(folder, name, size=224, label_value=1, image=True, label=True):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    if image:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
    if label:
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[size // 4: size // 2, size // 4: size // 2] = label_value
        Image.fromarray(mask, mode="L").save(folder / f"{name}.png")


def matches_expected(text, name, update_variable):
    """Assert `text` equals tests/data/NAME, showing a diff where it does not; with the environment variable
    `update_variable` set, write `text` there first (after a deliberate change of wording)."""
    import difflib
    import os

    expected = Path(__file__).parent / "data" / name
    if os.environ.get(update_variable):
        expected.write_text(text)
    diff = "".join(difflib.unified_diff(expected.read_text().splitlines(True), text.splitlines(True), "expected",
                                        "now"))
    assert not diff, diff


def read_metrics(out_dir):
    """A run's metrics.json less what differs between two runs that computed the same numbers: its timing, its
    id, and its record of how the training went (one stretch, or two around an interruption)."""
    metrics = json.loads((Path(out_dir) / "metrics.json").read_text())
    for key in ("train_seconds", "run_id", "training"):
        metrics.pop(key)
    return metrics


def interrupted_then_resumed(monkeypatch, run, *argv):
    """`run(name, *argv)` stopped by Ctrl-C as epoch 2 starts, then run again with --resume; returns what the
    resumed run returns."""
    undo = interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run("resumed", *argv)
    undo()
    return run("resumed", *argv, "--resume")


def interrupt_at_epoch(monkeypatch, epoch):
    """Make the next run stop with Ctrl-C as epoch `epoch` starts; returns the undo function."""
    from common import loop as training_loop  # here, not at the top: conftest imports this file (see there)
    real = training_loop.train_one_epoch

    def interrupted(*args, desc, **kwargs):
        if desc == f"epoch {epoch}":
            raise KeyboardInterrupt
        return real(*args, desc=desc, **kwargs)

    monkeypatch.setattr(training_loop, "train_one_epoch", interrupted)
    return lambda: monkeypatch.setattr(training_loop, "train_one_epoch", real)


def add_cloud_drive_copies(train):
    """What a download through a cloud drive leaves in a split folder besides the course's files."""
    for name in ("1.jpg", "1.png"):
        (train / name.replace("1.", "1(1).")).write_bytes((train / name).read_bytes())  # identical copies
    (train / "1 (1).jpg").write_bytes((train / "2.jpg").read_bytes())  # a "copy" that differs from 1.jpg
    (train / "Copy of 2.jpg").write_bytes((train / "2.jpg").read_bytes())
    (train / ".DS_Store").write_bytes(b"\x00")


def settings(train_module, *argv):
    """The Run a train.py resolves from these flags (settings and folders; nothing is created or locked)."""
    from common.settings import resolve
    return resolve(train_module.parse_args(list(argv)), train_module.QUESTION)


def views_only(predict_batch_size=1000, **evaluation):
    """The parts of a Run that prediction reads: its evaluation settings, fp32 and the prediction batch."""
    from types import SimpleNamespace
    return SimpleNamespace(evaluation=evaluation, precision="fp32", predict_batch_size=predict_batch_size)
