"""Fashion-MNIST as uint8 tensors in memory, the course's 55k/5k split, batched augmentation."""
import gzip
import os
from pathlib import Path

import numpy as np
import torch

from common.command import UserError
from common.predict import View
from common.training import batch_bounds

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
NUM_TRAIN = 55_000  # the first 55,000 official training images train; the last 5,000 validate
MEAN, STD = 0.2860, 0.3530  # of the 60k training pixels scaled to [0, 1]
FILES = {"images": "train-images-idx3-ubyte", "labels": "train-labels-idx1-ubyte"}
# Where Debian's dataset-fashion-mnist puts the official files; an environment variable so tests can
# stand in an empty or damaged folder.
SYSTEM_DIR = Path(os.environ.get("CS543_FASHION_SYSTEM_DIR", "/usr/share/datasets/fashion-mnist"))
SECRET_TEST = Path("fashion") / "fashion_secret_test_data.npy"


def read_idx(path, expected_dims):
    """Read an IDX file (gzip or raw), checking the header against the data it holds."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{path}: cannot read ({error}); the file is corrupt or truncated, "
                        "delete it and fetch it again") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != expected_dims:
        raise UserError(f"{path}: not an IDX file of unsigned bytes with {expected_dims} dimensions")
    header = 4 + 4 * expected_dims
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(expected_dims))
    if len(raw) != header + int(np.prod(shape)):
        raise UserError(f"{path}: header says {shape} but the file holds {len(raw) - header} bytes "
                        "of data; it is truncated or corrupt, delete it and fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_in(folder):
    """{'images': path, 'labels': path} if `folder` holds both training files, raw or gzipped."""
    found = {}
    for key, name in FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found if len(found) == len(FILES) else None


def locate_fashion_mnist(data_dir, download=True):
    """The training files: data/fashion (torchvision's root), then Debian's folder, then a download."""
    torchvision_raw = Path(data_dir) / "fashion" / "FashionMNIST" / "raw"
    for folder in (torchvision_raw, SYSTEM_DIR):
        found = _find_in(folder)
        if found:
            return found
    if download:
        try:
            from torchvision.datasets import FashionMNIST
            FashionMNIST(root=str(Path(data_dir) / "fashion"), train=True, download=True)
        except Exception as error:  # network errors come in many types
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(
                f"Fashion-MNIST not found in {torchvision_raw} or {SYSTEM_DIR}, and the download failed "
                f"({reason}). Get it one of three ways: run once with network access (torchvision "
                f"downloads it), `apt-get install dataset-fashion-mnist`, or copy the official "
                f"train-*-ubyte.gz files into {torchvision_raw}") from None
        found = _find_in(torchvision_raw)
        if found:
            return found
    raise UserError(f"Fashion-MNIST not found in {torchvision_raw} or {SYSTEM_DIR}")


def load_fashion_mnist(data_dir, download=True):
    """The 60,000 official training images (uint8 tensor N x 28 x 28) and labels (int64)."""
    paths = locate_fashion_mnist(data_dir, download)
    images = read_idx(paths["images"], 3)
    labels = read_idx(paths["labels"], 1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise UserError(f"{paths['images']}: expected N x 28 x 28 images matching {len(labels)} labels, "
                        f"got {images.shape}")
    if labels.max() >= len(CLASSES):
        raise UserError(f"{paths['labels']}: label {labels.max()} is outside 0..9")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def split_indices(total, num_train=NUM_TRAIN):
    """The course split: the first `num_train` items train, the rest validate."""
    if total <= num_train:
        raise ValueError(f"need more than {num_train} items to split, got {total}")
    return torch.arange(0, num_train), torch.arange(num_train, total)


def load_secret_test(data_dir):
    path = Path(data_dir) / SECRET_TEST
    if not path.is_file():
        raise UserError(f"{path} not found; fill data/ with `cs543-prepare-data --source "
                        "PATH_TO_COURSE_DATA` (the course's data folder or data.zip)")
    try:
        images = np.load(path, allow_pickle=False)
    except Exception as error:
        raise UserError(f"{path}: not a readable .npy file ({error})") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise UserError(f"{path}: expected uint8 images N x 28 x 28, got {images.dtype} {images.shape}")
    return torch.from_numpy(images)


def normalize(images):
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28), standardised."""
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def augment(images, max_shift=2):
    """Random translation by up to `max_shift` pixels (zero fill) and a horizontal flip for half the
    batch, as batched indexing of uint8 images (B, H, W): no per-item Python work.

    (Random erasing was tried as well and did not pay: docs/performance.md.)
    """
    batch, height, width = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (batch, 1, 1), device=device)
    dx = torch.randint(0, 2 * max_shift + 1, (batch, 1, 1), device=device)
    rows = torch.arange(height, device=device).view(1, height, 1)
    columns = torch.arange(width, device=device).view(1, 1, width)
    flip = torch.rand(batch, 1, 1, device=device) < 0.5
    source_columns = dx + torch.where(flip, width - 1 - columns, columns)
    return padded[torch.arange(batch, device=device).view(batch, 1, 1), dy + rows, source_columns]


