"""Checkpoints: one dict {model, optimizer, scheduler, epoch, best, history, config, rng, ema, scaler},
written atomically."""
import random
from pathlib import Path

import numpy as np
import torch

from common.runtime import UserError, mps_available, save_torch

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "best", "history", "config", "rng")


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
    """`record`: what the run records about itself besides its settings (its id, question, stretches)."""
    save_torch(path, {
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
