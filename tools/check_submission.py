"""Check a prediction file before uploading it, and optionally score it exactly as the course grader does.

    cs543-check results/q1_fashion/improved/Q1_label_predictions.npy
    cs543-check results/q2_segmentation/resnet18_improved/Q2_sseg_predictions.npy
    cs543-check .../Q1_val_label_predictions.npy --data-dir data --split val
    cs543-check .../Q2_sseg_val_predictions.npy --data-dir data --split val
    cs543-check FILE --labels labels.npy          # Q1, any labelled set

The question is recognised by the array's shape ((N, 10): Q1; (N, 6, H, W): Q2), else by the file name
(Q1_... / Q2_...). The split by the number of rows: a Q1 file of 5,000 rows predicts val, any other Q1
file is checked as the 2,000-row secret test file; Q2's val and test both have 100 images, so a Q2 file
is checked as test unless --split val says otherwise. Never by words in the file name. Exit code 0 only
for a valid file; each problem is printed on one line. AP is computed with the course's own tie order.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from common.command import UserError, run_cli
from common.metrics import accuracy, format_classification, format_segmentation, per_class_accuracy, segmentation_scores
from common.settings import Parser
from q1_fashion.data import CLASSES as Q1_CLASSES
from q1_fashion.data import load_fashion_mnist, split_indices
from q2_segmentation.data import CLASSES as Q2_CLASSES
from q2_segmentation.data import load_split

EXPECTED_ITEMS = {("q1", "test"): 2000, ("q1", "val"): 5000, ("q2", "test"): 100, ("q2", "val"): 100}


NPY_MAGIC = b"\x93NUMPY"  # the first six bytes of every .npy file (NumPy's format, version 1 to 3)


def not_a_npy_file(path):
    """Why `path` is not a .npy file at all, in a phrase (what it starts with); None when it starts as one.

    A web page or an error message saved under the file's name (a failed download from Drive or Colab) is said
    to be one, rather than reaching np.load, whose error speaks of pickled data."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(NPY_MAGIC):
        return None
    if not head:
        return "not a .npy file: it is empty"
    start = head[:16].decode("utf-8", "replace")
    web_page = head.lstrip().lower().startswith((b"<!doctype", b"<html"))
    page = " (a web page: download the file again)" if web_page else ""
    return f"not a .npy file: it starts with {start!r}...{page}"


def identify(path, array):
    if array.ndim == 2 and array.shape[1] == 10:
        return "q1"
    if array.ndim == 4 and array.shape[1] == 6:
        return "q2"
    name = Path(path).name.lower()
    if name.startswith(("q1", "q2")):
        return name[:2]
    raise UserError(f"{path}: cannot tell Q1 from Q2: name it Q1_... or Q2_..., or give it shape "
                    f"(N, 10) or (N, 6, 224, 224); got shape {array.shape}")


def which_split(question, array, requested):
    """--split when given; else a Q1 file of 5,000 rows predicts val, and anything else is a test file."""
    if requested:
        return requested
    rows = array.shape[0] if array.ndim else 0
    return "val" if question == "q1" and rows == EXPECTED_ITEMS["q1", "val"] else "test"


def q1_problems(array, items):
    if array.shape != (items, 10):
        return [f"shape is {array.shape}, expected ({items}, 10): one row of 10 class probabilities per image"]
    if array.dtype != np.float32:  # what the assignment asks for; an autograder that compares dtypes refuses others
        return [f"dtype is {array.dtype}, expected float32 softmax probabilities (save them with "
                ".astype(np.float32))"]
    if not np.all(np.isfinite(array)):
        bad = int(np.argwhere(~np.isfinite(array))[0][0])
        return [f"row {bad} holds NaN or inf; every value must be a finite probability"]
    problems = []
    if array.min() < 0:
        problems.append(f"row {int(np.argwhere(array < 0)[0][0])} has a negative value; expected probabilities >= 0")
    sums = array.astype(np.float64).sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > 1e-3)
    if off.size:
        problems.append(f"{off.size} rows do not sum to 1 within 1e-3 (row {off[0]} sums to {sums[off[0]]:.4f}); "
                        "expected softmax probabilities, not logits")
    return problems


