"""Command-line pieces both train.py scripts share."""
import argparse
from pathlib import Path

from common.paths import DATA_DIR
from common.precision import CHOICES


class Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line, `prog: error: ...`, exit code 2, instead of the usage (13-22
    lines for these commands) followed by the error; --help still prints the usage and every option."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_float(text):
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def probability(text):
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def seed(text):
    """A random seed: what numpy and PyTorch accept, 0 to 2**32 - 1."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 4294967295, got {text}")
    return value


def at_least_one(text):
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number >= 1, got {text}")
    return value


def option(key):
    """The command-line option of a setting: weight_decay -> --weight-decay."""
    return "--" + key.replace("_", "-")


def as_words(key, value):
    """A setting as the words of a command line: ["--augment"], ["--no-augment"], ["--lr", "0.1"],
    ["--tta-scales", "1,1.5"] (the form each of this project's flags parses back)."""
    name = option(key)
    if isinstance(value, bool):
        return [name if value else "--no-" + name[2:]]
    if isinstance(value, (list, tuple)):
        return [name, ",".join(f"{v:g}" for v in value)]
    return [name, str(value)]


def reject_switches(parser, args, keys, model, default_model):
    """Family switches given for a model that is not that family are a usage error, not silently ignored."""
    if (args.model or default_model) != model:
        used = [option(key) for key in keys if getattr(args, key) is not None]
        if used:
            parser.error(f"{', '.join(used)} only apply to --model {model}")


def at_least_two(text):
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (BatchNorm trains on batches of 2 or more), got {text}")
    return value


def add_run_arguments(parser, question, tta_help, predict_batch_size):
    """Flags every training script has. Settings default to None: the model's recipe fills them, or, with
    --resume and --eval-only, the checkpoint's own (common.run resolves them). `tta_help`: what --tta does
    in this question; `predict_batch_size`: its images per forward pass when predicting."""
    run = parser.add_argument_group("training (defaults: the chosen model's best recipe)")
    run.add_argument("--epochs", type=positive_int, help="total epochs, also when resuming")
    run.add_argument("--batch-size", type=at_least_two, help="training batch size (BatchNorm needs 2 or more)")
    run.add_argument("--lr", type=non_negative_float, help="peak learning rate")
    run.add_argument("--weight-decay", type=non_negative_float)
    run.add_argument("--schedule", choices=("onecycle", "constant"),
                     help="learning rate: warm-up then cosine decay, or constant")
    run.add_argument("--seed", type=seed, help="random seed (default 0)")
    run.add_argument("--tta", action=argparse.BooleanOptionalAction, help=tta_help)
    run.add_argument("--final", action=argparse.BooleanOptionalAction,
                     help="once the recipe is chosen: train on train+val with it and predict from the last epoch "
                          "(val is then no held-out figure); its folders are <run name>-final")
    run.add_argument("--holdout", type=at_least_two, metavar="N",
                     help="tuning: validate on the last N training images, train on the rest; val is never seen "
                          "(bench/sweep.py tunes this way, then confirms on val)")
    run.add_argument("--limit", type=at_least_two,
                     help="train on the first N training images only (quick checks); val and test stay "
                          "whole, so the prediction files keep the autograder's shape")
    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                          help="auto (default): a CUDA GPU this PyTorch can run, else cpu; mps: a Mac's GPU (ask "
                               "for it by name; it has not run on an Apple GPU here)")
    hardware.add_argument("--precision", choices=CHOICES,
                          help="auto (default): on a CUDA GPU bf16 where it is native (compute capability 8.0 on), "
                               "else fp16 with a loss scaler; on a CPU bf16 with AMX-BF16, else fp32 (see "
                               "common/precision.py)")
    hardware.add_argument("--predict-batch-size", type=positive_int, default=predict_batch_size, metavar="N",
                          help=f"images per forward pass when predicting (default {predict_batch_size}); lower it "
                               "if prediction runs out of GPU memory")
    files = parser.add_argument_group("files")
    files.add_argument("--data-dir", type=Path, default=DATA_DIR,
                       help="the course's data folder (default: data/ in the repository)")
    files.add_argument("--out-dir", type=Path, help=f"default: results/{question}/<run name>")
    files.add_argument("--checkpoint-dir", type=Path, help=f"default: checkpoints/{question}/<run name>")
    again = files.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue from last.pt in the checkpoint dir, with the settings it was trained with")
    again.add_argument("--eval-only", action="store_true",
                       help="load the finished run's checkpoint, evaluate on val and write the predictions")
    again.add_argument("--overwrite", action="store_true",
                       help="train afresh in a checkpoint folder that holds a run, deleting its checkpoints")
    return run