def translate(images, dy, dx, flip=False):
    """uint8 images (B, H, W) mirrored (`flip`, first) and moved by (dy, dx) pixels, zero fill: one
    test-time view, the same transformation training's augment() draws at random."""
    height, width = images.shape[-2:]
    images = images.flip(-1) if flip else images
    padded = torch.nn.functional.pad(images, (abs(dx), abs(dx), abs(dy), abs(dy)))
    return padded[:, abs(dy) - dy:abs(dy) - dy + height, abs(dx) - dx:abs(dx) - dx + width]


def test_views(tta, shift):
    """(flip, dy, dx) of the test-time views: the image; with `tta` its mirror image too; with `shift` > 0
    both moved by `shift` pixels up, down, left and right as well (10 views)."""
    offsets = [(0, 0)] + ([(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if tta and shift else [])
    return [(flip, dy, dx) for dy, dx in offsets for flip in ((False, True) if tta else (False,))]


def prepare(images):
    """uint8 images (B, 28, 28) on the model's device -> the network's normalised channels-last input."""
    return normalize(images).contiguous(memory_format=torch.channels_last)


def views(tta, shift):
    """Q1's test-time views for common.predict: each of test_views() translated on the uint8 images (zero
    fill, as training's augment() does), then normalised. Class scores need no inverse."""
    return [View(f"{'mirror ' * flip}shift ({dy}, {dx})",
                 lambda chunk, flip=flip, dy=dy, dx=dx: prepare(translate(chunk, dy, dx, flip)))
            for flip, dy, dx in test_views(tta, shift)]


def describe_views(evaluation):
    """The test-time views of these settings, in words: what a run prints and records, and the report shows."""
    tta, shift = evaluation["tta"], evaluation.get("tta_shift", 0) if evaluation["tta"] else 0
    count = len(test_views(tta, shift))
    if not tta:
        return "1 test-time view (the image)"
    if not shift:
        return "2 test-time views (the image and its mirror)"
    return (f"{count} test-time views (the image and its mirror, each also moved {shift} pixel{'s' * (shift > 1)} "
            "up, down, left and right)")


def batches(images, labels, batch_size, shuffle=True, augmented=False):
    """Yield normalised (input, label) batches of in-memory tensors, in a fresh random order.

    A last batch of one joins the batch before it (BatchNorm cannot train on one image).
    """
    order = torch.randperm(len(images), device=images.device) if shuffle else torch.arange(len(images))
    for start, end in batch_bounds(len(images), batch_size):
        index = order[start:end]
        chunk = images[index]
        if augmented:
            chunk = augment(chunk)
        yield prepare(chunk), labels[index]
