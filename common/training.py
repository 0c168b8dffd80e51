"""Training, the part both questions share: the training step and its companions (learning-rate schedule,
weight average, fp16 loss scaler), one epoch, and the end of an epoch (its record, best.pt and last.pt).

A script's own loop reads:

    training = start_or_resume(run, model, optimizer, steps_per_epoch, score="val_accuracy")
    for epoch in training.epochs():
        loss = train_one_epoch(training, batches(...), loss_fn, epoch)
        figures = validate(training.averaged, ...) if training.validates(epoch) else {}
        save_epoch(training, epoch, loss, figures)

A resumed run continues exactly as an uninterrupted one would: the checkpoints hold the optimizer, the
schedule, the weight average, the loss scaler and every random stream.
"""
import json
import math
import random
import time
import warnings

import numpy as np
import torch
from tqdm import tqdm

from common.average import WeightAverage
from common.checkpoint import restore_rng, save_checkpoint
from common.command import TrainingStopped, memory_remedy
from common.device import autocast, make_scaler
from common.files import write_text

HISTORY = "history.jsonl"  # in the results folder: one JSON object per finished epoch, for tools to read


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_bounds(total, batch_size):
    """(start, end) of each batch over `total` items; a last batch of one joins the batch before it.

    BatchNorm cannot train on a single item, and a batch of one is what 55,000 images in batches of 97
    leave at the end; merging it loses nothing (the field's other fix, drop_last, skips that image).
    """
    bounds = [(start, min(start + batch_size, total)) for start in range(0, total, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], total)]
    return bounds


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


class Training:
    """What trains and where it stands: the model, its optimizer, the learning-rate schedule over the run's
    epochs, the weight average (when the recipe keeps one), the fp16 loss scaler; the epochs' history, the best
    validation figure so far and the stretches of training (one per fresh start or resume). Made by
    `start_or_resume`; the question supplies the model and the optimizer (its parameter groups are its own)."""

    def __init__(self, run, model, optimizer, steps_per_epoch, score=None, val_every=1):
        recipe = run.recipe
        self.run, self.model, self.optimizer, self.steps_per_epoch = run, model, optimizer, steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_schedule(recipe["schedule"], steps_per_epoch * recipe["epochs"]))
        self.ema = WeightAverage(model, recipe["ema_decay"]) if recipe.get("ema_decay") else None
        self.scaler = make_scaler(run.precision, run.device)
        # the validation figure best.pt keeps the best of; None for a --final run, whose val images are training
        # images: it never validates and predicts from last.pt
        self.score = None if run.final else score
        self.val_every = val_every
        self.last_every = 0.0 if run.device.type == "cpu" else GPU_LAST_EVERY  # seconds between last.pt writes
        self.history, self.best, self.start, self.stretches = [], -math.inf, 1, []
        self.began, self.last_written = time.perf_counter(), time.monotonic()  # an epoch's start; last.pt's write

    @property
    def averaged(self):
        """The network that validates and predicts: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def epochs(self):
        """The epochs still to train, in order (each one's wall time starts as it is handed out)."""
        for epoch in range(self.start, self.run.recipe["epochs"] + 1):
            self.began = time.perf_counter()
            yield epoch

    def validates(self, epoch):
        """Whether `epoch` ends with a validation: every `val_every`-th epoch and the last (never with --final)."""
        return self.score is not None and (epoch % self.val_every == 0 or epoch == self.run.recipe["epochs"])

    def checkpoint(self, path, epoch):
        run = self.run
        save_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, epoch=epoch,
                        best=self.best, history=self.history, config=run.record, ema=self.ema, scaler=self.scaler,
                        run_id=run.run_id, question=run.question.name, stretches=self.stretches, data=run.data)

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


