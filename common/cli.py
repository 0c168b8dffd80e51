"""Command-line pieces both train.py scripts share."""
import argparse
from pathlib import Path

from common.paths import CHECKPOINTS_DIR, DATA_DIR, RESULTS_DIR
from common.precision import CHOICES
from common.runtime import UserError


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


def at_least_two(text):
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (BatchNorm trains on batches of 2 or more), got {text}")
    return value


def add_run_arguments(parser, question):
    """Flags every training script has. Run settings default to None: the model's recipe fills them, or,
    with --resume and --eval-only, the checkpoint's own settings."""
    run = parser.add_argument_group("training (defaults: the chosen model's best recipe)")
    run.add_argument("--epochs", type=positive_int, help="total epochs, also when resuming")
    run.add_argument("--batch-size", type=positive_int)
    run.add_argument("--lr", type=non_negative_float, help="peak learning rate")
    run.add_argument("--weight-decay", type=non_negative_float)
    run.add_argument("--schedule", choices=("onecycle", "constant"),
                     help="learning rate: warm-up then cosine decay, or constant")
    run.add_argument("--seed", type=int, help="random seed (default 0)")
    run.add_argument("--tta", action=argparse.BooleanOptionalAction,
                     help="evaluate and predict on each image and its mirror image, averaging the two softmaxes")
    run.add_argument("--final", action=argparse.BooleanOptionalAction,
                     help="once the recipe is chosen: train on train+val with it and predict from the last epoch "
                          "(val is then no held-out figure)")
    run.add_argument("--limit", type=at_least_two,
                     help="train on the first N training images only (quick checks); val and test stay "
                          "whole, so the prediction files keep the autograder's shape")
    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                          help="auto: cuda when available (default)")
    hardware.add_argument("--precision", choices=CHOICES,
                          help="auto (default): on a GPU bf16 where supported, else fp16; on a CPU bf16 with "
                               "AMX-BF16, else fp32 (see common/precision.py)")
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
    return run


def given(args, keys):
    """The entries of `keys` given on the command line (argparse leaves the others None)."""
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


def flag(key, value):
    """How a setting is written on the command line: --augment, --no-augment, --lr 0.1."""
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return name if value else "--no-" + name[2:]
    return f"{name} {value}"


def run_name(model, switches, defaults, final=False):
    """A run's folder name: the model, then every network switch that differs from its default, then -final.

    So variants of one model (e.g. --width 8, or the ladder's --dilated --stepwise) keep their own checkpoints
    and results instead of overwriting each other's.
    """
    parts = [model]
    for key, value in switches.items():
        if value != defaults.get(key):
            parts.append(flag(key, value)[2:].replace(" ", ""))
    return "-".join(parts + (["final"] if final else []))


def resolve_run_paths(args, question, name):
    """Default output folders: results/ and checkpoints/ of the repository, one folder per run name."""
    args.out_dir = args.out_dir or RESULTS_DIR / question / name
    args.checkpoint_dir = args.checkpoint_dir or CHECKPOINTS_DIR / question / name


def settle_config(args, recipe, fixed, saved=None, free=(), checkpoint=None, mode="--resume"):
    """The run's settings: the recipe, then a saved run's settings, then the flags given.

    `fixed` holds what is always given (e.g. the model name). With `saved` (the config of a checkpoint
    that --resume continues or --eval-only evaluates), every given setting must equal the saved one,
    except those in `free`; the differences are refused in one line, so a run never silently does
    something other than what it records.
    """
    wanted = {**fixed, **given(args, recipe)}
    config = {**recipe, **fixed}
    if saved is not None:
        differ = [key for key, value in wanted.items() if key not in free and key in saved and saved[key] != value]
        if differ:
            was = " ".join(flag(key, saved[key]) for key in differ)
            now = " ".join(flag(key, wanted[key]) for key in differ)
            raise UserError(f"{checkpoint} was trained with {was}, not {now}; {mode} takes the run as it was "
                            "trained: drop those flags, or train afresh with another --checkpoint-dir")
        config.update({key: value for key, value in saved.items() if key in config})
    config.update(wanted)
    return config
