"""Train a semantic segmenter on the course's COCO subset, report AP/IoU, write the autograder file.

    python q2_segmentation/train.py                                   # ResNet18 trunk, improved head
    python q2_segmentation/train.py --backbone efficientnet_lite0     # pretrained weights that ship with pip
    python q2_segmentation/train.py --model baseline                  # 1x1 conv + x32 bilinear upsampling
    python q2_segmentation/train.py --resume | --eval-only
"""
import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.checkpoint import load_checkpoint
from common.cli import (
    add_run_arguments,
    apply_recipe,
    at_least_one,
    non_negative_float,
    positive_int,
    reject_switches,
    resolve_run_paths,
)
from common.metrics import format_segmentation, quantize_probabilities, segmentation_scores
from common.plotting import plot_curves, plot_segmentation_examples
from common.runtime import count_parameters, describe_model, run_cli, save_npy, start_run, write_json
from common.training import (
    fit,
    history_without_timing,
    load_finished_run,
    lr_schedule,
    predict_softmax,
    run_fields,
    train_one_epoch,
)
from q2_segmentation.data import CLASSES, batches, load_split, read_classes
from q2_segmentation.models import BACKBONES, LADDER_KEYS, MODELS, FlipAveraged, build_model, describe_head

PREDICTIONS = "Q2_sseg_predictions.npy"
VAL_PREDICTIONS = "Q2_sseg_val_predictions.npy"

# One recipe for the report's heads; the improved head overrides a few entries. A flag beats both.
RECIPE = dict(
    optimizer="AdamW",
    epochs=20,
    batch_size=16,
    lr=1e-3,             # the heads' rate; one-cycle peak
    trunk_lr_scale=0.1,  # the pretrained trunk learns at a tenth of the head's rate, so ImageNet features survive
    weight_decay=1e-4,
    schedule="onecycle",
    augment=True,        # joint horizontal flips of image and mask (the report's augmentation)
    max_scale=1.0,
    tta=False,
)
RECIPES = {
    "baseline": RECIPE,
    "ladder": RECIPE,
    "report_best": RECIPE,
    "improved": dict(
        RECIPE,
        epochs=24,      # 40 epochs peaked at epoch 17 (0.6025 mIoU) and settled near 0.594
        max_scale=1.5,  # random enlargement up to 1.5x: flips alone plateaued near 0.57 mIoU
        tta=True,       # flip test-time augmentation: +0.011 mAP, +0.009 mIoU on the same checkpoint
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=BACKBONES, default="resnet18", help="trunk (default: resnet18)")
    parser.add_argument("--model", choices=MODELS, default="improved",
                        help="head: baseline (1x1 conv), report_best (the report's dilated ladder), "
                             "ladder (the ablation's switches below), improved (default)")
    parser.add_argument("--weights", type=Path, help="load the trunk's ImageNet weights from this state-dict file")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                        help="start from ImageNet weights (default) or train the trunk from scratch")
    run = add_run_arguments(parser, "q2_segmentation")
    run.add_argument("--trunk-lr-scale", type=non_negative_float, help="the trunk's learning rate relative to --lr")
    run.add_argument("--val-every", type=positive_int, default=1, help="validate every N epochs and at the end")
    switches = parser.add_argument_group("ablation switches (augmentation: any head; the rest: --model ladder)")
    switches.add_argument("--augment", action=argparse.BooleanOptionalAction,
                          help="random horizontal flips of image and mask together")
    switches.add_argument("--tta", action=argparse.BooleanOptionalAction,
                          help="evaluate and predict on each image and its mirror, averaging the softmax")
    switches.add_argument("--max-scale", type=at_least_one,
                          help="with --augment, also enlarge each batch by a random factor up to this and crop")
    for key, help_text in zip(LADDER_KEYS, ("three 3x3 dilation-2 conv blocks", "BatchNorm in those blocks",
                                            "upsample x2, x4 between the blocks"), strict=True):
        switches.add_argument(f"--{key}", action=argparse.BooleanOptionalAction, help=help_text)
    args = parser.parse_args(argv)
    reject_switches(parser, args, LADDER_KEYS, "ladder")
    if args.weights and not args.pretrained:
        parser.error("--weights and --no-pretrained contradict each other")
    resolve_run_paths(args, "q2_segmentation", f"{args.backbone}_{args.model}")
    return args


def make_config(args):
    config = {"backbone": args.backbone, "model": args.model, "seed": args.seed, "limit": args.limit,
              "pretrained": args.pretrained, "weights": str(args.weights) if args.weights else None}
    if args.model == "ladder":
        config.update({key: bool(getattr(args, key)) for key in LADDER_KEYS})
    return apply_recipe(args, RECIPES[args.model], config)


