"""The epoch loop both questions share: train, validate, checkpoint best and last, resume, predict."""
import copy
import math
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from common.cli import settle_config
from common.precision import autocast
from common.runtime import UserError, pick_device, prepare_dir, seed_everything


def start_run(args, recipe, fixed, hint, eval_keys=("tta",), init_keys=()):
    """What every run does first: (device, out_dir, checkpoint_dir, saved state or None, config).

    Picks the device, proves both output folders writable before any training depends on them, loads
    last.pt for --resume and --eval-only, settles the config (see common.cli.settle_config: with a saved
    run, only --epochs, the settings `init_keys` that only shape a fresh start, and for --eval-only the
    evaluation settings `eval_keys`, may differ from it) and seeds every random generator.
    """
    device = pick_device(args.device)
    out_dir = prepare_dir(args.out_dir, "--out-dir")
    checkpoint_dir = prepare_dir(args.checkpoint_dir, "--checkpoint-dir")
    saved = load_checkpoint(checkpoint_dir / "last.pt", hint) if args.resume or args.eval_only else None
    free = ("epochs", *init_keys, *(eval_keys if args.eval_only else ()))
    config = settle_config(args, recipe, fixed, saved and saved["config"], free, checkpoint_dir / "last.pt",
                           "--eval-only" if args.eval_only else "--resume")
    seed_everything(config["seed"])
    return device, out_dir, checkpoint_dir, saved, config


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics, updated every step.

    Validating and predicting with the average rather than the raw weights smooths out the noise of a
    high learning rate, so good accuracy comes epochs earlier. The first update copies the weights, the
    next ones move the average (1 - decay) of the way towards them: the arithmetic of torch's
    AveragedModel with get_ema_multi_avg_fn, without its two host-device synchronisations per step
    (it tests a step counter that lives on the GPU); here the counter is a Python int.
    """

    def __init__(self, model, decay):
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay, self.updates = decay, 0
        # (average, model) tensor pairs; both sides are updated in place, so the pairs stay valid
        self.pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))

    @torch.no_grad()
    def update(self, model):
        """Move the average towards `model`, the model it was made from."""
        pairs = self.pairs
        if self.updates == 0:
            torch._foreach_copy_([mine for mine, _ in pairs], [theirs for _, theirs in pairs])
        else:
            floats = [(mine, theirs) for mine, theirs in pairs if mine.is_floating_point()]
            torch._foreach_lerp_([mine for mine, _ in floats], [theirs for _, theirs in floats], 1 - self.decay)
            for mine, theirs in pairs:
                if not mine.is_floating_point():  # BatchNorm's batch counters
                    mine.copy_(theirs)
        self.updates += 1

    def state_dict(self):
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state):
        self.updates = state["updates"]
        self.module.load_state_dict(state["module"])


def batch_bounds(total, batch_size):
    """(start, end) of each batch over `total` items; a last batch of one joins the batch before it.

    BatchNorm cannot train on a single item, and a batch of one is what 55,000 images in batches of 97
    leave at the end; merging it loses nothing (the field's other fix, drop_last, skips that image).
    """
    bounds = [(start, min(start + batch_size, total)) for start in range(0, total, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], total)]
    return bounds


def train_one_epoch(model, batches, optimizer, scheduler, loss_fn, *, num_batches, desc, ema=None,
                    precision="fp32", scaler=None):
    """One pass over `batches` (an iterable of (input, target) on the model's device); returns the mean loss.

    The forward pass runs under `precision`'s autocast; the loss is computed in float32. `scaler` is the
    fp16 loss scaler (see common.precision.make_scaler). A NaN or inf loss stops training before the
    optimizer step can spread it into the weights.
    """
    model.train()
    device = next(model.parameters()).device
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    total, count = 0.0, 0
    # disable=None: a bar on a terminal, silence in logs and CI
    progress = tqdm(batches, total=num_batches, desc=desc, leave=False, dynamic_ncols=True, disable=None)
    for inputs, targets in progress:
        with autocast(precision, device):
            outputs = model(inputs)
        loss = loss_fn(outputs.float(), targets)
        value = loss.item()  # the one host-device synchronisation per step: the NaN guard and the mean need it
        if not math.isfinite(value):
            raise UserError(
                f"training loss became {value} at {desc}, batch {count + 1}; lower --lr. "
                "The last good checkpoint was kept"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        total += value
        count += 1
        if count % 20 == 0:
            progress.set_postfix(loss=f"{total / count:.4f}", refresh=False)
    return total / max(count, 1)


def fit(model, optimizer, scheduler, *, config, checkpoint_dir, run_epoch, evaluate, score_key,
        resume_state=None, eval_every=1, ema=None, scaler=None):
    """Train for config["epochs"] epochs in total, validating every `eval_every` epochs and at the end.

    run_epoch(epoch) -> mean training loss; evaluate() -> dict of validation metrics, or evaluate=None
    for no validation (a --final run, whose val images are training images).
    Each epoch ends with `last.pt` (and `best.pt` when `score_key` improved) written atomically, with the
    RNG states, the weight average `ema` and the fp16 loss `scaler`, so a resumed run continues exactly as
    an uninterrupted one would. Each history record holds the epoch's wall time under "seconds"; their sum
    is the training time. Returns (history, best score).
    """
    history, best, start = [], -math.inf, 1
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if ema is not None:
            ema.load_state_dict(resume_state["ema"])
        if scaler is not None and resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        # The restored optimizer holds the learning rate of the saved schedule's step; a run resumed with a
        # larger --epochs follows its new, longer schedule from the very first step.
        for group, base_lr, multiplier in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas,
                                              strict=True):
            group["lr"] = base_lr * multiplier(scheduler.last_epoch)
        history, best = resume_state["history"], resume_state["best"]
        start = resume_state["epoch"] + 1
        restore_rng(resume_state["rng"])
        print(f"resumed after epoch {resume_state['epoch']}" +
              (f" (best {score_key} so far {best:.4f})" if score_key else ""))
    epochs = config["epochs"]
    if start > epochs:
        print(f"nothing to train: the checkpoint already has {start - 1} of {epochs} epochs")
    for epoch in range(start, epochs + 1):
        began = time.perf_counter()
        record = {"epoch": epoch, "train_loss": run_epoch(epoch)}
        if evaluate is not None and (epoch % eval_every == 0 or epoch == epochs):
            record.update(evaluate())
        record["seconds"] = time.perf_counter() - began
        history.append(record)
        print("epoch {:3d}/{}  ".format(epoch, epochs) + "  ".join(
            f"{key} {value:.4f}" for key, value in record.items() if key != "epoch"), flush=True)
        state = dict(model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                     history=history, config=config, ema=ema, scaler=scaler)
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


def tta_softmax(model, inputs, dense, flip=True, scales=(1.0,)):
    """Test-time augmentation: the mean softmax over each image's views.

    Views: the image at each of `scales` (resized bilinearly; per-pixel outputs resized back), each
    also mirrored when `flip`. `dense`: the outputs are per-pixel maps, so a mirrored view's output is
    mirrored back (segmentation); otherwise one score vector per image (classification).
    """
    size = inputs.shape[-2:]
    total, views = 0, 0
    for scale in scales:
        resized = inputs if scale == 1 else F.interpolate(inputs, scale_factor=scale, mode="bilinear",
                                                          align_corners=False)
        for mirrored in (False, True) if flip else (False,):
            outputs = model(resized.flip(-1) if mirrored else resized).float()
            if mirrored and dense:
                outputs = outputs.flip(-1)
            if scale != 1:
                outputs = F.interpolate(outputs, size=size, mode="bilinear", align_corners=False)
            total = total + outputs.softmax(dim=1)
            views += 1
    return total / views


@torch.inference_mode()
def predict_softmax(model, images, prepare, batch_size, tta=False, dense=False, precision="fp32", scales=(1.0,)):
    """Softmax outputs (float32 numpy) of `model` over `images`, prepared chunk by chunk on the model's device.

    With `tta`, the mean softmax of each image and its mirror image, at each of `scales` (dense outputs
    only; see tta_softmax). The outputs stay on the device until the end: one transfer back, not one per
    chunk.
    """
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(images), batch_size):
        inputs = prepare(images[start:start + batch_size])
        with autocast(precision, device):
            outputs.append(tta_softmax(model, inputs, dense, flip=tta, scales=scales))
    return torch.cat(outputs).cpu().numpy()


def load_finished_run(checkpoint_dir, hint, final=False):
    """(state to predict with, the whole run's history): best.pt and last.pt's history, or for a --final
    run, whose val images were training images and so cannot pick an epoch, last.pt for both."""
    last_path = checkpoint_dir / "last.pt"
    if final:
        last = load_checkpoint(last_path, hint)
        return last, last["history"]
    best = load_checkpoint(checkpoint_dir / "best.pt", hint)
    history = load_checkpoint(last_path, hint)["history"] if last_path.is_file() else best["history"]
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
