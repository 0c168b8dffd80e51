"""A run's settings: the flags both scripts share, and their resolution, once, into a `Run`.

A run's settings come from three places, in this order: the model's recipe, then the checkpoint a run
continues (--resume) or evaluates (--eval-only), then the flags. They are resolved here, once, into a
`Run`; everything else (the folders' names, the precision, what the checkpoint and metrics.json record) is
derived from that object, never from the raw flags.

A `Run` keeps apart what the network and its training are (`recipe`: the network, the optimiser, the
schedule, the epochs...; `options`: the seed, --limit, --final) from how this invocation runs (`mode`,
`device`, `precision`, the folders) and from the evaluation settings (`evaluation`: the test-time
views), the only settings that may differ from a checkpoint's. With --resume or --eval-only the
checkpoint's settings are the run's; a flag that contradicts them is refused in one line, and --epochs
may only grow, and only with --resume.

What a question tells this module is data (`Question`): its recipes, which settings name its folders, which
are evaluation settings. The folders a run owns (the lock, which run a folder holds, --overwrite) are
common.folders'.
"""
import argparse
from dataclasses import dataclass, field
from pathlib import Path

from common.checkpoint import readable_checkpoint, saved_checkpoint, whose
from common.command import UserError
from common.device import CHOICES, choose_precision, pick_device
from common.files import CHECKPOINTS_DIR, DATA_DIR, RESULTS_DIR
from common.folders import new_run_id, read_marker


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
    --resume and --eval-only, the checkpoint's own (`resolve` below resolves them). `tta_help`: what --tta does
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
                               "common/device.py)")
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


# How a run trains besides its recipe, with defaults; kept from the checkpoint on --resume and --eval-only.
# holdout: validate on the last N training images instead of val (for tuning: see bench/sweep.py).
OPTIONS = {"seed": 0, "limit": None, "final": False, "holdout": None}
AUTO = "auto"  # a `Question.choices` flag left to the run: the checkpoint's (a fresh run's script picks one)


def flag(key, value):
    """A setting as written on the command line, one string: --augment, --no-augment, --lr 0.1."""
    return " ".join(as_words(key, value))


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


@dataclass(frozen=True)
class Question:
    """What one question's train.py tells this module about its runs: data only."""
    name: str                  # results/<name>/<run>, checkpoints/<name>/<run>
    script: str                # for the hint that says how to make a missing checkpoint
    recipes: dict              # model -> its recipe: the network, the optimiser, the training, the views
    default_model: str
    evaluation: dict           # the evaluation settings (they may differ from a checkpoint's), each with its value
    #                            without --tta (Q1: no shifted copies, Q2: scale 1 only)
    switches: tuple = ()       # network switches named in the run's folder when they are not the recipe's
    identity: dict = field(default_factory=dict)  # settings beside the recipe that say what the network is
    options: dict = field(default_factory=lambda: dict(OPTIONS))  # how it trains besides its recipe
    # the settings whose values, joined by "_", begin a run's folder name (Q2: the trunk, then the head); a flag of
    # these left at its `choices` "auto" means, for --resume and --eval-only, whichever of the choices holds a run
    named_by: tuple = ("model",)
    choices: dict = field(default_factory=dict)  # Q2: {"backbone": the trunks}
    outputs: tuple = ()        # the files a run writes into its results folder besides the common ones


@dataclass
class Run:
    """One run's settings, resolved once (see the module's docstring)."""
    question: Question
    mode: str                  # "train" (fresh), "resume" or "eval" (--eval-only)
    recipe: dict               # the network and its training: the recipe under the checkpoint under the flags
    options: dict              # seed, limit, final (Q2: val_every)
    evaluation: dict           # the test-time views used now
    precision: str
    device: object
    name: str                  # the run's folder name
    out_dir: Path
    checkpoint_dir: Path
    saved: dict | None = None  # the checkpoint continued or evaluated
    overwrite: bool = False
    run_id: str | None = None  # made when the run starts fresh, kept in its checkpoints
    checkpoint_dir_given: bool = False  # the user named the folders (repeated in the hints)
    out_dir_given: bool = False
    predict_batch_size: int = 32  # images per forward pass when predicting (--predict-batch-size)
    data: dict | None = None   # the record of the data loaded (common.record.data_record), once it is loaded
    trained_on: dict | None = None  # --eval-only on other data: the record of the data the run was validated on
    claimed: bool = False      # the folders are this run's (common.folders.claim): --overwrite has deleted the old

    @property
    def record(self):
        """The settings as the checkpoint and metrics.json record them: one flat dict. The evaluation
        settings are the views used now; the precision is the one the network was trained in (a run
        evaluated in another precision records that as metrics.json's eval_precision)."""
        trained_in = self.saved["config"]["precision"] if self.mode == "eval" else self.precision
        return {**self.recipe, **self.options, **self.evaluation, "precision": trained_in}

    @property
    def final(self):
        return self.options["final"]

    @property
    def trains(self):
        return self.mode != "eval"

    @property
    def hint(self):
        return hint(self.question, {**self.recipe, **self.options},
                    self.checkpoint_dir if self.checkpoint_dir_given else None)


