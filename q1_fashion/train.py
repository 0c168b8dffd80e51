"""Train a Fashion-MNIST classifier, report the course's val numbers, write the autograder file.

    python q1_fashion/train.py                      # the improved model with its best recipe
    python q1_fashion/train.py --model basenet      # the assignment's BaseNet
    python q1_fashion/train.py --resume             # continue from last.pt
    python q1_fashion/train.py --eval-only          # evaluate the finished run and write predictions
    python q1_fashion/train.py --final              # the chosen recipe on all 60,000 training images
"""
import argparse

import torch
from torch import nn

from common.checkpoint import load_weights, prediction_weights
from common.cli import (
    add_run_arguments,
    flag,
    given,
    positive_int,
    probability,
    reject_switches,
    resolve_run_paths,
    run_name,
    settle_config,
)
from common.metrics import accuracy, confusion_matrix, format_classification, per_class_accuracy
from common.plotting import plot_confusion, plot_curves, plot_misclassified
from common.precision import choose_precision, make_scaler
from common.runtime import count_parameters, describe_model, run_cli, save_npy, write_json
from common.training import (
    WeightAverage,
    batch_bounds,
    fit,
    history_without_timing,
    load_finished_run,
    lr_schedule,
    predict_softmax,
    run_fields,
    start_run,
    train_one_epoch,
)
from q1_fashion.data import (
    CLASSES,
    batches,
    load_fashion_mnist,
    load_secret_test,
    normalize,
    split_indices,
    test_views,
    translate,
)
from q1_fashion.models import FAMILY_KEYS, MODELS, build_model

PREDICTIONS = "Q1_label_predictions.npy"
VAL_PREDICTIONS = "Q1_val_label_predictions.npy"
# The reference report's published accuracies (%), which the report compares against
REFERENCE_REPORT = {"basenet": {"val": 87.0}, "best": {"val": 92.1, "test": 91.2}}

# Each model's best recipe: a base plus per-model overrides; a flag given on the command line beats both.
# The base is the course starter's training: plain SGD with momentum at a constant rate, no augmentation.
BASE = dict(optimizer="SGD", epochs=10, batch_size=64, lr=0.005, momentum=0.9, nesterov=False, weight_decay=0.0,
            label_smoothing=0.0, schedule="constant", augment=False, ema_decay=0.0, tta=False, tta_shift=0, seed=0,
            limit=None, final=False)
