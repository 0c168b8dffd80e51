"""Checkpoints: one dict {model, optimizer, scheduler, epoch, best, history, config, rng, ema, scaler, and what
the run records of itself}, written atomically; which one a run continues or evaluates, and which weights predict.

Every checkpoint records the version of this project that wrote it. One from an older major version is refused
in one line naming that version: the settings and the network of a major version are this version's, and what a
checkpoint of another one holds is not carried forward.
"""
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common import __version__
from common.command import UserError
from common.device import mps_available
from common.files import save_torch

CHECKPOINTS = ("last.pt", "best.pt")


class OlderVersion(UserError):
    """A checkpoint of an older major version of this project (see the module's docstring)."""

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "best", "history", "config", "rng", "version",
                   "question", "run_id", "stretches")


def capture_rng():
    """Every random stream a run draws from: Python's, NumPy's, PyTorch's CPU one and each GPU's."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if mps_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng(state):
    """Restore the streams `capture_rng` saved. The GPU streams are restored for the GPUs present: a checkpoint of
    a machine with more GPUs than this one restores the first ones' (a run uses GPU 0); a GPU stream with no GPU
    to restore it to is left out (a CUDA run resumed on a CPU then draws from the CPU's stream alone)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    if state.get("mps") is not None and mps_available():
        torch.mps.set_rng_state(state["mps"])


def save_checkpoint(path, *, model, optimizer, scheduler, epoch, best, history, config, ema=None, scaler=None,
                    **record):
    """`record`: what the run records about itself besides its settings (its id, question, stretches, data)."""
    save_torch(path, {
        "version": __version__,
        **record,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best": best,
        "history": history,
        "config": config,
        "rng": capture_rng(),
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
    })


def prediction_weights(state):
    """The weights to evaluate and predict with: the moving average when the run kept one."""
    return state["model"] if state.get("ema") is None else state["ema"]["module"]


def load_checkpoint(path, hint, way_on=None):
    """Load one of this project's checkpoints; `hint` says how to produce a missing one, for the error line, and
    `way_on` what to do about a damaged one (without it, the caller says)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load raises many types on a damaged file
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        problem = f"{path} is not a readable checkpoint ({type(error).__name__}: {first})"
        raise UserError(f"{problem}; {way_on}" if way_on else problem) from None
    older = older_version(state)
    if older:
        raise OlderVersion(f"{path} was made by version {older} of this project, and version {__version__} reads "
                        f"checkpoints of version {major(__version__)}.x only; train afresh over it with --overwrite, "
                        f"or evaluate it with version {older}")
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        problem = f"{path} is not one of this project's checkpoints (no {', '.join(missing)})"
        raise UserError(f"{problem}; {way_on}" if way_on else problem)
    return state


def load_weights(model, weights, path):
    """model.load_state_dict(weights), with a network that does not fit the checkpoint as one clear line."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise UserError(f"{path} does not fit this network ({first[0] if first else error}); was it trained "
                        "with other switches?") from None


def major(version):
    return int(str(version).split(".")[0])


def older_version(record):
    """The version that made `record` (a checkpoint, or a metrics.json) when it is of an older major version than
    this one, else None. Versions before 4.0.0 recorded none: 3.2.0 recorded the data a run used, earlier ones
    did not."""
    if not isinstance(record, dict) or "config" not in record:  # not a record of this project's at all
        return None
    version = record.get("version")
    if version is None:
        return "3.2.0" if "data" in record else "3.1.0 or earlier"
    try:
        return version if major(version) < major(__version__) else None
    except ValueError:
        return str(version)


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
    except OlderVersion:
        raise
    except UserError as damaged:
        if not best.is_file():
            raise UserError(f"{damaged}; there is no best.pt to fall back on: train afresh over the run with "
                            "--overwrite") from None
        state = load_checkpoint(best, train_hint, way_on="neither checkpoint can be read: train afresh over the "
                                                         "run with --overwrite")
        print(f"warning: {damaged}; {doing} from best.pt (epoch {state['epoch']})", file=sys.stderr)
        return best, state


def whose(saved, path, question):
    """Refuse a checkpoint of the other question in one line."""
    other = saved["question"]
    if other != question.name:
        raise UserError(f"{path} is a checkpoint of {other}, not {question.name}: use python {other}/train.py")


@dataclass
class Result:
    """What a run's predictions come from: the checkpoint whose weights predict (`state`), last.pt's
    (`last`), the whole run's history and stretches of training, and whether it finished."""
    state: dict
    last: dict
    history: list
    stretches: list
    epochs: int
    finished: bool
    validated: bool  # the predicting checkpoint was chosen by a validation (best.pt)


def weights_to_predict_with(run, model):
    """Load the weights to predict with into `model`: the weight average of best.pt, or for a --final run,
    whose val images were training images and so cannot pick an epoch, of last.pt. A run stopped before its
    first validation has no best.pt: it predicts from last.pt, and `announce` says so."""
    last_path, best_path = run.checkpoint_dir / "last.pt", run.checkpoint_dir / "best.pt"
    try:
        last = load_checkpoint(last_path, run.hint) if last_path.is_file() else None
    except OlderVersion:
        raise
    except UserError:  # damaged: the run's record comes from best.pt (readable_checkpoint warned)
        if not best_path.is_file():
            raise
        last = None
    validated = not run.final and best_path.is_file()
    state = load_checkpoint(best_path, run.hint, way_on="delete it to predict from last.pt, or train afresh with "
                                                        "--overwrite") if validated or last is None else last
    last = last or state
    load_weights(model, prediction_weights(state), run.checkpoint_dir)
    epochs = last["history"][-1]["epoch"] if last["history"] else last["epoch"]
    return Result(state, last, last["history"], [dict(stretch) for stretch in last["stretches"]], epochs,
                  epochs >= run.recipe["epochs"], validated)