def q2_problems(array, items):
    if array.shape != (items, 6, 224, 224):
        return [f"shape is {array.shape}, expected ({items}, 6, 224, 224): 6 class scores per pixel per image"]
    if array.dtype != np.uint8:
        return [f"dtype is {array.dtype}, expected uint8 = floor(probability x 255)"]
    sums = array.sum(axis=1, dtype=np.int32)
    low, high = int(sums.min()), int(sums.max())
    if low < 249 or high > 255:
        where = np.argwhere((sums < 249) | (sums > 255))[0]
        return [f"the 6 scores of pixel (image {where[0]}, row {where[1]}, column {where[2]}) sum to "
                f"{sums[tuple(where)]}; floored softmax x 255 sums to between 249 and 255"]
    return []


NO_TEST_LABELS = ("the {what} has no labels here (the autograder keeps them): check the file's format without "
                  "--data-dir, or score a val file")


def load_q1_labels(args, split, items):
    if args.labels:
        try:
            labels = np.load(args.labels, allow_pickle=False)
        except Exception as error:
            raise UserError(f"--labels {args.labels}: not a readable .npy file ({error})") from None
    elif split == "test":
        raise UserError(NO_TEST_LABELS.format(what="secret test set"))
    else:
        images, all_labels = load_fashion_mnist(args.data_dir, download=False)
        labels = all_labels[split_indices(len(images))[1]].numpy()
    labels = np.asarray(labels).ravel()
    if labels.size != items:
        raise UserError(f"{args.labels or 'the val split'} has {labels.size} labels for {items} predictions")
    return labels.astype(np.int64)


def main(argv=None):
    parser = Parser(prog="cs543-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="the .npy prediction file")
    parser.add_argument("--labels", type=Path, help="Q1: a .npy of true labels, one per row, to score against")
    parser.add_argument("--data-dir", type=Path, help="score against this course data folder's --split")
    parser.add_argument("--split", choices=("test", "val"),
                        help="which split the file predicts (default: Q1 by its rows, 5,000 = val; Q2: test)")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        raise UserError(f"{args.file}: file not found")
    not_npy = not_a_npy_file(args.file)
    if not_npy:
        raise UserError(f"{args.file}: {not_npy}")
    try:
        array = np.load(args.file, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise UserError(f"{args.file}: not a readable .npy file ({type(error).__name__}: {error})") from None
        raise UserError(f"{args.file}: the .npy file holds Python objects (dtype object), not numbers; save the "
                        "predictions as a NumPy array of numbers (Q1 float32, Q2 uint8)") from None
    except Exception as error:
        raise UserError(f"{args.file}: not a readable .npy file ({type(error).__name__}: {error})") from None
    question = identify(args.file, array)
    split = which_split(question, array, args.split)
    scoring = args.labels is not None or args.data_dir is not None
    if scoring and question == "q2" and args.labels is not None:
        raise UserError("--labels is for Q1; score a Q2 file with --data-dir DATA --split val")
    if scoring and question == "q2" and split == "test":
        raise UserError(NO_TEST_LABELS.format(what="Q2 test split") + " (pass --split val for a val file)")
    items = EXPECTED_ITEMS[question, split]
    if array.ndim == 0 or (question == "q1" and array.ndim != 2):  # the shape first: scoring needs rows
        print(f"INVALID {args.file}: {(q1_problems if question == 'q1' else q2_problems)(array, items)[0]}")
        return 1
    if scoring and question == "q1":
        labels = load_q1_labels(args, split, len(array))
        items = len(labels)
    problems = (q1_problems if question == "q1" else q2_problems)(array, items)
    for problem in problems:
        print(f"INVALID {args.file}: {problem}")
    if problems:
        return 1
    kind = f"{question.upper()} {split} prediction file, shape {array.shape}, {array.dtype}"
    print(f"OK {args.file}: a valid {kind}")
    if scoring and question == "q1":
        predicted = array.argmax(axis=1)
        print(format_classification(accuracy(predicted, labels), per_class_accuracy(predicted, labels, 10),
                                    Q1_CLASSES, split))
    elif scoring:
        labels = load_split(args.data_dir, split).labels
        ap, iou = segmentation_scores(array, labels.numpy(), len(Q2_CLASSES), exact=True)
        print(format_segmentation(ap, iou, Q2_CLASSES))
    return 0


def cli():
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
