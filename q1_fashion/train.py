"""Train a Fashion-MNIST classifier, report the course's val numbers, write the autograder file.

    python q1_fashion/train.py                      # the improved model with its best recipe
    python q1_fashion/train.py --model basenet      # the assignment's BaseNet
    python q1_fashion/train.py --resume             # continue from last.pt
    python q1_fashion/train.py --eval-only          # evaluate best.pt and write predictions
"""
import argparse
import math

import torch
from torch import nn

from common.checkpoint import load_checkpoint, prediction_weights
from common.cli import add_run_arguments, apply_recipe, positive_int, probability, reject_switches, resolve_run_paths
from common.metrics import accuracy, format_classification, per_class_accuracy
from common.plotting import plot_curves
from common.runtime import count_parameters, describe_model, run_cli, save_npy, start_run, write_json
from common.training import (
    fit,
    history_without_timing,
    load_finished_run,
    lr_schedule,
    make_ema,
    predict_softmax,
    run_fields,
    train_one_epoch,
)
from q1_fashion.data import CLASSES, batches, load_fashion_mnist, load_secret_test, normalize, split_indices
from q1_fashion.models import FAMILY_KEYS, MODELS, build_model

PREDICTIONS = "Q1_label_predictions.npy"
VAL_PREDICTIONS = "Q1_val_label_predictions.npy"

# Each model's best recipe: a base plus per-model overrides; a flag given on the command line beats both.
# The base is the course starter's training: plain SGD with momentum at a constant rate, no augmentation.
BASE = dict(optimizer="SGD", epochs=10, batch_size=64, lr=0.005, momentum=0.9, nesterov=False, weight_decay=0.0,
            label_smoothing=0.0, schedule="constant", augment=False, ema_decay=0.0)
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
        label_smoothing=0.1,   # the usual 0.1 (Szegedy et al. 2016)
        schedule="onecycle",   # linear warm-up over 15 % of the steps, then cosine to 0
        augment=True,          # 2-pixel shifts and flips; random erasing as well cost 0.4 points (93.42 %)
        ema_decay=0.995,       # predict with a weight average: 92.1 % at epoch 10 instead of 19, same training
        width=32, depth=2, batchnorm=True, dropout=0.2,  # the ablation (q1_fashion/ablate.py) builds up to this
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
    ablation = parser.add_argument_group("ablation switches (augmentation: any model; the rest: --model improved)")
    ablation.add_argument("--augment", action=argparse.BooleanOptionalAction,
                          help="random 2-pixel shifts and horizontal flips while training")
    ablation.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, help="BatchNorm after each layer")
    ablation.add_argument("--dropout", type=probability, help="dropout probability")
    ablation.add_argument("--depth", type=positive_int, help="convolutions per stage")
    ablation.add_argument("--width", type=positive_int, help="channels of the first stage (BaseNet: 6)")
    args = parser.parse_args(argv)
    reject_switches(parser, args, FAMILY_KEYS, "improved")
    resolve_run_paths(args, "q1_fashion", args.model)
    return args


def make_config(args):
    return apply_recipe(args, RECIPES[args.model], {"model": args.model, "seed": args.seed, "limit": args.limit})


def evaluate(model, images, labels, device, batch_size=1000):
    probabilities = predict_softmax(model, images, lambda chunk: prepare(chunk, device), batch_size)
    predicted = probabilities.argmax(axis=1)
    return probabilities, accuracy(predicted, labels.numpy()), per_class_accuracy(predicted, labels.numpy(),
                                                                                len(CLASSES))


def prepare(chunk, device):
    return normalize(chunk.to(device)).contiguous(memory_format=torch.channels_last)


def main(argv=None):
    args = parse_args(argv)
    config = make_config(args)
    device, out_dir, checkpoint_dir = start_run(args, config["seed"])

    images, labels = load_fashion_mnist(args.data_dir)
    secret_images = load_secret_test(args.data_dir)
    train_index, val_index = split_indices(len(images))
    train_index = train_index[:args.limit]
    # The training set lives on the device as uint8; batches are indexed, augmented and normalised there.
    train_images, train_labels = images[train_index].to(device), labels[train_index].to(device)
    val_images, val_labels = images[val_index], labels[val_index]
    print(f"train {len(train_index)} images (indices 0..{train_index[-1].item()}), "
          f"val {len(val_index)} (from {val_index[0].item()}), secret test {len(secret_images)}")

    model = build_model(config).to(device, memory_format=torch.channels_last)
    describe_model(model, (1, 28, 28), out_dir)
    expect = {key: config[key] for key in ("model",) + (FAMILY_KEYS if config["model"] == "improved" else ())}
    hint = f"train first: python q1_fashion/train.py --model {config['model']}"

    if not args.eval_only:
        steps_per_epoch = math.ceil(len(train_images) / config["batch_size"])
        optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                                    nesterov=config["nesterov"] and config["momentum"] > 0,
                                    weight_decay=config["weight_decay"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_schedule(config["schedule"], steps_per_epoch * config["epochs"]))
        loss_fn = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
        resume_state = load_checkpoint(checkpoint_dir / "last.pt", expect, hint) if args.resume else None
        ema = make_ema(model, config["ema_decay"]) if config["ema_decay"] else None

        def run_epoch(epoch):
            return train_one_epoch(
                model, batches(train_images, train_labels, config["batch_size"], augmented=config["augment"]),
                optimizer, scheduler, loss_fn, num_batches=steps_per_epoch, desc=f"epoch {epoch}", ema=ema)

        def validate():
            _, val_accuracy, _ = evaluate(ema.module if ema else model, val_images, val_labels, device)
            return {"val_accuracy": val_accuracy}

        fit(model, optimizer, scheduler, config=config, checkpoint_dir=checkpoint_dir, run_epoch=run_epoch,
            evaluate=validate, score_key="val_accuracy", resume_state=resume_state, ema=ema)

    best, history = load_finished_run(checkpoint_dir, expect, hint)
    model.load_state_dict(prediction_weights(best))
    val_probabilities, val_accuracy, val_per_class = evaluate(model, val_images, val_labels, device)
    print(f"best checkpoint: epoch {best['epoch']}")
    print(format_classification(val_accuracy, val_per_class, CLASSES))

    test_probabilities = predict_softmax(model, secret_images, lambda chunk: prepare(chunk, device), 1000)
    save_npy(out_dir / PREDICTIONS, test_probabilities.astype("float32"))
    save_npy(out_dir / VAL_PREDICTIONS, val_probabilities.astype("float32"))
    write_json(out_dir / "metrics.json", {
        "model": config["model"],
        "params": count_parameters(model),
        **run_fields(best, history),
        "val_accuracy": val_accuracy,
        "val_per_class": dict(zip(CLASSES, val_per_class.tolist(), strict=True)),
        "history": history_without_timing(history),
        "config": best["config"],
    })
    plot_curves(history, [("train_loss", "train loss"), ("val_accuracy", "val accuracy (%)")],
                out_dir / "curves.png", title=f"Q1 {config['model']}")
    print(f"wrote {out_dir / PREDICTIONS} (upload this), {out_dir / 'metrics.json'}, {out_dir / 'curves.png'}; "
          f"checkpoints in {checkpoint_dir}")


if __name__ == "__main__":
    run_cli(main)
