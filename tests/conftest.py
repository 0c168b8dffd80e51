"""Fixtures: the real course data (data/ prepared, or ../shared beside the repo) and tiny synthetic sets.

PyTorch and the project are imported where they are used, not here: under `-n 2` pytest-xdist's controller
loads this file too, runs no test, and would otherwise spend seconds importing PyTorch before the workers start.
"""
import os

import pytest

from tests.helpers import REPO

SHARED_COURSE_DATA = REPO.parent / "shared" / "data" / "cs543_mp4"


@pytest.fixture(scope="session")
def course_data():
    """The course's data folder: the repo's data/ once prepared, else the shared copy beside the repo.

    The course data is not public: where it is absent (the published repository's workflow on GitHub), the
    tests that need it skip, saying so. Where it must be (.ci/run sets CS543_REQUIRE_DATA=1), they fail.
    """
    for candidate in (REPO / "data", SHARED_COURSE_DATA):
        if (candidate / "classes.txt").is_file():
            return candidate
    message = ("the course data (the cs543_mp4 folder: data/ or ../shared/data/cs543_mp4) is not here: prepare it "
               "with `cs543-prepare-data --source PATH`")
    if os.environ.get("CS543_REQUIRE_DATA"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def isolated_default_folders(request, tmp_path_factory, monkeypatch):
    """No test writes into the repository's results/ or checkpoints/: a run without --out-dir or
    --checkpoint-dir gets folders of its own test (a marker left in results/ by one test would otherwise
    change what the next one is allowed to do). Tests marked `repository_folders` see the real defaults."""
    if "repository_folders" in request.keywords:
        return
    from common import settings as run
    root = tmp_path_factory.mktemp("default-folders")
    monkeypatch.setattr(run, "RESULTS_DIR", root / "results")
    monkeypatch.setattr(run, "CHECKPOINTS_DIR", root / "checkpoints")


@pytest.fixture
def tiny_course_data(tmp_path):
    """A valid course folder with 3 train, 2 val and 2 test items."""
    import numpy as np

    from tests.helpers import write_segmentation_item
    root = tmp_path / "data"
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        (root / split).mkdir(parents=True)
        for index in range(count):
            write_segmentation_item(root / split, str(index), label=split != "test")
    (root / "classes.txt").write_text("background\nsports\naccessory\nanimal\nvehicle\nperson\n")
    (root / "fashion").mkdir()
    np.save(root / "fashion" / "fashion_secret_test_data.npy", np.zeros((2000, 28, 28), np.uint8))
    return root


@pytest.fixture(scope="session")
def tiny_fashion_data(tmp_path_factory):
    """A data folder whose Fashion-MNIST is synthetic (55,500 training images: 55,000 train and 500 val, each
    class a stripe of its own) with a blank secret test set: Q1 runs anywhere without the course data."""
    import gzip

    import numpy as np
    root = tmp_path_factory.mktemp("fashion-data")
    raw = root / "fashion" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    labels = (np.arange(55_500) % 10).astype(np.uint8)
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for label in range(10):
        images[labels == label, 2 * label + 4:2 * label + 7, 4:24] = 200
    for name, array, dims in (("train-images-idx3-ubyte.gz", images, images.shape),
                              ("train-labels-idx1-ubyte.gz", labels, labels.shape)):
        header = bytes([0, 0, 8, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
        with gzip.open(raw / name, "wb", compresslevel=1) as f:
            f.write(header + array.tobytes())
    np.save(root / "fashion" / "fashion_secret_test_data.npy", np.zeros((2000, 28, 28), np.uint8))
    return root


def pytest_configure(config):
    """Every Python a test starts imports this checkout (PYTHONPATH): a script started by path puts only its own
    folder on the path, and would otherwise import the project from wherever `pip install -e` was run (a
    mutation run's copy of the repository, or another clone), testing other code than this.

    One intra-op thread for the tests run in this process. Their tensors are small, where a second thread
    gains little on an idle machine; with another PyTorch process running, two threads on 2 cores
    oversubscribe them: the four ResNet18 learning tests took 53.8 s against 9.7 s with
    one. (Scripts the tests start as subprocesses keep PyTorch's default.) pytest-xdist's controller runs no
    test: it skips the import."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    if getattr(config.option, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        return
    import torch
    torch.set_num_threads(1)


def devices():
    """The devices the GPU tests run their bodies on: the CPU always, CUDA and an Apple GPU where present."""
    import torch
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        found.append("mps")
    return found
