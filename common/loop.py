"""The epoch loop both questions share: the optimizer's companions (schedule, weight average, loss scaler),
one training epoch, and fit(), which trains, validates and checkpoints best and last, resuming exactly."""
import json
import math
import time
import warnings
from dataclasses import dataclass

import torch
from tqdm import tqdm

from common.average import WeightAverage
from common.checkpoint import load_checkpoint, load_weights, prediction_weights, restore_rng, save_checkpoint
from common.precision import autocast, make_scaler
from common.runtime import UserError, memory_remedy, write_text

HISTORY = "history.jsonl"  # in the results folder: one JSON object per finished epoch, for tools to read


class TrainingStopped(UserError):
    """Training cannot go on (a NaN or inf loss); the run's folder says what was saved (common.run.owned)."""


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


# How many steps pass between two reads of the training loss (the NaN guard and the epoch's mean). On a CPU a read
# costs nothing, so every step is checked before the optimizer step could spread a NaN into the weights. On a GPU
# each read waits for the GPU to finish, and the next step's kernels queue only after it; there the losses of
# GPU_LOSS_READS steps are read at once. A NaN among them stops the run all the same, and weights that took it
# in are never saved: checkpoints are written after a finished epoch only.
GPU_LOSS_READS = 32
# Writing last.pt: after every epoch on a CPU, where an epoch is long next to the write (Q2: an epoch of 25-30 s
# against well under a second for the file). On a GPU an epoch can take a few seconds and last.pt (model,
# optimizer state, weight average: 190 MB for ResNet18 with AdamW) about as long: there it is written at most
# once every GPU_LAST_EVERY seconds, and after the last epoch. An interrupted GPU run resumes from it exactly,
# having lost at most that much training.
GPU_LAST_EVERY = 60.0
# The scheduler's warning when its first step comes before any optimizer step. With fp16 that is the loss
# scaler's design, not a mistake: the scaler skips the step of a batch whose gradients overflowed (halving its
# scale) and the schedule still counts the batch, so its length stays steps x epochs.
SKIPPED_STEP_WARNING = r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"


def train_one_epoch(model, batches, optimizer, scheduler, loss_fn, *, num_batches, desc, ema, precision, scaler):
    """One pass over `batches` (an iterable of (input, target) on the model's device); returns the mean loss.

    The forward pass runs under `precision`'s autocast; the loss is computed in float32. `scaler` is the
    fp16 loss scaler (see common.precision.make_scaler). A NaN or inf loss stops training (on a CPU before
    the optimizer step can spread it into the weights; on a GPU within GPU_LOSS_READS steps). A GPU out of
    memory is one line naming --batch-size.
    """
    model.train()
    device = next(model.parameters()).device
    reads_every = loss_reads_every(device)
    total, count, pending = 0.0, 0, []
    # disable=None: a bar on a terminal, silence in logs and CI
    progress = tqdm(batches, total=num_batches, desc=desc, leave=False, dynamic_ncols=True, disable=None)
    with memory_remedy("a smaller --batch-size"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SKIPPED_STEP_WARNING)
        for inputs, targets in progress:
            with autocast(precision, device):
                outputs = model(inputs)
            loss = loss_fn(outputs.float(), targets)
            pending.append(loss.detach())
            if len(pending) == reads_every:
                total, count = add_losses(pending, total, count, desc, progress)
                pending = []
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)
        if pending:
            total, count = add_losses(pending, total, count, desc, progress)
    return total / max(count, 1)


def loss_reads_every(device):
    """Steps between two reads of the training loss on `device`: every step on a CPU, GPU_LOSS_READS on a GPU."""
    return 1 if device.type == "cpu" else GPU_LOSS_READS


def add_losses(pending, total, count, desc, progress):
    """Read the losses of the steps in `pending` (one host-device synchronisation), stop at a NaN or inf, and add
    them to the running (total, count), one by one in step order: the same sum whatever the reading interval."""
    for value in torch.stack(pending).tolist():
        if not math.isfinite(value):
            raise TrainingStopped(f"training loss became {value} at {desc}, batch {count + 1}; lower --lr")
        total += value
        count += 1
        if count % 20 == 0:
            progress.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    return total, count


