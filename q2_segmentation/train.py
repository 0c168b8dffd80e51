"""Train a semantic segmenter on the course's COCO subset, report AP/IoU, write the autograder file.

    python q2_segmentation/train.py                                   # --backbone auto, improved head
    python q2_segmentation/train.py --backbone efficientnet_lite0     # pretrained weights that ship with pip
    python q2_segmentation/train.py --model baseline                  # 1x1 conv + x32 bilinear upsampling
    python q2_segmentation/train.py --resume | --eval-only | --final
"""
from common.command import quiet_start  # first: Ctrl-C while the imports below load is one line

quiet_start(__name__)

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.checkpoint import weights_to_predict_with
from common.command import UserError, run_cli
from common.device import optimizer_kernels
from common.files import save_npy
from common.folders import claim, open_folders
from common.metrics import format_segmentation, quantize_probabilities, segmentation_scores
from common.plotting import plot_curves, plot_per_class, plot_segmentation_examples
from common.predict import predict
from common.record import announce, data_record, describe_model, evaluated_elsewhere, write_record
from common.settings import (
    AUTO,
    Parser,
    Question,
    add_run_arguments,
    at_least_one,
    non_negative_float,
    positive_int,
    probability,
    reject_switches,
    resolve,
)
from common.training import batch_bounds, save_epoch, seed_everything, start_or_resume, train_one_epoch
from q2_segmentation.data import (
    CLASSES,
    IMAGE_SIZE,
    Split,
    batches,
    describe_views,
    load_split,
    read_classes,
    views,
)
from q2_segmentation.losses import LOSSES, make_loss
from q2_segmentation.models import (
    BACKBONES,
    FROZEN_BN,
    IMPROVED_KEYS,
    LADDER_KEYS,
    MODELS,
    build_model,
    describe_head,
    freeze,
)
from q2_segmentation.weights import choose_backbone, imagenet_weights

PREDICTIONS = "Q2_sseg_predictions.npy"
VAL_PREDICTIONS = "Q2_sseg_val_predictions.npy"
PREDICT_BATCH = 32  # images per forward pass when predicting, by default (eval mode: any tail size is fine)
# The reference report's published (mean AP, mean IoU), which the report and per_class.png compare against
REFERENCE_REPORT = {"baseline": {"val": (0.75, 0.51)}, "best": {"val": (0.79, 0.58), "test": (0.73, 0.53)}}

# One recipe for the report's heads; the improved head overrides a few entries. A flag beats both.
RECIPE = dict(
    optimizer="AdamW",
    epochs=20,
    batch_size=16,
    lr=1e-3,             # the heads' rate; one-cycle peak
    trunk_lr_scale=0.1,  # the pretrained trunk learns at a tenth of the head's rate, so ImageNet features survive
    freeze_stride=0,     # train the whole trunk
    frozen_bn="fixed",   # frozen layers keep ImageNet's BatchNorm statistics (detectron2's FrozenBatchNorm)
    weight_decay=1e-4,
    schedule="onecycle",
    augment=True,        # joint horizontal flips of image and mask (the report's augmentation)
    max_scale=1.0,
    min_scale=1.0,
    color=0.0,
    crop=None,           # train on whole images
    low_res=None,        # every epoch at 224: half the epochs at 160 lost 0.025 mIoU (see epoch_augmentation)
    low_res_share=0.5,   # with low_res: the share of the epochs, the first ones, trained at low_res pixels
    loss="ce",
    loss_weight=1.0,
    ema_decay=0.0,
    tta=False,
    tta_scales=[1.0],
    val_every=1,         # validate every epoch (the best epoch's checkpoint predicts)
)
RECIPES = {
    "baseline": RECIPE,
    # the ablation's switches, all off; 512 channels as the report's head (ablate.py narrows it for a CPU)
    "ladder": dict(RECIPE, dilated=False, batchnorm=False, stepwise=False, ladder_width=512),
    "report_best": RECIPE,
    "improved": dict(
        RECIPE,
        # Each value's evidence: docs/performance.md (the Q2 tables), on EfficientNet-Lite0 over 3 seeds.
        epochs=17,            # what fits 20 minutes on the slowest machine of this kind (AVX2 EPYC, fp32)
        trunk_lr_scale=0.3,   # the trunk's later stages adapt faster than at 0.1x
        freeze_stride=4,      # the stride-2/4 stages stay ImageNet's (BatchNorm statistics: --frozen-bn); faster steps
        max_scale=1.5,        # random enlargement up to 1.5x
        min_scale=0.75,       # and shrinking to 0.75x in a grey frame the loss ignores: objects at many sizes
        color=0.2,            # brightness/contrast/saturation jitter of +-20 %
        loss="ce+lovasz",     # a Lovasz term optimises IoU directly and lifts the rare classes
        ema_decay=0.99,       # validate and predict with a weight average
        tta=True,             # flip test-time augmentation
        # and at four scales: +0.010 mAP, +0.004 mIoU over val and a holdout, about 50 s on an AVX-512 EPYC
        tta_scales=[0.75, 1.0, 1.25, 1.5],
        stride4_refine=False,  # the head's 3x3 block at stride 4 left out: its quarter of a step buys 3 epochs
        val_every=7,          # twice a run, for the curve: the time goes into epochs
    ),
}


