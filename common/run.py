"""A run's settings, resolved once, and the folders it owns: the one owner of what a run is.

A run's settings come from three places, in this order: the model's recipe, then the checkpoint a run
continues (--resume) or evaluates (--eval-only), then the flags. They are resolved here, once, into a
`Run`; everything else (the folders' names, the trunk `auto` stands for, the precision, what the
checkpoint and metrics.json record) is derived from that object, never from the raw flags.

A `Run` keeps apart what the network and its training are (`recipe`: the network, the optimiser, the
schedule, the epochs...; `options`: the seed, --limit, --final) from how this invocation runs (`mode`,
`device`, `precision`, the folders) and from the evaluation settings (`evaluation`: the test-time
views), the only settings that may differ from a checkpoint's. With --resume or --eval-only the
checkpoint's settings are the run's; a flag that contradicts them is refused in one line, and --epochs
may only grow, and only with --resume.

The folders a run owns (the lock, which run a folder holds, --overwrite) are common.folders'.
"""
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.checkpoint import load_checkpoint
from common.cli import as_words
from common.folders import CHECKPOINTS, new_run_id, read_marker
from common.paths import CHECKPOINTS_DIR, RESULTS_DIR
from common.precision import choose_precision
from common.runtime import UserError, pick_device

# How a run trains besides its recipe, with defaults; kept from the checkpoint on --resume and --eval-only.
# holdout: validate on the last N training images instead of val (for tuning: see bench/sweep.py).
OPTIONS = {"seed": 0, "limit": None, "final": False, "holdout": None}


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
    """What one question's train.py tells this module about its runs."""
    name: str                  # results/<name>/<run>, checkpoints/<name>/<run>
    script: str                # for the hint that says how to make a missing checkpoint
    recipes: dict              # model -> its recipe: the network, the optimiser, the training, the views
    default_model: str
    evaluation: tuple          # recipe entries that are evaluation settings: they may differ from a checkpoint's
    switches: tuple = ()       # network switches named in the run's folder when they are not the recipe's
    identity: dict = field(default_factory=dict)  # settings beside the recipe that say what the network is
    # settings added to the recipes after runs were saved, each with the value that a run saved without it
    # trained with: such a run resumes and is described as it was, whatever the recipe's value is now
    introduced: dict = field(default_factory=dict)
    options: dict = field(default_factory=lambda: dict(OPTIONS))  # how it trains besides its recipe
    unset: dict = field(default_factory=dict)  # flag values that mean "not given" (Q2: --backbone auto)
    prefix: Callable[[dict], str] = lambda settings: settings["model"]  # the folder name's first part
    candidates: Callable[[dict], list] = lambda settings: [settings]  # where an existing run may be (Q2: per trunk)
    complete: Callable[[dict], dict] = lambda settings: settings  # a fresh run's derived settings (Q2: auto)
    prefix_flags: Callable[[dict], list] = lambda settings: []  # flags the hint needs before --model
    outputs: tuple = ()        # the files a run writes into its results folder besides the common ones
    views: Callable[[dict], dict] = lambda evaluation: evaluation  # the evaluation settings as the views used
    describe_views: Callable[[dict], str] = lambda evaluation: ""  # those views, in words


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
    run_id: str | None = None  # made when the run starts fresh, kept in its checkpoints (None: an older one's)
    checkpoint_dir_given: bool = False  # the user named the folders (repeated in the hints)
    out_dir_given: bool = False
    predict_batch_size: int = 32  # images per forward pass when predicting (--predict-batch-size)
    data: dict | None = None   # the record of the data loaded (common.data.data_record), once it is loaded
    trained_on: dict | None = None  # --eval-only on other data: the record of the data the run was validated on
    claimed: bool = False      # the folders are this run's (common.folders.claim): --overwrite has deleted the old

    @property
    def record(self):
        """The settings as the checkpoint and metrics.json record them: one flat dict. The evaluation
        settings are the views used now; the precision is the one the network was trained in (a run
        evaluated in another precision records that as metrics.json's eval_precision)."""
        trained_in = self.saved["config"].get("precision", self.precision) if self.mode == "eval" else self.precision
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
    parts = [*question.prefix_flags(settings), "--model", settings["model"]]
    parts += [flag(key, settings[key]) for key in question.switches
              if key in settings and settings[key] != recipe.get(key)]
    parts += ["--final"] if settings.get("final") else []
    parts += [f"--holdout {settings['holdout']}"] if settings.get("holdout") else []
    parts += [f"--checkpoint-dir {checkpoint_dir}"] if checkpoint_dir else []
    return f"train first: python {question.script} {' '.join(parts)}"


