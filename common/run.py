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

A run folder belongs to one run: a fresh run into a checkpoint folder that already holds one is
refused unless --overwrite, and a folder in use by another process is refused (an OS lock, released
when its process ends, however it ends).
"""
import contextlib
import errno
import fcntl
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from common.checkpoint import load_checkpoint
from common.cli import as_words
from common.loop import TrainingStopped
from common.paths import CHECKPOINTS_DIR, RESULTS_DIR
from common.precision import choose_precision
from common.runtime import UserError, pick_device, prepare_dir, seed_everything

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
    options: dict = field(default_factory=lambda: dict(OPTIONS))  # how it trains besides its recipe
    unset: dict = field(default_factory=dict)  # flag values that mean "not given" (Q2: --backbone auto)
    prefix: Callable[[dict], str] = lambda settings: settings["model"]  # the folder name's first part
    candidates: Callable[[dict], list] = lambda settings: [settings]  # where an existing run may be (Q2: per trunk)
    complete: Callable[[dict], dict] = lambda settings: settings  # a fresh run's derived settings (Q2: auto)
    prefix_flags: Callable[[dict], list] = lambda settings: []  # flags the hint needs before --model


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

    @property
    def record(self):
        """The settings as the checkpoint and metrics.json record them: one flat dict, as the run ran."""
        return {**self.recipe, **self.options, **self.evaluation, "precision": self.precision}

    @property
    def final(self):
        return self.options["final"]

    @property
    def trains(self):
        return self.mode != "eval"

    @property
    def hint(self):
        return hint(self.question, {**self.recipe, **self.options})


def hint(question, settings):
    """How to make the checkpoint a run needs: the command that trains it."""
    recipe = question.recipes[settings["model"]]
    parts = [*question.prefix_flags(settings), "--model", settings["model"]]
    parts += [flag(key, settings[key]) for key in question.switches
              if key in settings and settings[key] != recipe.get(key)]
    parts += ["--final"] if settings.get("final") else []
    parts += [f"--holdout {settings['holdout']}"] if settings.get("holdout") else []
    return f"train first: python {question.script} {' '.join(parts)}"


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
        saved = load_checkpoint(Path(checkpoint_dir) / "last.pt", hint(question, wanted))
        settings = settle(question, saved["config"], given, mode, Path(checkpoint_dir) / "last.pt")
    if settings.get("final") and settings.get("holdout"):
        raise UserError("--final trains on every labelled image and --holdout keeps some out to tune on: choose one")
    device = pick_device(args.device)
    precision = choose_precision(args.precision, saved and saved["config"].get("precision"), device)
    name, out_dir, default_checkpoint_dir = default_folders(question, settings)
    evaluation = {key: settings.pop(key) for key in question.evaluation}
    options = {key: settings.pop(key) for key in question.options}
    return Run(question, mode, settings, options, evaluation, precision, device, name,
               Path(args.out_dir or out_dir), Path(checkpoint_dir or default_checkpoint_dir), saved,
               bool(getattr(args, "overwrite", False)))


def find_checkpoint_dir(question, wanted):
    """The default checkpoint folder of the run --resume or --eval-only means. With several candidates
    (Q2's --backbone auto: one per trunk), the one folder that holds a run; none: the first, which the
    missing-checkpoint error then names."""
    folders = [default_folders(question, settings)[2] for settings in question.candidates(wanted)]
    found = [folder for folder in folders if (folder / "last.pt").is_file()]
    if len(found) > 1:
        raise UserError(f"runs of this model are in {' and '.join(str(f) for f in found)}; say which with "
                        "--backbone or --checkpoint-dir")
    return found[0] if found else folders[0]


def settle(question, saved, given, mode, checkpoint):
    """A saved run's settings under the flags given: the recipe fills what the checkpoint lacks, the
    checkpoint's values are the run's, and a flag that contradicts them is refused in one line, except
    the evaluation settings and, with --resume, a larger --epochs."""
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


@contextlib.contextmanager
def locked(folder):
    """Hold `folder` for this process: an exclusive lock on folder/.lock, which the OS releases when the
    process ends, however it ends (so a killed run leaves no stale lock). A folder in use is refused."""
    path = Path(folder) / ".lock"
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # a file system without locks (some network and cloud-drive mounts): run unguarded, and say so
                print(f"warning: {folder} cannot be locked ({error.strerror}); make sure no other run uses it",
                      file=sys.stderr)
                yield
                return
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(f"{folder} is in use by another run (process {holder}); wait for it to finish, "
                            "or give this run another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def owned(run):
    """Open `run`: its folders made writable and locked, a fresh run's folder checked to hold no other run
    (or emptied of it with --overwrite), every random generator seeded. An interruption (Ctrl-C, SIGTERM)
    leaves one line that says what is saved."""
    out_dir = prepare_dir(run.out_dir, "--out-dir")
    checkpoint_dir = prepare_dir(run.checkpoint_dir, "--checkpoint-dir")
    with contextlib.ExitStack() as stack:
        stack.enter_context(locked(checkpoint_dir))
        if out_dir.resolve() != checkpoint_dir.resolve():
            stack.enter_context(locked(out_dir))
        earlier = [checkpoint_dir / name for name in ("last.pt", "best.pt") if (checkpoint_dir / name).is_file()]
        if run.mode == "train" and earlier:
            if not run.overwrite:
                raise UserError(f"{checkpoint_dir} already holds a run ({earlier[0].name}); continue it with "
                                "--resume, evaluate it with --eval-only, or train afresh over it with --overwrite")
            for path in earlier:
                path.unlink()
        seed_everything(run.options["seed"])
        try:
            yield run
        except KeyboardInterrupt as stop:
            raise interruption(stop, run) from None
        except TrainingStopped as error:
            raise UserError(f"{error}. {saved_so_far(run)}") from None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with the one line that says what it left behind."""

    def __init__(self, message, code):
        super().__init__(message)
        self.message, self.code = message, code


def saved_so_far(run):
    """What a stopped run leaves, in a sentence."""
    last = run.checkpoint_dir / "last.pt"
    if not run.trains:
        return f"The checkpoints in {run.checkpoint_dir} are untouched"
    if last.is_file():
        return f"{last} holds the last finished epoch (continue with --resume)"
    return "Nothing was saved: no epoch had finished"


def interruption(stop, run):
    what = "terminated (SIGTERM)" if getattr(stop, "code", 130) == 143 else "interrupted"
    if run.trains and not (run.checkpoint_dir / "last.pt").is_file():
        message = f"{what} before the first epoch ended; nothing was saved"
    else:
        said = saved_so_far(run)
        message = f"{what}; {said[0].lower()}{said[1:]}"
    return Interrupted(message, getattr(stop, "code", 130))