def parse_args(argv=None):
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=("auto", *BACKBONES),
                        help="trunk; auto (default): resnet18 when its ImageNet weights are at hand, else the best "
                             "offline trunk; with --resume and --eval-only, the checkpoint's")
    parser.add_argument("--model", choices=MODELS,
                        help="head: baseline (1x1 conv), report_best (the report's dilated ladder), "
                             "ladder (the ablation's switches below), improved (default)")
    parser.add_argument("--weights", type=Path, help="load the trunk's ImageNet weights from this state-dict file")
    parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction,
                        help="start from ImageNet weights (default) or train the trunk from scratch")
    run = add_run_arguments(parser, "q2_segmentation", "predict on each image and its mirror image, averaging the "
                                                       "softmaxes of the mirrored-back maps (at each --tta-scales)",
                            PREDICT_BATCH)
    run.add_argument("--trunk-lr-scale", type=non_negative_float, help="the trunk's learning rate relative to --lr")
    run.add_argument("--ema-decay", type=probability,
                     help="validate and predict with a moving average of the weights (0: off)")
    run.add_argument("--freeze-stride", type=int, choices=(0, 4, 8, 16),
                     help="keep the trunk's ImageNet layers up to this stride fixed (0: train them all)")
    run.add_argument("--frozen-bn", choices=FROZEN_BN,
                     help="the frozen layers' BatchNorm: fixed (ImageNet's statistics, default) or moving "
                          "(normalise by each batch and move the statistics)")
    run.add_argument("--val-every", type=positive_int, help="validate every N epochs and at the end")
    run.add_argument("--loss", choices=LOSSES, help="cross-entropy, or cross-entropy plus a Dice or Lovász term")
    run.add_argument("--loss-weight", type=non_negative_float, help="the weight of the Dice or Lovász term")
    run.add_argument("--tta-scales", type=scales,
                     help="with --tta, also predict at these scales, e.g. 0.75,1,1.25 (per-epoch validation: 1)")
    switches = parser.add_argument_group("ablation switches (augmentation: any head; the rest: the head named)")
    switches.add_argument("--augment", action=argparse.BooleanOptionalAction,
                          help="random horizontal flips of image and mask together")
    switches.add_argument("--max-scale", type=at_least_one,
                          help="with --augment, also resize each batch by a random factor up to this and crop")
    switches.add_argument("--min-scale", type=probability_or_one,
                          help="with --augment, the smallest such factor; below 1 the image is framed in grey, "
                               "whose pixels the loss ignores")
    switches.add_argument("--color", type=probability,
                          help="with --augment, scale brightness, contrast and saturation by up to 1 +- this")
    switches.add_argument("--crop", type=crop_size,
                          help="with --augment, train on random windows of this many pixels a side (prediction "
                               "always sees whole images)")
    switches.add_argument("--low-res", type=crop_size, metavar="PIXELS",
                          help="with --augment, train the first --low-res-share of the epochs on the augmented "
                               "images scaled down to this many pixels a side (progressive resizing: cheaper "
                               "early epochs; the last ones and prediction at 224)")
    switches.add_argument("--low-res-share", type=probability,
                          help="with --low-res, the share of the epochs trained at low resolution (default 0.5)")
    for key, help_text in zip(LADDER_KEYS, ("three 3x3 dilation-2 conv blocks", "BatchNorm in those blocks",
                                            "upsample x2, x4 between the blocks"), strict=False):
        switches.add_argument(f"--{key}", action=argparse.BooleanOptionalAction, help=f"--model ladder: {help_text}")
    switches.add_argument("--ladder-width", type=positive_int,
                          help="--model ladder: channels of those blocks (default 512, the report's; a CPU trains "
                               "128 far faster)")
    switches.add_argument("--stride4-refine", action=argparse.BooleanOptionalAction,
                          help="--model improved: a 3x3 conv block after adding the stride-4 map (default: "
                               "without, the sum goes straight to the classifier)")
    args = parser.parse_args(argv)
    reject_switches(parser, args, LADDER_KEYS, "ladder", "improved")
    reject_switches(parser, args, IMPROVED_KEYS, "improved", "improved")
    if args.low_res is not None and args.augment is False:
        parser.error("--low-res scales the augmented images: it needs --augment")
    if args.weights and args.pretrained is False:
        parser.error("--weights and --no-pretrained contradict each other")
    return args