RECIPES = {
    # 88.20 % val (best of 10 epochs), inside the assignment's 87 +- 1.5 for BaseNet.
    "basenet": BASE,
    # The reference report's best model with a one-cycle schedule; 15 epochs as the report trained it.
    "report_best": dict(BASE, epochs=15, batch_size=128, lr=0.05, nesterov=True, weight_decay=5e-4,
                        schedule="onecycle"),
    "improved": dict(
        BASE,
        epochs=30,             # 93.80 % val; the EMA has passed 92.1 % by epoch 10
        batch_size=256,        # same images/s as 64 on a CPU (bench/cpu_settings.py); lr is tuned for 256
        lr=0.1,                # peak of the one-cycle; 0.05 for 35 epochs gave 93.72 %
        nesterov=True,
        weight_decay=5e-4,
        label_smoothing=0.1,   # 94.30 % val with flip TTA against 94.14 % without (30 epochs)
        schedule="onecycle",   # linear warm-up over 15 % of the steps, then cosine to 0
        augment=True,          # 2-pixel shifts and flips; random erasing as well cost 0.4 points (93.42 %)
        tta=True,              # predict on the image and its mirror: +0.3 to 0.5 points over one view
        tta_shift=1,           # and on both moved 1 pixel 4 ways (10 views): +0.32 more (94.24 -> 94.56 %)
        ema_decay=0.995,       # predict with a weight average: 92.1 % at epoch 10 instead of 19, same training
        # The ablation (q1_fashion/ablate.py) builds up to this. At the same training time, width 48 (20 epochs,
        # 94.30 %), depth 3 (28 epochs, 94.28 %) and a 128-wide hidden layer (94.16 %) did no better (flip TTA).
        width=32, depth=2, batchnorm=True, dropout=0.2,
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="improved", help="network (default: improved)")
    run = add_run_arguments(parser, "q1_fashion")
    run.add_argument("--momentum", type=probability)
    run.add_argument("--label-smoothing", type=probability)
    run.add_argument("--ema-decay", type=probability,
                     help="validate and predict with a moving average of the weights (0: off)")
    run.add_argument("--tta-shift", type=int, choices=(0, 1, 2),
                     help="with --tta, also predict on both views moved this many pixels up, down, left and right "
                          "(0: the image and its mirror only)")
    ablation = parser.add_argument_group("ablation switches (augmentation: any model; the rest: --model improved)")
    ablation.add_argument("--augment", action=argparse.BooleanOptionalAction,
                          help="random 2-pixel shifts and horizontal flips while training")
    ablation.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, help="BatchNorm after each layer")
    ablation.add_argument("--dropout", type=probability, help="dropout probability")
    ablation.add_argument("--depth", type=positive_int, help="convolutions per stage")
    ablation.add_argument("--width", type=positive_int, help="channels of the first stage (BaseNet: 6)")
    args = parser.parse_args(argv)
    reject_switches(parser, args, FAMILY_KEYS, "improved")
    resolve_run_paths(args, "q1_fashion", run_name(args.model, given(args, FAMILY_KEYS), RECIPES[args.model],
                                                   bool(args.final)))
    return args


def make_config(args):
    """A fresh run's settings: the model's recipe under the flags given (see common.cli.settle_config)."""
    return settle_config(args, RECIPES[args.model], {"model": args.model})


def prepare(chunk, device):
    return normalize(chunk.to(device)).contiguous(memory_format=torch.channels_last)


def predict(model, images, device, config, shift=None):
    """Softmax probabilities (float32) of `model` on uint8 `images`, in the run's precision: the mean over
    the test-time views (see q1_fashion.data.test_views; `shift` overrides the run's tta_shift)."""
    views = test_views(config["tta"], config["tta_shift"] if shift is None else shift)
    total = 0
    for flip, dy, dx in views:
        total = total + predict_softmax(model, translate(images, dy, dx, flip), lambda chunk: prepare(chunk, device),
                                        1000, precision=config["precision"])
    return total / len(views)


def evaluate(model, images, labels, device, config, shift=None):
    """(softmax probabilities, accuracy %, per-class accuracy %) of `model` on `images`."""
    probabilities = predict(model, images, device, config, shift)
    predicted = probabilities.argmax(axis=1)
    labels = labels.numpy()
    return probabilities, accuracy(predicted, labels), per_class_accuracy(predicted, labels, len(CLASSES))


