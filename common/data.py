"""Batching of a data set held in memory as one tensor (both questions' data code uses it), and the record of
which data a run's figures were measured on."""
import hashlib
from pathlib import Path


def batch_bounds(total, batch_size):
    """(start, end) of each batch over `total` items; a last batch of one joins the batch before it.

    BatchNorm cannot train on a single item, and a batch of one is what 55,000 images in batches of 97
    leave at the end; merging it loses nothing (the field's other fix, drop_last, skips that image).
    """
    bounds = [(start, min(start + batch_size, total)) for start in range(0, total, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], total)]
    return bounds


def fingerprint(*tensors):
    """A short digest of the tensors' contents (SHA-256, 16 hex digits): the same images and labels give the same
    fingerprint wherever they are stored (a copy, a link, another folder name), and other images another one."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def data_record(folder, counts, val_split, val_images, val_labels):
    """What metrics.json and the checkpoints record of the data a run used: the data folder (resolved), the number
    of images of each split it used, which images validated ("val", or "holdout": the last training images) and
    their fingerprint."""
    return {"folder": str(Path(folder).resolve()), "images": dict(counts), "val_split": val_split,
            "val_fingerprint": fingerprint(val_images, val_labels)}


def other_data(trained_on, now):
    """Whether `now` (a data record) validates on other images than `trained_on`, the record of the data the run
    trained and validated on; False when the run recorded none (a checkpoint older than the record)."""
    return isinstance(trained_on, dict) and trained_on.get("val_fingerprint") != now["val_fingerprint"]


def describe_data(record):
    """'5,000 val images from /path/to/data': a data record in words."""
    count = record["images"].get("val", 0)
    return f"{count:,} {record['val_split']} images from {record['folder']}"
