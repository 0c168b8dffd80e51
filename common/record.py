"""The record of a run: what data its figures were measured on, the lines printed before them, metrics.json,
and the network's description (model.txt, summary.txt) that the report reads.

Each question adds only its own figures to what is recorded here for every run.
"""
import contextlib
import copy
import hashlib
import io
from pathlib import Path

import torch

from common import __version__
from common.command import UserError
from common.files import write_json, write_text


def fingerprint(*tensors):
    """A short digest of the tensors' contents (SHA-256, 16 hex digits): the same images and labels give the same
    fingerprint wherever they are stored (a copy, a link, another folder name), and other images another one."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def data_record(folder, counts, val_split, val_images, val_labels):
    """What metrics.json and the checkpoints record of the data a run used: the data folder (resolved), the number
    of images of each split it used, which images validated ("val", or "holdout": the last training images) and
    their fingerprint."""
    return {"folder": str(Path(folder).resolve()), "images": dict(counts), "val_split": val_split,
            "val_fingerprint": fingerprint(val_images, val_labels)}


def other_data(trained_on, now):
    """Whether `now` (a data record) validates on other images than `trained_on`, the record of the data the run
    trained and validated on."""
    return isinstance(trained_on, dict) and trained_on.get("val_fingerprint") != now["val_fingerprint"]


def describe_data(record):
    """'5,000 val images from /path/to/data': a data record in words."""
    count = record["images"].get("val", 0)
    return f"{count:,} {record['val_split']} images from {record['folder']}"


def evaluated_elsewhere(run, record):
    """The record of the data the run was validated on when --eval-only now evaluates other images (`record`, the
    data loaded), else None. Such figures are not the run's own: they never replace the run's results unless
    --out-dir names where they go (the run's own folder included)."""
    trained_on = run.saved.get("data") if run.mode == "eval" else None
    if not other_data(trained_on, record):
        return None
    if not run.out_dir_given:
        raise UserError(f"--eval-only --data-dir: its {describe_data(record)} are not the {describe_data(trained_on)} "
                        f"the run was validated on, and their figures would replace the run's own in {run.out_dir}; "
                        "give them a folder of their own with --out-dir")
    return trained_on


def announce(run, result, views, seen_val=False):
    """The lines before a run's figures: which checkpoint predicts, with which test-time views (`views`, in
    words) and precision, and what the figures are not (val trained on, a holdout, an unfinished or limited
    run)."""
    print(f"{'last' if run.final else 'best'} checkpoint: epoch {result.state['epoch']}, {views}, {run.precision}")
    if not run.final and not result.validated:
        print(f"NOTE: no epoch was validated yet; predicting from the last epoch ({result.state['epoch']})")
    if seen_val:
        print("NOTE: --final trained on the val images too, so the val figures below are not held-out figures")
    if run.options["holdout"]:
        print(f"NOTE: --holdout: the figures below are on the last {run.options['holdout']} training images, not val")
    if run.options["limit"]:
        print(f"NOTE: --limit: trained on the first {run.options['limit']} training images only")
    if run.trained_on:
        print(f"NOTE: evaluated on other data: {describe_data(run.data)}, not the {describe_data(run.trained_on)} the "
              "run was validated on; metrics.json says so and the report keeps these figures apart")
    if not result.finished:
        print(f"NOTE: this run is unfinished: {result.epochs} of {run.recipe['epochs']} epochs trained "
              "(continue it with --resume)")


def training_precision(stretches, fallback):
    """The precision(s) the network was trained in, from the record of its stretches of training."""
    used = list(dict.fromkeys(stretch["precision"] for stretch in stretches))
    return ", ".join(used) if used else fallback


def write_record(run, model, result, views, own):
    """Write metrics.json: what every run records, then the question's own fields (`own`); `views`: the test-time
    views, in words."""
    history = result.history
    write_json(run.out_dir / "metrics.json", {
        "version": __version__,
        "run_id": run.run_id,
        "model": run.recipe["model"],
        "params": count_parameters(model),
        "epochs": result.epochs,
        "planned_epochs": run.recipe["epochs"],
        "finished": result.finished,
        "best_epoch": result.state["epoch"],
        "train_seconds": round(sum(record["seconds"] for record in history), 1),
        "final": run.final,
        "holdout": run.options["holdout"],
        "limit": run.options["limit"],
        "train_precision": training_precision(result.stretches, run.record["precision"]),
        "eval_precision": run.precision,
        "views": views,
        "data": run.data,  # the data these figures were measured on
        "other_data": run.trained_on is not None,  # --eval-only on other images than the run's own val
        "trained_on": run.trained_on,  # then: the record of the data the run was trained and validated on
        "training": result.stretches,
        **own,
        "history": [{key: value for key, value in record.items() if key != "seconds"} for record in history],
        "config": run.record,
    })


def describe_model(model, input_size, out_dir=None):
    """Print `print(net)` and the torchsummary table; keep both as text for the report.

    torchsummary feeds a random batch through the model, so it runs on an eval-mode copy with the
    RNG forked: the model's BatchNorm statistics and the run's random stream stay untouched.
    """
    from torchsummary import summary

    print(model)
    probe = copy.deepcopy(model).cpu().eval()
    buffer = io.StringIO()
    with torch.random.fork_rng(devices=[]), torch.no_grad(), contextlib.redirect_stdout(buffer):
        summary(probe, input_size, device="cpu")
    table = buffer.getvalue()
    print(table, end="")
    if out_dir is not None:
        write_text(Path(out_dir) / "model.txt", str(model) + "\n")
        write_text(Path(out_dir) / "summary.txt", table)
    return table


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())
