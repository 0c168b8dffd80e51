"""Fixtures: the real course data (data/ prepared, or ../shared beside the repo) and tiny synthetic sets."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_COURSE_DATA = REPO.parent / "shared" / "data" / "cs543_mp4"


@pytest.fixture(scope="session")
def course_data():
    """The course's data folder: the repo's data/ once prepared, else the shared copy beside the repo."""
    for candidate in (REPO / "data", SHARED_COURSE_DATA):
        if (candidate / "classes.txt").is_file():
            return candidate
    pytest.fail("course data not found: run `python -m common.prepare_data --source PATH` first")


def write_segmentation_item(folder, name, size=224, label_value=1, image=True, label=True):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    if image:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{name}.jpg")
    if label:
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[size // 4: size // 2, size // 4: size // 2] = label_value
        Image.fromarray(mask, mode="L").save(folder / f"{name}.png")


@pytest.fixture
def tiny_course_data(tmp_path):
    """A valid course folder with 3 train, 2 val and 2 test items."""
    root = tmp_path / "data"
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        (root / split).mkdir(parents=True)
        for index in range(count):
            write_segmentation_item(root / split, str(index), label=split != "test")
    (root / "classes.txt").write_text("background\nsports\naccessory\nanimal\nvehicle\nperson\n")
    (root / "fashion").mkdir()
    np.save(root / "fashion" / "fashion_secret_test_data.npy", np.zeros((2000, 28, 28), np.uint8))
    return root


def read_metrics(out_dir):
    metrics = json.loads((Path(out_dir) / "metrics.json").read_text())
    metrics.pop("train_seconds")
    return metrics


def interrupt_at_epoch(monkeypatch, train_module, epoch):
    """Make train_module's next run stop with Ctrl-C as epoch `epoch` starts; returns the undo function."""
    real = train_module.train_one_epoch

    def interrupted(*args, desc, **kwargs):
        if desc == f"epoch {epoch}":
            raise KeyboardInterrupt
        return real(*args, desc=desc, **kwargs)

    monkeypatch.setattr(train_module, "train_one_epoch", interrupted)
    return lambda: monkeypatch.setattr(train_module, "train_one_epoch", real)