def hint(question, settings, checkpoint_dir=None):
    """How to make the checkpoint a run needs: the command that trains it (in the folder the user named)."""
    recipe = question.recipes[settings["model"]]
    parts = [flag(key, settings[key]) for key in question.named_by
             if key != "model" and settings.get(key) not in (None, AUTO)]
    parts += ["--model", settings["model"]]
    parts += [flag(key, settings[key]) for key in question.switches
              if key in settings and settings[key] != recipe.get(key)]
    parts += ["--final"] if settings.get("final") else []
    parts += [f"--holdout {settings['holdout']}"] if settings.get("holdout") else []
    parts += [f"--checkpoint-dir {checkpoint_dir}"] if checkpoint_dir else []
    return f"train first: python {question.script} {' '.join(parts)}"


def default_folders(question, settings):
    """(run name, results folder, checkpoint folder) of a run with these settings."""
    recipe = question.recipes[settings["model"]]
    switches = {key: settings[key] for key in question.switches if key in settings}
    prefix = "_".join(str(settings[key]) for key in question.named_by)
    name = run_name(prefix, switches, recipe, bool(settings.get("final")))
    name += f"-holdout{settings['holdout']}" if settings.get("holdout") else ""
    return name, RESULTS_DIR / question.name / name, CHECKPOINTS_DIR / question.name / name


def given_flags(args, question, keys):
    """The settings among `keys` given on the command line (argparse leaves the others None)."""
    found = {}
    for key in keys:
        value = getattr(args, key, None)
        if value is not None and not (key in question.choices and value == AUTO):
            found[key] = str(value) if isinstance(value, Path) else value
    return found


def recipe_settings(question, model):
    """A model's recipe, with the question's identity settings and options at their defaults."""
    return {**question.recipes[model], "model": model, **question.identity, **question.options}


def requested(args, question):
    """(the settings the flags give, a fresh run's settings: the named model's recipe under those flags).

    Reads no checkpoint and derives nothing (no trunk for `auto`, no precision): what `resolve` starts from,
    and all a tool needs that only asks what a command line would train (bench/sweep.py: its epochs).
    """
    keys = dict.fromkeys(["model", *question.identity, *(key for recipe in question.recipes.values() for key in recipe),
                          *question.options])  # ordered, so a refusal lists the flags in a stable order
    given = given_flags(args, question, keys)
    return given, {**recipe_settings(question, given.get("model", question.default_model)), **given}


