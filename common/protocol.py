"""The run protocol both questions follow, written once; each question supplies its pieces.

Also written once here: the lines every run prints before its figures and the metrics.json fields every
run records; each question adds only its own figures.
"""
from dataclasses import dataclass
from typing import Callable

from common.data import describe_data, other_data
from common.folders import claim, open_folders
from common.loop import load_result
from common.run import resolve
from common.runtime import UserError, count_parameters, describe_model, seed_everything, write_json


@dataclass(frozen=True)
class Pieces:
    """What a question supplies to the protocol."""
    load_data: Callable      # (run, data_dir) -> the question's data, on the run's device
    build: Callable          # run -> the network, on the run's device
    input_size: tuple        # one input's shape, for the torchsummary table
    train: Callable          # (run, model, data): fit the network (skipped by --eval-only)
    write_outputs: Callable  # (run, model, data, result): figures, predictions, metrics.json (see `record`)


def run_protocol(args, question, pieces):
    """Resolve the run's settings; lock its folders and check they hold no other run; load the data and build
    the network (so every check that can fail has run); only then claim the folders (--overwrite deletes the
    replaced run now); train (unless --eval-only); load the weights to predict with (best.pt's average;
    --final: last.pt's) and write the outputs. Returns the Run."""
    run = resolve(args, question)
    with open_folders(run):
        seed_everything(run.options["seed"])
        data = pieces.load_data(run, args.data_dir)
        run.data, run.trained_on = data.record, evaluated_elsewhere(run, data.record)
        model = pieces.build(run)
        claim(run)
        describe_model(model, pieces.input_size, run.out_dir)
        if run.trains:
            pieces.train(run, model, data)
        pieces.write_outputs(run, model, data, load_result(run, model))
    return run


def evaluated_elsewhere(run, record):
    """The record of the data the run was validated on when --eval-only now evaluates other images (`record`),
    else None. Such figures are not the run's own: they never replace the run's results unless --out-dir names
    where they go (the run's own folder included)."""
    trained_on = run.saved.get("data") if run.mode == "eval" else None
    if not other_data(trained_on, record):
        return None
    if not run.out_dir_given:
        raise UserError(f"--eval-only --data-dir: its {describe_data(record)} are not the {describe_data(trained_on)} "
                        f"the run was validated on, and their figures would replace the run's own in {run.out_dir}; "
                        "give them a folder of their own with --out-dir")
    return trained_on


def announce(run, result, seen_val=False):
    """The lines before a run's figures: which checkpoint predicts, with which views and precision, and what
    the figures are not (val trained on, a holdout, an unfinished or limited run)."""
    print(f"{'last' if run.final else 'best'} checkpoint: epoch {result.state['epoch']}, "
          f"{run.question.describe_views(run.evaluation)}, {run.precision}")
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


def record(run, model, result, own):
    """Write metrics.json: what every run records, then the question's own fields (`own`)."""
    history = result.history
    write_json(run.out_dir / "metrics.json", {
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
        "views": run.question.describe_views(run.evaluation),
        "data": run.data,  # the data these figures were measured on
        "other_data": run.trained_on is not None,  # --eval-only on other images than the run's own val
        "trained_on": run.trained_on,  # then: the record of the data the run was trained and validated on
        "training": result.stretches,
        **own,
        "history": [{key: value for key, value in record.items() if key != "seconds"} for record in history],
        "config": run.record,
    })