def scales(text):
    """'0.75,1,1.25' -> [0.75, 1.0, 1.25]: the test-time scales."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas, got {text}") from None
    if not values or any(not 0.25 <= value <= 4 for value in values):
        raise argparse.ArgumentTypeError(f"scales must lie in [0.25, 4], got {text}")
    return values


def crop_size(text):
    value = int(text)
    if not 32 <= value <= IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be an integer in [32, {IMAGE_SIZE}], got {text}")
    return value


def probability_or_one(text):
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


QUESTION = Question(
    name="q2_segmentation", script="q2_segmentation/train.py", recipes=RECIPES, default_model="improved",
    evaluation={"tta": False, "tta_scales": [1.0]},  # the test-time views; without --tta: scale 1 only
    switches=LADDER_KEYS + IMPROVED_KEYS,
    identity={"backbone": AUTO, "pretrained": True, "weights": None},  # the trunk, and its first weights
    named_by=("backbone", "model"),  # results/q2_segmentation/<trunk>_<head>...
    choices={"backbone": BACKBONES},  # --backbone auto with --resume, --eval-only: the trunk of the run found
    outputs=(PREDICTIONS, VAL_PREDICTIONS, "per_class.png", "vis_val.png"),
)


def with_trunk(args):
    """The flags, a fresh run's --backbone auto replaced by the trunk it stands for (printed with its reason);
    --resume and --eval-only keep auto: the checkpoint's trunk, whichever folder holds it."""
    if not (args.resume or args.eval_only):
        args.backbone = choose_backbone(args.backbone or AUTO, args.weights, args.pretrained is not False)
    return args


@dataclass
class Data:
    train: Split  # on the device
    val: Split    # images on the device, labels on the CPU
    test: Split
    val_cpu_images: torch.Tensor  # for the figures
    record: dict          # what metrics.json records of this data (common.record.data_record)
    joined: bool = False  # val trained on (--final)

    @property
    def train_size(self):
        return len(self.train.names)


def load_data(run, data_dir):
    """The course's splits decoded into uint8 tensors on the run's device: the whole training set (700
    images: 105 MB) is indexed, augmented and normalised there with no per-batch transfer; prediction
    transfers nothing but its outputs."""
    read_classes(data_dir)
    train = load_split(data_dir, "train", None)
    val, test = load_split(data_dir, "val"), load_split(data_dir, "test")
    limit = run.options["limit"]
    joined = run.final and (limit is None or limit > len(train.names))
    if run.final:  # the recipe is fixed: train on every labelled image, val included
        train = Split(train.names + val.names, torch.cat([train.images, val.images]),
                      torch.cat([train.labels, val.labels]))
    holdout = run.options["holdout"]
    if holdout:  # tuning: the last N training images validate; val stays unseen
        if holdout > len(train.names) - 2:
            raise UserError(f"--holdout {holdout}: there are {len(train.names)} training images, and at least 2 "
                            "must remain to train on")
        val = Split(train.names[-holdout:], train.images[-holdout:], train.labels[-holdout:])
        train = Split(train.names[:-holdout], train.images[:-holdout], train.labels[:-holdout])
    train = Split(train.names[:limit], train.images[:limit], train.labels[:limit])
    print(f"train {len(train.names)} images{' (train + val: --final)' * joined}"
          f"{' (--final, but --limit keeps val out)' * (run.final and not joined)}, "
          f"{'holdout (the last training images, in place of val)' if holdout else 'val'} {len(val.names)}, "
          f"test {len(test.names)} (decoded into memory)")
    device = run.device
    record = data_record(data_dir, {"train": len(train.names), "val": len(val.names), "test": len(test.names)},
                         "holdout" if holdout else "val", val.images, val.labels)
    return Data(Split(train.names, train.images.to(device), train.labels.to(device)),
                Split(val.names, val.images.to(device), val.labels), Split(test.names, test.images.to(device)),
                val.images, record, joined)