def evaluate(model, split, device, tta=False, batch_size=32):
    """uint8 floor(softmax x 255) for every image, with per-class AP and IoU computed on exactly those."""
    predictor = FlipAveraged(model) if tta else model
    probabilities = predict_softmax(predictor, split.images, lambda chunk: model.normalize(chunk.to(device)),
                                    batch_size)
    quantized = quantize_probabilities(probabilities)
    if split.labels is None:
        return quantized, None, None
    ap, iou = segmentation_scores(quantized, split.labels.numpy(), len(CLASSES))
    return quantized, ap, iou


def main(argv=None):
    args = parse_args(argv)
    config = make_config(args)
    device, out_dir, checkpoint_dir = start_run(args, config["seed"])

    read_classes(args.data_dir)
    train = load_split(args.data_dir, "train", args.limit)
    val, test = load_split(args.data_dir, "val"), load_split(args.data_dir, "test")
    print(f"train {len(train.names)} images, val {len(val.names)}, test {len(test.names)} (decoded into memory)")

    # Resuming or evaluating overwrites every weight from the checkpoint: skip fetching ImageNet weights.
    from_checkpoint = args.eval_only or args.resume
    model = build_model(dict(config, pretrained=False, weights=None) if from_checkpoint else config)
    model = model.to(device, memory_format=torch.channels_last)
    describe_model(model, (3, 224, 224), out_dir)
    expect = {"backbone": config["backbone"], "model": config["model"]}
    hint = f"train first: python q2_segmentation/train.py --backbone {config['backbone']} --model {config['model']}"

    if not args.eval_only:
        steps_per_epoch = math.ceil(len(train.names) / config["batch_size"])
        trunk_params = list(model.trunk.parameters())
        head_params = list(model.head.parameters())
        optimizer = torch.optim.AdamW(
            [{"params": trunk_params, "lr": config["lr"] * config["trunk_lr_scale"]},
             {"params": head_params, "lr": config["lr"]}], weight_decay=config["weight_decay"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_schedule(config["schedule"], steps_per_epoch * config["epochs"]))
        loss_fn = nn.CrossEntropyLoss()
        resume_state = load_checkpoint(checkpoint_dir / "last.pt", expect, hint) if args.resume else None

        def run_epoch(epoch):
            return train_one_epoch(
                model, batches(train, config["batch_size"], model.normalize, config["augment"], device,
                               config["max_scale"]),
                optimizer, scheduler, loss_fn, num_batches=steps_per_epoch, desc=f"epoch {epoch}")

        def validate():
            _, ap, iou = evaluate(model, val, device, config["tta"])
            return {"val_mAP": float(ap.mean()), "val_mIoU": float(iou.mean())}

        fit(model, optimizer, scheduler, config=config, checkpoint_dir=checkpoint_dir, run_epoch=run_epoch,
            evaluate=validate, score_key="val_mIoU", resume_state=resume_state, eval_every=args.val_every)

    best, history = load_finished_run(checkpoint_dir, expect, hint)
    model.load_state_dict(best["model"])
    val_scores, ap, iou = evaluate(model, val, device, config["tta"])
    print(f"best checkpoint: epoch {best['epoch']}")
    print(format_segmentation(ap, iou, CLASSES))
    test_scores, _, _ = evaluate(model, test, device, config["tta"])
    save_npy(out_dir / PREDICTIONS, test_scores)
    save_npy(out_dir / VAL_PREDICTIONS, val_scores)
    write_json(out_dir / "metrics.json", {
        "backbone": config["backbone"],
        "model": config["model"],
        "head": describe_head(config),
        "params": count_parameters(model),
        **run_fields(best, history),
        "val_mAP": float(ap.mean()),
        "val_mIoU": float(iou.mean()),
        "val_ap": dict(zip(CLASSES, ap.tolist(), strict=True)),
        "val_iou": dict(zip(CLASSES, iou.tolist(), strict=True)),
        "history": history_without_timing(history),
        "config": best["config"],
    })
    plot_curves(history, [("train_loss", "train loss"), ("val_mAP", "val mAP"), ("val_mIoU", "val mIoU")],
                out_dir / "curves.png", title=f"Q2 {config['backbone']} {config['model']}")
    shown = np.arange(min(5, len(val.names)))
    plot_segmentation_examples(val.images[shown].permute(0, 2, 3, 1).numpy(), val.labels[shown].numpy(),
                               val_scores[shown].argmax(axis=1), CLASSES, out_dir / "vis_val.png")
    print(f"wrote {out_dir / PREDICTIONS} (upload this), {out_dir / 'metrics.json'}, curves.png, vis_val.png; "
          f"checkpoints in {checkpoint_dir}")


if __name__ == "__main__":
    run_cli(main)
