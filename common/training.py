"""The epoch loop both questions share: train, validate, checkpoint best and last, resume."""
import math
import time

import torch
from tqdm import tqdm

from common.checkpoint import restore_rng, save_checkpoint
from common.runtime import UserError


def make_ema(model, decay):
    """An exponential moving average of the weights and BatchNorm statistics, updated every step.

    Validating and predicting with the average rather than the raw weights smooths out the noise of
    a high learning rate, so good accuracy comes epochs earlier.
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def train_one_epoch(model, batches, optimizer, scheduler, loss_fn, *, num_batches, desc, ema=None):
    """One pass over `batches` (an iterable of (input, target)); returns the mean loss.

    A NaN or inf loss stops training before the optimizer step can spread it into the weights.
    """
    model.train()
    total, count = 0.0, 0
    # disable=None: a bar on a terminal, silence in logs and CI
    progress = tqdm(batches, total=num_batches, desc=desc, leave=False, dynamic_ncols=True, disable=None)
    for inputs, targets in progress:
        loss = loss_fn(model(inputs), targets)
        value = loss.item()
        if not math.isfinite(value):
            raise UserError(
                f"training loss became {value} at {desc}, batch {count + 1}; lower --lr. "
                "The last good checkpoint was kept"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        total += value
        count += 1
        if count % 20 == 0:
            progress.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    return total / max(count, 1)


def fit(model, optimizer, scheduler, *, config, checkpoint_dir, run_epoch, evaluate, score_key,
        resume_state=None, eval_every=1, ema=None):
    """Train for config["epochs"] epochs in total, validating every `eval_every` epochs and at the end.

    run_epoch(epoch) -> mean training loss; evaluate() -> dict of validation metrics.
    With `ema` (see make_ema), its state is checkpointed too.
    Each epoch ends with `last.pt` (and `best.pt` when `score_key` improved) written atomically,
    with the RNG states, so a resumed run continues exactly as an uninterrupted one would.
    Each history record holds the epoch's wall time under "seconds"; their sum is the training time.
    Returns (history, best score).
    """
    history, best, start = [], -math.inf, 1
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if ema is not None:
            if resume_state.get("ema") is None:
                raise UserError("the checkpoint kept no weight average; resume with --ema-decay 0")
            ema.load_state_dict(resume_state["ema"])
        history, best = resume_state["history"], resume_state["best"]
        start = resume_state["epoch"] + 1
        restore_rng(resume_state["rng"])
        print(f"resumed after epoch {resume_state['epoch']} (best {score_key} so far {best:.4f})")
    epochs = config["epochs"]
    if start > epochs:
        print(f"nothing to train: the checkpoint already has {start - 1} of {epochs} epochs")
    for epoch in range(start, epochs + 1):
        began = time.perf_counter()
        record = {"epoch": epoch, "train_loss": run_epoch(epoch)}
        if epoch % eval_every == 0 or epoch == epochs:
            record.update(evaluate())
        record["seconds"] = time.perf_counter() - began
        history.append(record)
        print("epoch {:3d}/{}  ".format(epoch, epochs) + "  ".join(
            f"{key} {value:.4f}" for key, value in record.items() if key != "epoch"))
        state = dict(model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                     history=history, config=config, ema=ema)
        if score_key in record and record[score_key] > best:
            best = record[score_key]
            save_checkpoint(checkpoint_dir / "best.pt", best=best, **state)
        save_checkpoint(checkpoint_dir / "last.pt", best=best, **state)
    return history, best


def lr_schedule(name, total_steps, warmup_fraction=0.15):
    """A learning-rate multiplier per optimizer step, for torch.optim.lr_scheduler.LambdaLR.

    "onecycle": linear warm-up from 0.1 to 1 over the first `warmup_fraction`, then cosine to 0.
    "constant": 1 throughout (the course starter's plain SGD).
    A plain function, not an object, so LambdaLR keeps it out of the checkpoint: a run resumed with
    a larger --epochs follows the schedule of its new total.
    """
    if name == "constant":
        return lambda step: 1.0
    if name != "onecycle":
        raise ValueError(f"unknown schedule {name!r}")
    warmup = max(1, int(total_steps * warmup_fraction))

    def multiplier(step):
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


@torch.inference_mode()
def predict_softmax(model, images, prepare, batch_size):
    """Softmax outputs (float32, on the CPU) of `model` over `images`, prepared chunk by chunk."""
    model.eval()
    outputs = [model(prepare(images[start:start + batch_size])).float().softmax(dim=1).cpu()
               for start in range(0, len(images), batch_size)]
    return torch.cat(outputs).numpy()


def load_finished_run(checkpoint_dir, expect, hint):
    """best.pt's state for predicting, and the whole run's history from last.pt (best.pt's ends at its epoch)."""
    from common.checkpoint import load_checkpoint
    best = load_checkpoint(checkpoint_dir / "best.pt", expect, hint)
    last_path = checkpoint_dir / "last.pt"
    history = load_checkpoint(last_path, expect, hint)["history"] if last_path.is_file() else best["history"]
    return best, history


def run_fields(best, history):
    """The metrics.json fields every run reports about its training."""
    return {
        "epochs": history[-1]["epoch"],
        "best_epoch": best["epoch"],
        "train_seconds": round(sum(record["seconds"] for record in history), 1),
    }


def history_without_timing(history):
    """Per-epoch metrics as saved in metrics.json: timings vary between runs, the rest must not."""
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]