def build(run, imagenet=None):
    """The run's network on its device, its trunk starting from `imagenet` (None: random weights; resuming or
    evaluating overwrites every weight from the checkpoint), its early trunk stages frozen as the recipe says."""
    model = build_model(run.recipe, imagenet).to(run.device, memory_format=torch.channels_last)
    # before the summary, so its trainable count is true
    freeze(model.trunk, run.recipe["freeze_stride"], run.recipe["frozen_bn"])
    return model


def make_optimizer(model, run):
    """AdamW with two groups: the trainable trunk at trunk_lr_scale times the head's rate, and the head; with
    the run's device's kernels."""
    recipe, device = run.recipe, run.device
    trunk_params = [p for p in model.trunk.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": trunk_params, "lr": recipe["lr"] * recipe["trunk_lr_scale"]},
                              {"params": list(model.head.parameters()), "lr": recipe["lr"]}],
                             weight_decay=recipe["weight_decay"], **optimizer_kernels(device))


def loss_function(recipe):
    return make_loss(recipe["loss"], recipe["loss_weight"])


def epoch_batches(data, recipe, epoch, normalize):
    """The training batches of `epoch` (1-based): shuffled, augmented as the recipe says at the resolution of
    that epoch (see epoch_augmentation), then normalised for the trunk (`normalize`, the model's)."""
    max_scale, min_scale, crop = epoch_augmentation(recipe, epoch)
    return batches(data.train, recipe["batch_size"], normalize, recipe["augment"], max_scale, min_scale,
                   recipe["color"], crop)


def evaluate(model, split, run, validation=False):
    """(uint8 floor(softmax x 255) for every image, per-class AP, per-class IoU), the scores computed on exactly
    those bytes (None without labels).

    The final evaluation's AP takes the course's own tie order, as the checker computes it, over every test-time
    scale; the per-epoch validation (`validation`) the faster stable order at scale 1.
    """
    tta = run.evaluation["tta"]
    scales = run.evaluation["tta_scales"] if tta and not validation else [1.0]
    probabilities = predict(model, split.images, views(model.normalize, tta, scales), run.predict_batch_size,
                            run.precision)
    quantized = quantize_probabilities(probabilities)
    if split.labels is None:
        return quantized, None, None
    ap, iou = segmentation_scores(quantized, split.labels.numpy(), len(CLASSES), exact=not validation)
    return quantized, ap, iou


def validate(model, data, run):
    """The per-epoch validation's figures."""
    _, ap, iou = evaluate(model, data.val, run, validation=True)
    return {"val_mAP": float(ap.mean()), "val_mIoU": float(iou.mean())}


def low_res_epochs(recipe):
    """How many of the first epochs train at low resolution: floor(low_res_share x epochs), 0 without low_res."""
    if not recipe.get("low_res"):
        return 0
    return math.floor(recipe["low_res_share"] * recipe["epochs"] + 1e-9)  # 0.29 x 100 = 28.999999999999996: 29


def describe_low_res(recipe):
    """The progressive resizing of these settings, in words (empty without it): the report's training line."""
    count = low_res_epochs(recipe)
    return f", epochs 1-{count} of {recipe['epochs']} at {recipe['low_res']} pixels" if count else ""


def epoch_augmentation(recipe, epoch):
    """The augmentation of `epoch` (1-based) as batches() takes it: (max_scale, min_scale, crop).

    Progressive resizing: with `low_res`, the first floor(low_res_share x epochs) epochs train on the
    augmented batch scaled down by r = low_res / 224 (the random scales times r, the window --crop or 224
    times r), the same augmented images at lower resolution for about r^2 of the time; the later epochs, and
    every prediction, see full resolution, so the network ends trained at the size it predicts at.
    """
    if epoch > low_res_epochs(recipe):
        return recipe["max_scale"], recipe["min_scale"], recipe["crop"]
    ratio = recipe["low_res"] / IMAGE_SIZE
    return recipe["max_scale"] * ratio, recipe["min_scale"] * ratio, round((recipe["crop"] or IMAGE_SIZE) * ratio)