class Training:
    """What trains, built from a run's settings: the model, its optimizer, the learning-rate schedule over
    the run's epochs, the weight average (when the recipe keeps one) and the fp16 loss scaler.

    The question supplies the model and the optimizer (its parameter groups are its own); everything else
    is the same for both questions, and so is made here once.
    """

    def __init__(self, model, optimizer, run, steps_per_epoch):
        recipe = run.recipe
        self.model, self.optimizer, self.run, self.steps_per_epoch = model, optimizer, run, steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_schedule(recipe["schedule"], steps_per_epoch * recipe["epochs"]))
        self.ema = WeightAverage(model, recipe["ema_decay"]) if recipe.get("ema_decay") else None
        self.scaler = make_scaler(run.precision, run.device)
        self.last_every = 0.0 if run.device.type == "cpu" else GPU_LAST_EVERY  # seconds between last.pt writes

    @property
    def evaluated(self):
        """The network that validates: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def epoch(self, batches, loss_fn, epoch):
        """One epoch over `batches`; the mean training loss."""
        return train_one_epoch(self.model, batches, self.optimizer, self.scheduler, loss_fn,
                               num_batches=self.steps_per_epoch, desc=f"epoch {epoch}", ema=self.ema,
                               precision=self.run.precision, scaler=self.scaler)

    def checkpoint(self, path, epoch, best, history, stretches):
        save_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, epoch=epoch,
                        best=best, history=history, config=self.run.record, ema=self.ema, scaler=self.scaler,
                        run_id=self.run.run_id, question=self.run.question.name, stretches=stretches,
                        data=self.run.data)

    def restore(self, state):
        """Continue from a checkpoint: weights, optimizer, schedule, weight average, scaler, RNG streams."""
        self.model.load_state_dict(state["model"])
        # what the optimizer holds is the checkpoint's; how it computes (fused kernels on a CUDA GPU) is this device's
        kernels = [{key: group[key] for key in ("fused", "foreach") if key in group}
                   for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, own in zip(self.optimizer.param_groups, kernels, strict=True):
            group.update(own)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        # The restored optimizer holds the learning rate of the saved schedule's step; a run resumed with a
        # larger --epochs follows its new, longer schedule from the very first step.
        scheduler = self.scheduler
        for group, base_lr, multiplier in zip(self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas,
                                              strict=True):
            group["lr"] = base_lr * multiplier(scheduler.last_epoch)
        restore_rng(state["rng"])


def fit(training, run_epoch, validate, score_key, eval_every=1):
    """Train for the run's epochs in total, validating every `eval_every` epochs and at the end.

    run_epoch(epoch) -> mean training loss; validate() -> dict of validation metrics, or validate=None
    for no validation (a --final run, whose val images are training images).
    Each epoch ends with `last.pt` (on a GPU at most once every GPU_LAST_EVERY seconds, and after the last
    epoch) and `best.pt` when `score_key` improved, written atomically, with the RNG states, the weight average
    and the fp16 loss scaler, so a resumed run continues exactly as an uninterrupted one would. Each history
    record holds the epoch's wall time under "seconds"; their sum
    is the training time. After each epoch the results folder's history.jsonl holds the records so far, one
    JSON object a line, each with "finished_at" (Unix time): what the benches and the sweep read while a run
    goes on (the printed epoch line is for people). Returns the history.
    """
    run = training.run
    history, best, start, stretches = [], -math.inf, 1, []
    epochs = run.recipe["epochs"]
    if run.mode == "resume":
        state = run.saved
        training.restore(state)
        history, best, start = state["history"], state["best"], state["epoch"] + 1
        stretches = stretches_of(state)
        print(f"resumed after epoch {state['epoch']}" +
              (f" (best {score_key} so far {best:.4f})" if score_key and math.isfinite(best) else
               " (no epoch validated yet)" if score_key else ""))
        planned = stretches[-1]["schedule_epochs"] if stretches else epochs
        if planned != epochs and start <= epochs and run.recipe["schedule"] != "constant":
            step = state["epoch"] * training.steps_per_epoch
            print(f"NOTE: the schedule changes: epochs 1-{start - 1} followed the {planned}-epoch schedule; epochs "
                  f"{start}-{epochs} follow the {epochs}-epoch one from its step {step} (metrics.json records both "
                  "stretches)")
    if start > epochs:
        print(f"nothing to train: the checkpoint already has {start - 1} of {epochs} epochs")
    else:
        stretches = [*stretches, {"first_epoch": start, "last_epoch": start - 1, "schedule_epochs": epochs,
                                  "precision": run.precision, "device": run.device.type,
                                  "resumed": run.mode == "resume"}]
    validated, finished = validated_epochs(epochs, eval_every), finished_times(run.out_dir / HISTORY)
    last_written = time.monotonic()
    for epoch in range(start, epochs + 1):
        began = time.perf_counter()
        record = {"epoch": epoch, "train_loss": run_epoch(epoch)}
        if validate is not None and epoch in validated:
            record.update(validate())
        record["seconds"] = time.perf_counter() - began
        history.append(record)
        print("epoch {:3d}/{}  ".format(epoch, epochs) + "  ".join(
            f"{key} {value:.4f}" for key, value in record.items() if key != "epoch"), flush=True)
        stretches[-1]["last_epoch"] = epoch
        if score_key in record and record[score_key] > best:
            best = record[score_key]
            training.checkpoint(run.checkpoint_dir / "best.pt", epoch, best, history, stretches)
        if epoch == epochs or time.monotonic() - last_written >= training.last_every:
            training.checkpoint(run.checkpoint_dir / "last.pt", epoch, best, history, stretches)
            last_written = time.monotonic()
        finished[epoch] = time.time()
        write_text(run.out_dir / HISTORY, "".join(json.dumps({**record, "finished_at": finished.get(record["epoch"])})
                                                  + "\n" for record in history))
    return history


def finished_times(path):
    """{epoch: finished_at} of the epochs an earlier stretch of the run wrote to its history.jsonl."""
    try:
        return {record["epoch"]: record.get("finished_at")
                for record in map(json.loads, path.read_text().splitlines()) if isinstance(record, dict)}
    except (OSError, ValueError, KeyError):
        return {}


def validated_epochs(epochs, eval_every):
    """The epochs `fit` validates: every `eval_every`-th, and the last one whatever `eval_every` is."""
    return [epoch for epoch in range(1, epochs + 1) if epoch % eval_every == 0 or epoch == epochs]


def stretches_of(state):
    """A checkpoint's record of its stretches of training (one per fresh start or resume, each with the
    schedule it followed); a checkpoint from before that record gets one stretch rebuilt from its settings."""
    if state.get("stretches"):
        return [dict(stretch) for stretch in state["stretches"]]
    config = state["config"]
    return [{"first_epoch": 1, "last_epoch": state["epoch"], "schedule_epochs": config.get("epochs"),
             "precision": config.get("precision", "fp32"), "device": "unknown", "resumed": False}]


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


def load_result(run, model):
    """Load the weights to predict with into `model`: the weight average of best.pt, or for a --final run,
    whose val images were training images and so cannot pick an epoch, of last.pt. A run stopped before its
    first validation has no best.pt: it predicts from last.pt, and `announce` says so."""
    last_path, best_path = run.checkpoint_dir / "last.pt", run.checkpoint_dir / "best.pt"
    try:
        last = load_checkpoint(last_path, run.hint) if last_path.is_file() else None
    except UserError:  # damaged: the run's record comes from best.pt (common.run.readable_checkpoint warned)
        if not best_path.is_file():
            raise
        last = None
    validated = not run.final and best_path.is_file()
    state = load_checkpoint(best_path, run.hint, way_on="delete it to predict from last.pt, or train afresh with "
                                                        "--overwrite") if validated or last is None else last
    last = last or state
    load_weights(model, prediction_weights(state), run.checkpoint_dir)
    epochs = last["history"][-1]["epoch"] if last["history"] else last["epoch"]
    return Result(state, last, last["history"], stretches_of(last), epochs, epochs >= run.recipe["epochs"],
                  validated)