def start_or_resume(run, model, optimizer, steps_per_epoch, score=None, val_every=1):
    """The run's `Training`: fresh, or with --resume restored from the run's checkpoint so that it continues
    exactly. `score`: the validation figure that picks best.pt; `val_every`: validate every this many epochs (and
    after the last)."""
    training = Training(run, model, optimizer, steps_per_epoch, score, val_every)
    epochs = run.recipe["epochs"]
    if run.mode == "resume":
        state = run.saved
        training.restore(state)
        training.history, training.best, training.start = state["history"], state["best"], state["epoch"] + 1
        training.stretches = [dict(stretch) for stretch in state["stretches"]]
        score, best = training.score, training.best
        print(f"resumed after epoch {state['epoch']}" +
              (f" (best {score} so far {best:.4f})" if score and math.isfinite(best) else
               " (no epoch validated yet)" if score else ""))
        planned = training.stretches[-1]["schedule_epochs"] if training.stretches else epochs
        if planned != epochs and training.start <= epochs and run.recipe["schedule"] != "constant":
            step = state["epoch"] * steps_per_epoch
            print(f"NOTE: the schedule changes: epochs 1-{training.start - 1} followed the {planned}-epoch schedule; "
                  f"epochs {training.start}-{epochs} follow the {epochs}-epoch one from its step {step} (metrics.json "
                  "records both stretches)")
    if training.start > epochs:
        print(f"nothing to train: the checkpoint already has {training.start - 1} of {epochs} epochs")
    else:
        training.stretches.append({"first_epoch": training.start, "last_epoch": training.start - 1,
                                   "schedule_epochs": epochs, "precision": run.precision, "device": run.device.type,
                                   "resumed": run.mode == "resume"})
    training.last_written = time.monotonic()
    return training


def train_one_epoch(training, batches, loss_fn, epoch):
    """One pass over `batches` (an iterable of (input, target) on the model's device); returns the mean loss.

    The forward pass runs under the run's precision's autocast; the loss is computed in float32, and scaled by
    the fp16 loss scaler (see common.device.make_scaler). A NaN or inf loss stops training (on a CPU before the
    optimizer step can spread it into the weights; on a GPU within GPU_LOSS_READS steps). A GPU out of memory
    is one line naming --batch-size.
    """
    model, optimizer, scheduler, scaler, ema = (training.model, training.optimizer, training.scheduler,
                                                training.scaler, training.ema)
    precision, desc = training.run.precision, f"epoch {epoch}"
    model.train()
    device = next(model.parameters()).device
    reads_every = loss_reads_every(device)
    total, count, pending = 0.0, 0, []
    # disable=None: a bar on a terminal, silence in logs and CI
    progress = tqdm(batches, total=training.steps_per_epoch, desc=desc, leave=False, dynamic_ncols=True,
                    disable=None)
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


def save_epoch(training, epoch, loss, figures):
    """The end of an epoch: its record (mean training loss, the validation `figures`, its wall time under
    "seconds") joins the history and is printed; best.pt is written when the score improved, last.pt after every
    epoch (on a GPU at most once every GPU_LAST_EVERY seconds, and after the last epoch), both atomically. The
    results folder's history.jsonl then holds the records so far, one JSON object a line, each with
    "finished_at" (Unix time): what the benches and the sweep read while a run goes on (the printed line is for
    people)."""
    run, epochs = training.run, training.run.recipe["epochs"]
    record = {"epoch": epoch, "train_loss": loss, **figures, "seconds": time.perf_counter() - training.began}
    training.history.append(record)
    print("epoch {:3d}/{}  ".format(epoch, epochs) + "  ".join(
        f"{key} {value:.4f}" for key, value in record.items() if key != "epoch"), flush=True)
    training.stretches[-1]["last_epoch"] = epoch
    if training.score in figures and figures[training.score] > training.best:
        training.best = figures[training.score]
        training.checkpoint(run.checkpoint_dir / "best.pt", epoch)
    if epoch == epochs or time.monotonic() - training.last_written >= training.last_every:
        training.checkpoint(run.checkpoint_dir / "last.pt", epoch)
        training.last_written = time.monotonic()
    finished = finished_times(run.out_dir / HISTORY)
    finished[epoch] = time.time()
    write_text(run.out_dir / HISTORY, "".join(json.dumps({**record, "finished_at": finished.get(record["epoch"])})
                                              + "\n" for record in training.history))


def finished_times(path):
    """{epoch: finished_at} of the epochs an earlier stretch of the run wrote to its history.jsonl."""
    try:
        return {record["epoch"]: record.get("finished_at")
                for record in map(json.loads, path.read_text().splitlines()) if isinstance(record, dict)}
    except (OSError, ValueError, KeyError):
        return {}
