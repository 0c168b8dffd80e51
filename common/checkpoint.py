"""Checkpoints: one dict {model, optimizer, scheduler, epoch, best, history, config, rng, ema}, written atomically."""
import random
from pathlib import Path

import numpy as np
import torch

from common.runtime import UserError, atomic_path

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "best", "history", "config", "rng")


def capture_rng():
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, *, model, optimizer, scheduler, epoch, best, history, config, ema=None):
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "best": best,
        "history": history,
        "config": config,
        "rng": capture_rng(),
        "ema": ema.state_dict() if ema is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def prediction_weights(state):
    """The weights to evaluate and predict with: the moving average when the run kept one."""
    if state.get("ema") is None:
        return state["model"]
    return {key[len("module."):]: value for key, value in state["ema"].items() if key.startswith("module.")}


def load_checkpoint(path, expect, hint):
    """Load a checkpoint, checking that its config matches `expect` (e.g. {"model": "basenet"}).

    `hint` says how to produce the missing checkpoint, for the error line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load raises many types on a damaged file
        raise UserError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"{path} is not one of this project's checkpoints (no {', '.join(missing)})")
    config = state["config"]
    for key, wanted in expect.items():
        if config.get(key) != wanted:
            raise UserError(
                f"{path} was trained with {key}={config.get(key)!r}, not {wanted!r}; "
                f"pass the matching --{key.replace('_', '-')} or another --checkpoint-dir"
            )
    return state