def main(argv=None):
    args = parse_args(argv)
    switches = "".join(" " + flag(key, value) for key, value in given(args, FAMILY_KEYS).items())
    hint = f"train first: python q1_fashion/train.py --model {args.model}{switches}" + (" --final" * bool(args.final))
    device, out_dir, checkpoint_dir, saved, config = start_run(args, RECIPES[args.model], {"model": args.model},
                                                               hint, eval_keys=("tta", "tta_shift"))

    images, labels = load_fashion_mnist(args.data_dir)
    secret_images = load_secret_test(args.data_dir)
    train_index, val_index = split_indices(len(images))
    if config["final"]:  # the recipe is fixed: train on every labelled image, val included
        train_index = torch.arange(len(images))
    train_index = train_index[:config["limit"]]
    # The training set lives on the device as uint8; batches are indexed, augmented and normalised there.
    train_images, train_labels = images[train_index].to(device), labels[train_index].to(device)
    # Val and secret test too (5,000 and 2,000 small images): prediction needs no transfers but the outputs.
    val_images, val_labels, secret_images = images[val_index].to(device), labels[val_index], secret_images.to(device)
    print(f"train {len(train_index)} images (indices 0..{len(train_index) - 1}), "
          f"val {len(val_index)} (from {val_index[0].item()}{', also trained on: --final' * config['final']}), "
          f"secret test {len(secret_images)}")

    model = build_model(config).to(device, memory_format=torch.channels_last)
    describe_model(model, (1, 28, 28), out_dir)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
    config["precision"] = choose_precision(args.precision, saved and saved["config"].get("precision"), device)

    if not args.eval_only:
        steps_per_epoch = len(batch_bounds(len(train_images), config["batch_size"]))
        optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                    nesterov=config["nesterov"] and config["momentum"] > 0,
                                    weight_decay=config["weight_decay"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_schedule(config["schedule"], steps_per_epoch * config["epochs"]))
        ema = WeightAverage(model, config["ema_decay"]) if config["ema_decay"] else None
        scaler = make_scaler(config["precision"], device)

        def run_epoch(epoch):
            return train_one_epoch(
                model, batches(train_images, train_labels, config["batch_size"], augmented=config["augment"]),
                optimizer, scheduler, loss_fn, num_batches=steps_per_epoch, desc=f"epoch {epoch}", ema=ema,
                precision=config["precision"], scaler=scaler)

        def validate():  # with the mirror image, not the shifted views: a tenth of the final evaluation's cost
            _, val_accuracy, _ = evaluate(ema.module if ema else model, val_images, val_labels, device, config, 0)
            return {"val_accuracy": val_accuracy}

        final = config["final"]
        fit(model, optimizer, scheduler, config=config, checkpoint_dir=checkpoint_dir, run_epoch=run_epoch,
            evaluate=None if final else validate, score_key=None if final else "val_accuracy",
            resume_state=saved if args.resume else None, ema=ema, scaler=scaler)

    state, history = load_finished_run(checkpoint_dir, hint, final=config["final"])
    load_weights(model, prediction_weights(state), checkpoint_dir)
    val_probabilities, val_accuracy, val_per_class = evaluate(model, val_images, val_labels, device, config)
    print(f"{'last' if config['final'] else 'best'} checkpoint: epoch {state['epoch']}"
          f", {len(test_views(config['tta'], config['tta_shift']))} test-time view(s), {config['precision']}")
    if config["final"]:
        print("NOTE: --final trained on the val images too, so the val accuracy below is not a held-out figure")
    print(format_classification(val_accuracy, val_per_class, CLASSES))

    save_npy(out_dir / PREDICTIONS, predict(model, secret_images, device, config).astype("float32"))
    save_npy(out_dir / VAL_PREDICTIONS, val_probabilities.astype("float32"))
    write_json(out_dir / "metrics.json", {
        "model": config["model"],
        "params": count_parameters(model),
        **run_fields(state, history),
        "final": config["final"],
        "precision": config["precision"],
        "val_accuracy": val_accuracy,
        "val_per_class": dict(zip(CLASSES, val_per_class.tolist(), strict=True)),
        "history": history_without_timing(history),
        "config": config,
    })
    plot_curves(history, [("train_loss", "train loss"), ("val_accuracy", "val accuracy (%)")],
                out_dir / "curves.png", title=f"Q1 {config['model']}")
    predicted, truth = val_probabilities.argmax(axis=1), val_labels.numpy()
    plot_confusion(confusion_matrix(predicted, truth, len(CLASSES)), CLASSES, out_dir / "confusion.png",
                   title=f"Q1 {config['model']}: val confusion matrix, rows normalised")
    plot_misclassified(val_images.cpu().numpy(), truth, predicted, CLASSES, out_dir / "misclassified.png")
    print(f"wrote {out_dir / PREDICTIONS} (upload this), {out_dir / 'metrics.json'}, curves.png, confusion.png, "
          f"misclassified.png; checkpoints in {checkpoint_dir}")


if __name__ == "__main__":
    run_cli(main)