def resolve(args, question):
    """The run `args` asks for: its settings resolved once (see the module's docstring), its folders named.

    Loads the checkpoint for --resume and --eval-only; creates, locks and changes nothing (see common.folders).
    """
    mode = "eval" if args.eval_only else "resume" if args.resume else "train"
    given, wanted = requested(args, question)
    saved = None
    if mode == "train":
        settings = wanted
        checkpoint_dir = args.checkpoint_dir
    else:
        checkpoint_dir = args.checkpoint_dir or find_checkpoint_dir(question, wanted)
        path = saved_checkpoint(checkpoint_dir)
        if path is None:
            raise UserError(f"no checkpoint in {checkpoint_dir}{elsewhere(question, wanted, checkpoint_dir)}; "
                            f"{hint(question, wanted, args.checkpoint_dir)}")
        path, saved = readable_checkpoint(checkpoint_dir, mode, hint(question, wanted, args.checkpoint_dir))
        whose(saved, path, question)
        settings = settle(question, saved["config"], given, mode, path)
    if settings.get("final") and settings.get("holdout"):
        raise UserError("--final trains on every labelled image and --holdout keeps some out to tune on: choose one")
    device = pick_device(args.device)
    precision = choose_precision(args.precision, saved and saved["config"].get("precision"), device)
    name, out_dir, default_checkpoint_dir = default_folders(question, settings)
    evaluation = {key: settings.pop(key) for key in question.evaluation}
    if not evaluation["tta"]:  # the views a run without --tta uses, whatever the other evaluation settings say
        evaluation.update({key: list(value) if isinstance(value, list) else value
                           for key, value in question.evaluation.items() if key != "tta"})
    options = {key: settings.pop(key) for key in question.options}
    checkpoint_dir = Path(checkpoint_dir or default_checkpoint_dir)
    run_id = new_run_id() if saved is None else saved["run_id"]
    if not args.out_dir and saved is not None:  # the run's own results folder, where its marker says it is
        recorded = read_marker(checkpoint_dir).get("results")
        if isinstance(recorded, str) and read_marker(recorded).get("run_id", False) == run_id:
            out_dir = Path(recorded)
    return Run(question, mode, settings, options, evaluation, precision, device, name,
               Path(args.out_dir or out_dir), checkpoint_dir, saved, bool(getattr(args, "overwrite", False)),
               run_id, args.checkpoint_dir is not None, args.out_dir is not None, args.predict_batch_size)


def elsewhere(question, wanted, checkpoint_dir):
    """Where a run of this model does exist when the folder asked for holds none: its --final or --holdout
    variant beside it, as a phrase for the error line ('' when there is none)."""
    folder = Path(checkpoint_dir)
    found = sorted(p for p in folder.parent.glob(f"{folder.name}-*") if saved_checkpoint(p) is not None) \
        if folder.parent.is_dir() else []
    for path in found:
        variant = path.name[len(folder.name) + 1:]
        flags = "--final" if variant == "final" else \
            f"--holdout {variant[7:]}" if variant.startswith("holdout") and variant[7:].isdigit() else None
        if flags:
            return f" (a {flags} run of this model is in {path}: add {flags})"
    return ""


def find_checkpoint_dir(question, wanted):
    """The default checkpoint folder of the run --resume or --eval-only means. With several candidates
    (a `Question.choices` flag left at auto, Q2's --backbone: one per trunk), the one folder that holds a run;
    none: the first, which the missing-checkpoint error then names."""
    candidates = [wanted]
    for key, values in question.choices.items():
        candidates = [dict(settings, **{key: value}) if settings[key] == AUTO else settings
                      for settings in candidates for value in values]
    folders = list(dict.fromkeys(default_folders(question, settings)[2] for settings in candidates))
    found = [folder for folder in folders if saved_checkpoint(folder) is not None]
    if len(found) > 1:
        raise UserError(f"runs of this model are in {' and '.join(str(f) for f in found)}; say which with "
                        "--backbone or --checkpoint-dir")
    return found[0] if found else folders[0]


def settle(question, saved, given, mode, checkpoint):
    """A saved run's settings under the flags given: the checkpoint's values are the run's, and a flag that
    contradicts them is refused in one line, except the evaluation settings and, with --resume, a larger
    --epochs."""
    settings = recipe_settings(question, given.get("model", saved.get("model", question.default_model)))
    settings.update({key: saved[key] for key in settings if key in saved})
    flag_name = "--eval-only" if mode == "eval" else "--resume"
    differ = [key for key, value in given.items()
              if key in saved and saved[key] != value and key not in question.evaluation
              and not (key == "epochs" and mode == "resume")]
    if differ:
        was = " ".join(flag(key, saved[key]) for key in differ)
        now = " ".join(flag(key, given[key]) for key in differ)
        raise UserError(f"{checkpoint} was trained with {was}, not {now}; {flag_name} takes the run as it was "
                        "trained: drop those flags, or train afresh with another --checkpoint-dir")
    if mode == "resume" and given.get("epochs", saved["epochs"]) < saved["epochs"]:
        raise UserError(f"{checkpoint} is a run of --epochs {saved['epochs']}; --resume may add epochs, not "
                        f"take them away (--epochs {given['epochs']}): its schedule was planned for "
                        f"{saved['epochs']}")
    settings.update(given)
    return settings
