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
    # here, not at the top: conftest imports this file (see there)
    from common import training
    from q1_fashion import train as q1_train
    from q2_segmentation import train as q2_train
    real = training.train_one_epoch

    def interrupted(training, batches, loss_fn, number):
        if number == epoch:
            raise KeyboardInterrupt
        return real(training, batches, loss_fn, number)

    for script in (q1_train, q2_train):
        monkeypatch.setattr(script, "train_one_epoch", interrupted)

    def undo():
        for script in (q1_train, q2_train):
            monkeypatch.setattr(script, "train_one_epoch", real)
    return undo


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
    args = train_module.parse_args(list(argv))
    if hasattr(train_module, "with_trunk"):  # Q2: a fresh run's --backbone auto is a trunk before the settings
        args = train_module.with_trunk(args)
    return resolve(args, train_module.QUESTION)


def views_only(predict_batch_size=1000, **evaluation):
    """The parts of a Run that prediction reads: its evaluation settings, fp32 and the prediction batch."""
    from types import SimpleNamespace
    return SimpleNamespace(evaluation=evaluation, precision="fp32", predict_batch_size=predict_batch_size)


def train_epochs(training, epoch_loss, validate=None):
    """The epoch loop of the scripts' main() over a test's own epoch (epoch_loss(epoch) -> mean loss) and
    validation (validate() -> figures), on a network of the test's; returns the history."""
    from common.training import save_epoch
    for epoch in training.epochs():
        loss = epoch_loss(epoch)
        save_epoch(training, epoch, loss, validate() if validate is not None and training.validates(epoch) else {})
    return training.history


def one_epoch(model, batches, optimizer, scheduler, loss_fn, epoch=1, ema=None, precision="fp32", scaler=None):
    """common.training.train_one_epoch over a test's own model, optimizer and schedule (no loss scaling unless
    `scaler`), as the scripts' Training would hold them."""
    from types import SimpleNamespace

    import torch

    from common.device import make_scaler
    from common.training import train_one_epoch
    training = SimpleNamespace(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema,
                               scaler=scaler or make_scaler("fp32", torch.device("cpu")), steps_per_epoch=len(batches),
                               run=SimpleNamespace(precision=precision))
    return train_one_epoch(training, batches, loss_fn, epoch)


def checkpoint_of(question, config, epoch=1, **extra):
    """A checkpoint as this version writes it, holding a run's recorded settings (`config`); what settings
    resolution never reads (the weights, the optimizer) is left empty."""
    from common import __version__
    return {"model": {}, "optimizer": {}, "scheduler": {}, "epoch": epoch, "best": 0.0, "history": [],
            "config": config, "rng": None, "version": __version__, "question": question, "run_id": "r",
            "stretches": [], **extra}
