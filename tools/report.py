"""Regenerate the assignment report from the runs on disk: `cs543-report` (or `python -m tools.report`).

Reads results/ (metrics.json, model.txt, summary.txt, curves.png, vis_val.png, ablation.md and the
prediction files that train.py and ablate.py wrote) and writes results/REPORT.md, whose figures are the
PNGs beside it. Nothing is retrained; a missing run gets a line naming the command that produces it.
"""
import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from common.metrics import format_segmentation
from common.paths import RESULTS_DIR
from common.runtime import run_cli, write_text
from q1_fashion.models import MODELS as Q1_MODELS
from q1_fashion.models import build_model as build_q1_model
from q2_segmentation.models import build_model as build_q2_model
from q2_segmentation.models import describe_head
from tools import check_submission

Q2_HEADS = ("baseline", "report_best", "improved")  # the heads the report discusses; "ladder" is the ablation's
LAYER_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.Dropout, nn.Linear)


def read_run(folder):
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _dims(shape):
    return "x".join(map(str, shape[1:])) if len(shape) == 3 else "-"


def layer_table(model, input_size, modules=None):
    """Markdown rows: layer no, type, kernel, input dim, output dim, input channels, output channels."""
    rows = []

    def hook(module, inputs, output):
        shape_in, shape_out = tuple(inputs[0].shape[1:]), tuple(output.shape[1:])
        kernel = getattr(module, "kernel_size", "")
        kernel = f"{kernel[0]}x{kernel[1]}" if isinstance(kernel, tuple) else (f"{kernel}x{kernel}" if kernel else "")
        dilation = getattr(module, "dilation", (1,))
        if isinstance(module, nn.Conv2d) and dilation[0] > 1:
            kernel += f" (dilation {dilation[0]})"
        rows.append((type(module).__name__, kernel, _dims(shape_in), _dims(shape_out), shape_in[0], shape_out[0]))

    targets = modules if modules is not None else [m for m in model.modules() if isinstance(m, LAYER_TYPES)]
    handles = [m.register_forward_hook(hook) for m in targets]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        model.eval()(torch.zeros(1, *input_size))
    for handle in handles:
        handle.remove()
    lines = ["| layer no | type | kernel | input dim | output dim | input channels | output channels |",
             "|---:|---|---|---|---|---:|---:|"]
    lines += [f"| {i} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(rows, start=1)]
    return "\n".join(lines)


def verdict(path, *extra):
    """The submission checker's output for `path`, as text."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = check_submission.main([str(path), *extra])
    except Exception as error:  # the report states the problem instead of stopping
        return f"INVALID {path}: {error}"
    return buffer.getvalue().strip() + ("" if code == 0 else f"\n(exit code {code})")


def fenced(text):
    return f"```\n{text.rstrip()}\n```"


def image(results, path, caption):
    if not path.is_file():
        return f"_{caption}: missing ({path.name})_"
    return f"![{caption}]({os.path.relpath(path, results)})"


def per_class_table(values, heading):
    lines = [f"| class | {heading} |", "|---|---:|"]
    return "\n".join(lines + [f"| {name} | {value:.2f} |" for name, value in values.items()])


def q1_section(results):
    root = results / "q1_fashion"
    runs = {name: read_run(root / name) for name in Q1_MODELS}
    out = ["## Q1: Fashion-MNIST classification", ""]
    base = runs["basenet"]
    out += ["### BaseNet", ""]
    if base is None:
        out += ["BaseNet run not found: run `python q1_fashion/train.py --model basenet`.", ""]
    else:
        model_txt = root / "basenet" / "model.txt"
        if model_txt.is_file():
            out += [fenced(model_txt.read_text()), ""]
        out += [f"Val accuracy: **{base['val_accuracy']:.2f} %** ({base['epochs']} epochs, {base['params']:,} "
                "parameters)", "", per_class_table(base["val_per_class"], "val accuracy (%)"), ""]
    done = {name: run for name, run in runs.items() if run is not None}
    if not done:
        return out + ["No Q1 run found: run `python q1_fashion/train.py`.", ""]
    best_name = max(done, key=lambda name: done[name]["val_accuracy"])
    best = done[best_name]
    folder = root / best_name
    out += [f"### Best model: `{best_name}`", ""]
    for name in Q1_MODELS:
        if runs[name] is None:
            out.append(f"- `{name}`: not found: run `python q1_fashion/train.py --model {name}`.")
        else:
            out.append(f"- `{name}`: val accuracy {runs[name]['val_accuracy']:.2f} %, {runs[name]['params']:,} "
                       "parameters")
    out += ["", "Layers (the reference report's format):", "",
            layer_table(build_q1_model(best["config"]), (1, 28, 28)), "",
            f"Parameters: **{best['params']:,}**", ""]
    summary = folder / "summary.txt"
    if summary.is_file():
        out += ["torchsummary:", "", fenced(summary.read_text()), ""]
    cfg = best["config"]
    out += [f"Training: {cfg.get('optimizer', 'optimizer not recorded')} (momentum {cfg.get('momentum')}, "
            f"nesterov {cfg.get('nesterov')}), lr {cfg.get('lr')}, "
            f"schedule {cfg.get('schedule')}, batch {cfg.get('batch_size')}, {cfg.get('epochs')} epochs, weight decay "
            f"{cfg.get('weight_decay')}, label smoothing {cfg.get('label_smoothing')}, augmentation (shifts, flips) "
            f"{cfg.get('augment')}; best epoch {best.get('best_epoch')}; {best['train_seconds']} s of training.", "",
            f"Val accuracy: **{best['val_accuracy']:.2f} %**", "",
            per_class_table(best["val_per_class"], "val accuracy (%)"), "",
            image(results, folder / "curves.png", "training curves"), ""]
    out += q_ablation(results, root, "python q1_fashion/ablate.py")
    prediction = folder / "Q1_label_predictions.npy"
    out += ["### Secret test predictions", ""]
    out += ([f"`{prediction}`", "", fenced(verdict(prediction)), ""] if prediction.is_file() else
            [f"`{prediction}` not found: run `python q1_fashion/train.py --model {best_name}`.", ""])
    return out


def q_ablation(results, root, command):
    ablation = root / "ablation.md"
    out = ["### Ablation (each row adds one component to the row above)", ""]
    if not ablation.is_file():
        return out + [f"Not found: run `{command}`.", ""]
    return out + [ablation.read_text().rstrip(), "", image(results, root / "ablation.png", "ablation"), ""]


def q2_section(results):
    root = results / "q2_segmentation"
    out = ["## Q2: semantic segmentation", ""]
    runs = {}
    for folder in sorted(root.glob("*_*")) if root.is_dir() else []:
        run = read_run(folder)
        if run is not None and folder.name != "ablation":
            runs[folder.name] = (folder, run)
    for head in Q2_HEADS:
        if not any(run["model"] == head for _, run in runs.values()):
            out.append(f"- no `{head}` run found: run `python q2_segmentation/train.py --backbone efficientnet_lite0 "
                       f"--model {head}` (or `--backbone resnet18`).")
    if not runs:
        return out + ["", "No Q2 run found: run `python q2_segmentation/train.py`.", ""]
    out += ["", "| run | backbone | head | params | epochs | val mAP | val mIoU |", "|---|---|---|---:|---:|---:|---:|"]
    for name, (_, run) in runs.items():
        out.append(f"| {name} | {run['backbone']} | {run['model']} | {run['params']:,} | {run['epochs']} | "
                   f"{run['val_mAP']:.4f} | {run['val_mIoU']:.4f} |")
    out.append("")
    for name, (folder, run) in runs.items():
        config = run["config"]
        model_config = dict(config, pretrained=False, weights=None)  # introspection only: no weights needed
        model = build_q2_model(model_config)
        head_layers = [m for m in model.head.modules() if isinstance(m, LAYER_TYPES)]
        out += [f"### `{name}`: {run['backbone']} trunk, `{run['model']}` head", "",
                "Upsampling: " + run.get("head", describe_head(config)), "",
                f"Parameters: **{run['params']:,}** (trunk {sum(p.numel() for p in model.trunk.parameters()):,}, "
                f"head {sum(p.numel() for p in model.head.parameters()):,}). Head layers on a 224x224 input:", "",
                layer_table(model, (3, 224, 224), head_layers), "",
                f"Training (from the checkpoint's config): {config.get('optimizer', 'optimizer not recorded')}, "
                f"lr {config.get('lr')} (trunk x"
                f"{config.get('trunk_lr_scale')}), weight decay {config.get('weight_decay')}, schedule "
                f"{config.get('schedule')}, batch {config.get('batch_size')}, {config.get('epochs')} epochs, "
                f"augmentation: horizontal flip {config.get('augment')}, random enlargement up to "
                f"{config.get('max_scale', 1.0)}x; flip test-time augmentation {config.get('tta', False)}; "
                f"ImageNet-pretrained trunk {config.get('weights') or config.get('pretrained')}; "
                f"best epoch {run.get('best_epoch')}; "
                f"{run['train_seconds']} s of training.", "",
                "Val (course format):", "",
                fenced(format_segmentation(list(run["val_ap"].values()), list(run["val_iou"].values()),
                                           list(run["val_ap"]))), "",
                image(results, folder / "curves.png", f"{name} training curves"), "",
                image(results, folder / "vis_val.png", f"{name} val examples"), ""]
        prediction = folder / "Q2_sseg_predictions.npy"
        out += ([f"Test predictions: `{prediction}`", "", fenced(verdict(prediction)), ""] if prediction.is_file()
                else [f"Test predictions `{prediction}` not found: rerun with `--eval-only`.", ""])
    out += q_ablation(results, root, "python q2_segmentation/ablate.py --backbone efficientnet_lite0")
    return out


def build_report(results):
    results = Path(results)
    lines = ["# CS543 Deep ConvNets: report", "",
             "Generated by `cs543-report` from the runs in `results/`; every number below is read "
             "from the files the training scripts wrote.", ""]
    lines += q1_section(results) + q2_section(results)
    text = "\n".join(lines) + "\n"
    results.mkdir(parents=True, exist_ok=True)
    write_text(results / "REPORT.md", text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cs543-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="the runs to report on (default: results/ in the repository)")
    args = parser.parse_args(argv)
    build_report(args.results_dir)
    print(f"wrote {args.results_dir / 'REPORT.md'}")
    return 0


def cli():
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