def write_outputs(run, model, data, result):
    """Evaluate `model` (the weights `result` says predict) on val and test; write the prediction files,
    metrics.json and the figures."""
    out_dir, recipe = run.out_dir, run.recipe
    val_scores, ap, iou = evaluate(model, data.val, run)
    announce(run, result, describe_views(run.evaluation), seen_val=data.joined)
    print(format_segmentation(ap, iou, CLASSES))
    test_scores, _, _ = evaluate(model, data.test, run)
    save_npy(out_dir / PREDICTIONS, test_scores)
    save_npy(out_dir / VAL_PREDICTIONS, val_scores)
    write_record(run, model, result, describe_views(run.evaluation), {
        "backbone": recipe["backbone"],
        "head": describe_head(recipe),
        "val_mAP": float(ap.mean()),
        "val_mIoU": float(iou.mean()),
        "val_ap": dict(zip(CLASSES, ap.tolist(), strict=True)),
        "val_iou": dict(zip(CLASSES, iou.tolist(), strict=True)),
    })
    title = f"Q2 {recipe['backbone']} {recipe['model']}"
    plot_curves(result.history, [("train_loss", "train loss"), ("val_mAP", "val mAP"), ("val_mIoU", "val mIoU")],
                out_dir / "curves.png", title=title)
    best = REFERENCE_REPORT["best"]
    plot_per_class(CLASSES, [("AP (val)", ap), ("IoU (val)", iou)], out_dir / "per_class.png",
                   references=[("reference report, mean AP val", best["val"][0]),
                               ("reference report, mean IoU val", best["val"][1]),
                               ("reference report, mean AP test", best["test"][0]),
                               ("reference report, mean IoU test", best["test"][1])],
                   title=f"{title}: per class, val")
    shown = np.arange(min(5, len(data.val.names)))
    plot_segmentation_examples(data.val_cpu_images[shown].permute(0, 2, 3, 1).numpy(), data.val.labels[shown].numpy(),
                               val_scores[shown].argmax(axis=1), CLASSES, out_dir / "vis_val.png")
    print(f"wrote {out_dir / PREDICTIONS} (upload this), {out_dir / 'metrics.json'}, curves.png, per_class.png, "
          f"vis_val.png; checkpoints in {run.checkpoint_dir}")


def main(argv=None):
    """Train (or with --resume continue, with --eval-only only evaluate) and write the outputs. Returns the Run."""
    args = with_trunk(parse_args(argv))
    run = resolve(args, QUESTION)  # the recipe, under the checkpoint (--resume, --eval-only), under the flags
    recipe = run.recipe
    imagenet = None  # a resumed or evaluated run's every weight comes from its checkpoint
    if run.mode == "train":  # a fresh run's trunk starts from ImageNet's weights, read and checked before the run
        imagenet = imagenet_weights(recipe["backbone"], recipe["weights"], recipe["pretrained"])
    with open_folders(run):  # locked; a folder of another run is refused before anything is touched
        seed_everything(run.options["seed"])
        data = load_data(run, args.data_dir)
        run.data, run.trained_on = data.record, evaluated_elsewhere(run, data.record)
        model = build(run, imagenet)
        claim(run)  # every check has passed: only now does --overwrite delete the run it replaces
        describe_model(model, (3, IMAGE_SIZE, IMAGE_SIZE), run.out_dir)
        if run.trains:
            steps = len(batch_bounds(data.train_size, recipe["batch_size"]))
            training = start_or_resume(run, model, make_optimizer(model, run), steps, score="val_mIoU",
                                       val_every=recipe["val_every"])
            loss_fn = loss_function(recipe)
            for epoch in training.epochs():
                loss = train_one_epoch(training, epoch_batches(data, recipe, epoch, model.normalize), loss_fn, epoch)
                figures = validate(training.averaged, data, run) if training.validates(epoch) else {}
                save_epoch(training, epoch, loss, figures)
        result = weights_to_predict_with(run, model)  # best.pt's weight average; --final: last.pt's
        write_outputs(run, model, data, result)
    return run


if __name__ == "__main__":
    run_cli(main)