def saved_checkpoint(folder):
    """The checkpoint --resume and --eval-only start from: last.pt, else best.pt (a run whose last write
    failed, e.g. on a full disk, still has its best epoch); None when the folder holds neither."""
    for name in CHECKPOINTS:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def readable_checkpoint(folder, mode, train_hint):
    """(path, state) of the checkpoint --resume or --eval-only starts from: last.pt, else best.pt. A last.pt that is
    missing, or damaged while best.pt is readable, gives way to best.pt with one line saying so; a checkpoint that
    cannot be read with nothing to fall back on is one line naming the way on."""
    doing = "continuing" if mode == "resume" else "evaluating"
    last, best = Path(folder) / "last.pt", Path(folder) / "best.pt"
    if not last.is_file():
        print(f"NOTE: {last} is missing; {doing} from best.pt")
        return best, load_checkpoint(best, train_hint, way_on="the run cannot be read: train afresh over it with "
                                                               "--overwrite")
    try:
        return last, load_checkpoint(last, train_hint)
    except UserError as damaged:
        if not best.is_file():
            raise UserError(f"{damaged}; there is no best.pt to fall back on: train afresh over the run with "
                            "--overwrite") from None
        state = load_checkpoint(best, train_hint, way_on="neither checkpoint can be read: train afresh over the "
                                                         "run with --overwrite")
        print(f"warning: {damaged}; {doing} from best.pt (epoch {state['epoch']})", file=sys.stderr)
        return best, state


def whose(saved, path, question):
    """Refuse a checkpoint of the other question in one line (older checkpoints say so by their settings)."""
    config = saved["config"] if isinstance(saved.get("config"), dict) else {}
    other = saved.get("question") or ("q2_segmentation" if "backbone" in config else "q1_fashion")
    if other != question.name:
        raise UserError(f"{path} is a checkpoint of {other}, not {question.name}: use python {other}/train.py")


def default_folders(question, settings):
    """(run name, results folder, checkpoint folder) of a run with these settings."""
    recipe = question.recipes[settings["model"]]
    switches = {key: settings[key] for key in question.switches if key in settings}
    name = run_name(question.prefix(settings), switches, recipe, bool(settings.get("final")))
    name += f"-holdout{settings['holdout']}" if settings.get("holdout") else ""
    return name, RESULTS_DIR / question.name / name, CHECKPOINTS_DIR / question.name / name


def given_flags(args, question, keys):
    """The settings among `keys` given on the command line (argparse leaves the others None)."""
    found = {}
    for key in keys:
        value = getattr(args, key, None)
        if value is not None and value != question.unset.get(key):
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

    Loads the checkpoint for --resume and --eval-only; creates, locks and changes nothing (see `owned`).
    """
    mode = "eval" if args.eval_only else "resume" if args.resume else "train"
    given, wanted = requested(args, question)
    saved = None
    if mode == "train":
        settings = question.complete(wanted)
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
    evaluation = question.views({key: settings.pop(key) for key in question.evaluation})
    options = {key: settings.pop(key) for key in question.options}
    checkpoint_dir = Path(checkpoint_dir or default_checkpoint_dir)
    run_id = new_run_id() if saved is None else saved.get("run_id")
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
    (Q2's --backbone auto: one per trunk), the one folder that holds a run; none: the first, which the
    missing-checkpoint error then names."""
    folders = [default_folders(question, settings)[2] for settings in question.candidates(wanted)]
    found = [folder for folder in folders if saved_checkpoint(folder) is not None]
    if len(found) > 1:
        raise UserError(f"runs of this model are in {' and '.join(str(f) for f in found)}; say which with "
                        "--backbone or --checkpoint-dir")
    return found[0] if found else folders[0]


def settle(question, saved, given, mode, checkpoint):
    """A saved run's settings under the flags given: the recipe fills what the checkpoint lacks (but a setting
    added since, in `question.introduced`, takes the value the run trained with), the
    checkpoint's values are the run's, and a flag that contradicts them is refused in one line, except
    the evaluation settings and, with --resume, a larger --epochs."""
    saved = {**question.introduced, **saved}
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
