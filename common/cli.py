"""Command-line pieces both train.py scripts share."""
import argparse
from pathlib import Path

from common.paths import CHECKPOINTS_DIR, DATA_DIR, RESULTS_DIR


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


def at_least_one(text):
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number >= 1, got {text}")
    return value


def reject_switches(parser, args, keys, model):
    """Family switches given for a model that is not that family are a usage error, not silently ignored."""
    if args.model != model:
        used = [f"--{key.replace('_', '-')}" for key in keys if getattr(args, key) is not None]
        if used:
            parser.error(f"{', '.join(used)} only apply to --model {model}")


def add_run_arguments(parser, question):
    """Flags every training script has; recipe flags default to None so the model's recipe fills them."""
    run = parser.add_argument_group("training (defaults: the chosen model's best recipe)")
    run.add_argument("--epochs", type=positive_int, help="total epochs, also when resuming")
    run.add_argument("--batch-size", type=positive_int)
    run.add_argument("--lr", type=non_negative_float, help="peak learning rate")
    run.add_argument("--weight-decay", type=non_negative_float)
    run.add_argument("--schedule", choices=("onecycle", "constant"),
                     help="learning rate: warm-up then cosine decay, or constant")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto: cuda when available (default)")
    files = parser.add_argument_group("files")
    files.add_argument("--data-dir", type=Path, default=DATA_DIR,
                       help="the course's data folder (default: data/ in the repository)")
    files.add_argument("--out-dir", type=Path, help=f"default: results/{question}/<run name>")
    files.add_argument("--checkpoint-dir", type=Path, help=f"default: checkpoints/{question}/<run name>")
    files.add_argument("--resume", action="store_true", help="continue from last.pt in the checkpoint dir")
    files.add_argument("--eval-only", action="store_true",
                       help="load best.pt, evaluate on val and write the predictions; no training")
    files.add_argument("--limit", type=positive_int,
                       help="train on the first N training images only (quick checks); val and test stay "
                            "whole, so the prediction files keep the autograder's shape")
    return run


def resolve_run_paths(args, question, run_name):
    """Default output folders: results/ and checkpoints/ of the repository, one folder per run name."""
    args.out_dir = args.out_dir or RESULTS_DIR / question / run_name
    args.checkpoint_dir = args.checkpoint_dir or CHECKPOINTS_DIR / question / run_name


def apply_recipe(args, recipe, config):
    """Fill `config` from the recipe, letting every flag given on the command line win."""
    for key, default in recipe.items():
        given = getattr(args, key, None)
        config[key] = default if given is None else given
    return config
