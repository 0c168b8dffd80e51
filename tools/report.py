"""Write the assignment report from the runs on disk: `cs543-report` (or `python -m tools.report`).

Reads results/ (metrics.json, model.txt, summary.txt, the figures and prediction files that train.py and
ablate.py wrote) and writes results/REPORT.md and results/report.pdf, the file to hand in. Nothing is
retrained and every number is read from those files; a missing run gets a line naming the command that
produces it, in both files. Runs are found by what their metrics.json says they are, not by folder names.
A run whose figures are not held-out val figures of a finished run (--final, which trained on val;
--holdout, scored on training images; --limit, trained on part of the data; an unfinished run) is listed
with that label and kept out of the comparison with the reference report and of the choice of the best
model, and so is an evaluation on other data than the run's own val images (--eval-only --data-dir). A
metrics.json that cannot be read, lacks a field or has one of the wrong type (each field the report reads is
checked in one place before any is read) is left out with one warning line naming the file and the field;
the report is written all the same. A --results-dir that does not exist is one line, exit 2.
"""
import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import torch
from torch import nn

from common import __version__
from common.checkpoint import older_version
from common.command import UserError, run_cli
from common.files import RESULTS_DIR, repo_relative, write_atomically, write_text
from common.metrics import format_segmentation
from common.record import describe_data
from common.settings import Parser
from q1_fashion import train as q1_train
from q1_fashion.models import build_model as build_q1_model
from q2_segmentation import train as q2_train
from q2_segmentation.models import build_model as build_q2_model
from tools import check_submission
from tools.document import Document, to_markdown, to_pdf

Q2_HEADS = ("baseline", "report_best", "improved")  # the heads the report discusses; "ladder" is the ablation's
LAYER_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.Dropout, nn.Linear)
TITLE = "CS543 Deep ConvNets: report"


# What the report reads from a run's metrics.json, with the types it accepts: the one place a field is checked.
# A run with a required field missing, or any of these fields of another type, is left out with one warning line
# naming the file and the field; every later read then meets the type it expects.
INT, NUMBER, TEXT, TABLE, FLAG, NONE = (int,), (int, float), (str,), (dict,), (bool,), (type(None),)
EVERY_RUN = {"version": TEXT, "model": TEXT, "params": INT, "epochs": INT, "best_epoch": INT, "train_seconds": NUMBER,
             "train_precision": TEXT, "eval_precision": TEXT, "views": TEXT, "data": TABLE, "other_data": FLAG,
             "config": TABLE}
REQUIRED = {  # by question folder
    "q1_fashion": {**EVERY_RUN, "val_accuracy": NUMBER, "val_per_class": TABLE},
    "q2_segmentation": {**EVERY_RUN, "backbone": TEXT, "head": TEXT, "val_mAP": NUMBER, "val_mIoU": NUMBER,
                        "val_ap": TABLE, "val_iou": TABLE},
}
CONFIG = {"epochs": INT, "final": FLAG, "holdout": INT + NONE, "limit": INT + NONE, "tta": FLAG,
          "tta_shift": INT, "tta_scales": (list,), "precision": TEXT}  # in "config", where present
DATA = {"folder": TEXT, "images": TABLE, "val_split": TEXT}  # in "data"


def wrong_type(value, types):
    """Whether `value` is none of `types` (a bool is a number only where FLAG is allowed)."""
    if isinstance(value, bool):
        return bool not in types
    return not isinstance(value, types)


def field_problems(metrics, question):
    """The fields of `metrics` the report cannot use, each in a phrase ('config.epochs is str')."""
    missing = [key for key in REQUIRED.get(question, {}) if key not in metrics]
    if missing:
        return [f"no {', '.join(missing)}"]
    found = []
    for prefix, table, fields in (("", metrics, REQUIRED.get(question, {})),
                                  ("config.", metrics.get("config"), CONFIG),
                                  ("data.", metrics.get("data"), DATA)):
        if not found:  # a table of the wrong type is said once, not read
            found += [f"{prefix}{key} is {type(table[key]).__name__}" for key, types in fields.items()
                      if key in table and wrong_type(table[key], types)]
    if found:
        return found
    found += [f"{key} holds a non-number" for key in ("val_per_class", "val_ap", "val_iou")
              if key in metrics and any(wrong_type(v, NUMBER) for v in metrics[key].values())]
    found += ["config.tta_scales holds a non-number"] * any(
        wrong_type(v, NUMBER) for v in metrics["config"].get("tta_scales") or [])
    if wrong_type(metrics["data"]["images"].get("val", 0), INT):
        found.append("data.images.val is not a count")
    return found


BUILDERS = {"q1_fashion": build_q1_model, "q2_segmentation": build_q2_model}  # Q2: no ImageNet weights, the layers


def problem_of(metrics, question):
    """What makes a metrics.json unusable for the report, in a phrase; None when nothing does."""
    if not isinstance(metrics, dict):
        return "not a JSON object"
    wrong = field_problems(metrics, question)
    if wrong:
        return "; ".join(wrong)
    if question in BUILDERS:
        try:  # the layer tables rebuild the network from the recorded settings
            with contextlib.redirect_stdout(io.StringIO()):
                BUILDERS[question](metrics["config"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            return f"its config does not describe a network ({type(error).__name__}: {error})"
    return None


def label(run):
    """What a run's figures are when they are not the held-out val figures of a finished run ('' when they are),
    read from its recorded settings."""
    config = run["config"]
    parts = []
    if config.get("final"):
        parts.append("--final: trained on val")
    if config.get("holdout"):
        parts.append(f"--holdout {config['holdout']}: figures on training images, not val")
    if config.get("limit"):
        parts.append(f"--limit {config['limit']}: trained on part of the data")
    if run["epochs"] < config.get("epochs", run["epochs"]):
        parts.append(f"unfinished: {run['epochs']} of {config['epochs']} epochs")
    if run["other_data"]:
        parts.append(f"evaluated on other data: {describe_data(run['data'])}")
    return "; ".join(parts)


def read_runs(root):
    """({folder name: metrics}, {folder name: why it was left out}) of the runs under `root` (a question's
    results folder), ablation steps aside. A damaged metrics.json gets one warning line and is left out; a run
    made by an older major version is listed as such, without its figures (what it recorded is that version's)."""
    runs, left_out = {}, {}
    for path in sorted(Path(root).glob("*/metrics.json")) if Path(root).is_dir() else []:
        try:
            metrics = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            problem = f"not readable JSON ({error})" if path.stat().st_size else "empty"
        else:
            older = older_version(metrics)
            if older:
                left_out[path.parent.name] = (f"{repo_relative(path)} was made by version {older} of this project; "
                                              f"version {__version__} lists it without its figures: train the run "
                                              "again")
                print(f"note: {repo_relative(path)}: made by version {older}; listed without its figures",
                      file=sys.stderr)
                continue
            problem = problem_of(metrics, Path(root).name)
        if problem:
            left_out[path.parent.name] = f"{repo_relative(path)} is damaged ({problem})"
            print(f"warning: {repo_relative(path)}: {problem}; left out", file=sys.stderr)
        else:
            runs[path.parent.name] = metrics
    return runs, left_out


def why_not(name, left_out, command):
    """The "not run" text for a run the report lacks: why it was left out, or the command that makes it."""
    return f"left out: {left_out[name]}" if name in left_out else f"not run: `{command}`"


def comparable(runs):
    """The runs whose figures are held-out val figures of a finished run (see `label`)."""
    return {name: run for name, run in runs.items() if not label(run)}


def precision_of(run):
    """'bf16' or 'trained in bf16, evaluated in fp32': the precision(s) a run recorded."""
    trained, evaluated = run["train_precision"], run["eval_precision"]
    return trained if evaluated == trained else f"trained in {trained}, evaluated in {evaluated}"


def how(run, question, **extra):
    """'fp32, 2 test-time views (...), 30 epochs': how a run got its figures."""
    planned = run["config"].get("epochs", run["epochs"])
    epochs = f"{run['epochs']} epochs" if run["epochs"] >= planned else f"{run['epochs']} of {planned} epochs"
    return ", ".join([*extra.values(), precision_of(run), run["views"], epochs,
                      *([label(run)] if label(run) else [])])


def set_aside(doc, runs):
    """List the runs kept out of the comparison, each with what its figures are."""
    aside = {name: run for name, run in runs.items() if label(run)}
    if aside:
        doc.paragraph("Runs kept out of the comparison (their figures are not held-out val figures of a finished "
                      "run):")
        doc.bullets([f"`{name}`: {label(run)}" for name, run in aside.items()])


def layer_table(model, input_size, modules=None):
    """(header, rows): layer no, type, kernel, input dim, output dim, input channels, output channels."""
    rows = []

    def hook(module, inputs, output):
        shape_in, shape_out = tuple(inputs[0].shape[1:]), tuple(output.shape[1:])
        kernel = getattr(module, "kernel_size", "")
        kernel = f"{kernel[0]}x{kernel[1]}" if isinstance(kernel, tuple) else (f"{kernel}x{kernel}" if kernel else "")
        dilation = getattr(module, "dilation", (1,))
        if isinstance(module, nn.Conv2d) and dilation[0] > 1:
            kernel += f" (dilation {dilation[0]})"
        dims = ["x".join(map(str, shape[1:])) if len(shape) == 3 else "-" for shape in (shape_in, shape_out)]
        rows.append([len(rows) + 1, type(module).__name__, kernel, *dims, shape_in[0], shape_out[0]])

    targets = modules if modules is not None else [m for m in model.modules() if isinstance(m, LAYER_TYPES)]
    handles = [m.register_forward_hook(hook) for m in targets]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        model.eval()(torch.zeros(1, *input_size))
    for handle in handles:
        handle.remove()
    header = ["layer no", "type", "kernel", "input dim", "output dim", "input channels", "output channels"]
    return header, rows


def verdict(path, *extra):
    """The submission checker's output for `path`, as text."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = check_submission.main([str(path), *extra])
    except Exception as error:  # the report states the problem instead of stopping
        return f"INVALID {repo_relative(path)}: {error}"
    text = buffer.getvalue().strip().replace(str(path), str(repo_relative(path)))
    return text + ("" if code == 0 else f"\n(exit code {code})")


def summary(doc, q1_runs, q2_runs, left_out):
    """The table at the top: this repository's figures next to the reference report's published ones."""
    q1_ref, q2_ref = q1_train.REFERENCE_REPORT, q2_train.REFERENCE_REPORT
    rows = []
    base_name, base = basenet(q1_runs)
    rows.append(["Q1 BaseNet, val accuracy", f"{q1_ref['basenet']['val']:.1f} %",
                 f"{base['val_accuracy']:.2f} %" if base else
                 why_not("basenet", left_out, "python q1_fashion/train.py --model basenet"),
                 how(base, "q1_fashion", model="BaseNet") if base else ""])
    if q1_runs:
        name, best = max(q1_runs.items(), key=lambda item: item[1]["val_accuracy"])
        rows.append(["Q1 best model, val accuracy", f"{q1_ref['best']['val']:.1f} %", f"{best['val_accuracy']:.2f} %",
                     how(best, "q1_fashion", model=f"{name} ({best['params']:,} parameters)")])
    else:
        rows.append(["Q1 best model, val accuracy", f"{q1_ref['best']['val']:.1f} %",
                     why_not("improved", left_out, "python q1_fashion/train.py"), ""])
    rows.append(["Q1 best model, test accuracy", f"{q1_ref['best']['test']:.1f} %",
                 "graded by the autograder (labels not public)", "Q1_label_predictions.npy"])
    for label, head in (("Q2 baseline", "baseline"), ("Q2 best model", None)):
        candidates = {n: r for n, r in q2_runs.items() if head is None or r["model"] == head}
        reference = q2_ref["baseline" if head else "best"]["val"]
        if candidates:
            name, run = max(candidates.items(), key=lambda item: item[1]["val_mIoU"])
            rows.append([f"{label}, val mAP / mIoU", f"{reference[0]:.2f} / {reference[1]:.2f}",
                         f"{run['val_mAP']:.3f} / {run['val_mIoU']:.3f}",
                         how(run, "q2_segmentation", trunk=f"{run['backbone']} trunk", head=f"{run['model']} head")])
        else:
            command = "python q2_segmentation/train.py" + (f" --model {head}" if head else "")
            damaged = [name for name in left_out if name.endswith(f"_{head or 'improved'}")]
            rows.append([f"{label}, val mAP / mIoU", f"{reference[0]:.2f} / {reference[1]:.2f}",
                         why_not(damaged[0] if damaged else "", left_out, command), ""])
    test = q2_ref["best"]["test"]
    rows.append(["Q2 best model, test mAP / mIoU", f"{test[0]:.2f} / {test[1]:.2f}",
                 "graded by the autograder (labels not public)", "Q2_sseg_predictions.npy"])
    doc.heading(1, "Summary: this repository next to the reference report")
    doc.table(["result", "reference report", "this repository", "how"], rows, align="lrll")
    doc.paragraph("Val figures are on the 5,000 held-out Fashion-MNIST images (Q1) and the 100 val images (Q2), "
                  "from finished runs on all training images; runs made with `--final` (trained on val), "
                  "`--holdout` (scored on training images) or `--limit`, and unfinished runs, are left out of this "
                  "table and listed in their question's section.")


def basenet(runs):
    """(folder name, metrics) of the BaseNet run (the one folder `basenet` when there are several), or (None, None)."""
    found = {name: run for name, run in runs.items() if run["model"] == "basenet"}
    if not found:
        return None, None
    name = "basenet" if "basenet" in found else sorted(found)[0]
    return name, found[name]


def q1_section(doc, results, all_runs, left_out):
    root = results / "q1_fashion"
    runs = comparable(all_runs)
    doc.heading(1, "Q1: Fashion-MNIST classification")
    set_aside(doc, all_runs)
    doc.heading(2, "BaseNet")
    base_name, base = basenet(runs)
    if base is None:
        doc.paragraph(f"BaseNet: {why_not('basenet', left_out, 'python q1_fashion/train.py --model basenet')}.")
    else:
        if (root / base_name / "model.txt").is_file():
            doc.code((root / base_name / "model.txt").read_text())
        doc.paragraph(f"Val accuracy: **{base['val_accuracy']:.2f} %** ({base['params']:,} parameters, "
                      f"{how(base, 'q1_fashion')}).")
        doc.table(["class", "val accuracy (%)"], [[c, f"{v:.2f}"] for c, v in base["val_per_class"].items()])
    if left_out:
        doc.bullets([f"`{name}` {why}" for name, why in left_out.items()])
    if not runs:
        doc.paragraph("No Q1 run found: run `python q1_fashion/train.py`.")
        return
    best_name, best = max(runs.items(), key=lambda item: item[1]["val_accuracy"])
    folder = root / best_name
    doc.heading(2, f"Best model: {best_name}")
    items = []
    for name in q1_train.MODELS:
        found = {n: r for n, r in runs.items() if r["model"] == name}
        if not found:
            items.append(f"`{name}`: not found: run `python q1_fashion/train.py --model {name}`.")
        for run_name, run in found.items():
            items.append(f"`{run_name}`: val accuracy {run['val_accuracy']:.2f} %, {run['params']:,} parameters "
                         f"({how(run, 'q1_fashion')})")
    doc.bullets(items)
    doc.paragraph("Layers (the reference report's format):")
    doc.table(*layer_table(build_q1_model(best["config"]), (1, 28, 28)), align="rllllrr")
    doc.paragraph(f"Parameters: **{best['params']:,}**")
    if (folder / "summary.txt").is_file():
        doc.paragraph("torchsummary:")
        doc.code((folder / "summary.txt").read_text())
    cfg = best["config"]
    doc.paragraph(
        f"Training: {cfg.get('optimizer')} (momentum {cfg.get('momentum')}, nesterov {cfg.get('nesterov')}), "
        f"peak lr {cfg.get('lr')}, schedule {cfg.get('schedule')}, batch {cfg.get('batch_size')}, "
        f"{cfg.get('epochs')} epochs, weight decay {cfg.get('weight_decay')}, label smoothing "
        f"{cfg.get('label_smoothing')}, augmentation (2-pixel shifts, flips) {cfg.get('augment')}, weight average "
        f"(EMA) decay {cfg.get('ema_decay')}, {best['views']}, precision "
        f"{precision_of(best)}; best epoch {best.get('best_epoch')}; {best['train_seconds']} s of training.")
    doc.paragraph(f"Val accuracy: **{best['val_accuracy']:.2f} %**")
    doc.table(["class", "val accuracy (%)"], [[c, f"{v:.2f}"] for c, v in best["val_per_class"].items()])
    doc.figure(folder / "curves.png", "training curves")
    doc.figure(folder / "confusion.png", "val confusion matrix, each row normalised")
    doc.figure(folder / "misclassified.png", "misclassified val images, true -> predicted")
    ablation(doc, root, "python q1_fashion/ablate.py")
    doc.heading(2, "Secret test predictions")
    prediction = folder / q1_train.PREDICTIONS
    if prediction.is_file():
        doc.paragraph(f"`{repo_relative(prediction)}`, checked by `cs543-check`:")
        doc.code(verdict(prediction))
    else:
        doc.paragraph(f"`{repo_relative(prediction)}` not found: run `python q1_fashion/train.py --eval-only`.")


def ablation(doc, root, command):
    doc.heading(2, "Ablation (each row adds one component to the row above)")
    table = root / "ablation.md"
    if not table.is_file():
        doc.paragraph(f"Not found: run `{command}`.")
        return
    lines = [line.strip().strip("|").split("|") for line in table.read_text().splitlines() if line.strip()]
    header, rows = [cell.strip() for cell in lines[0]], [[cell.strip() for cell in line] for line in lines[2:]]
    doc.table(header, rows)
    doc.figure(root / "ablation.png", "ablation")


def q2_section(doc, results, all_runs, left_out):
    root = results / "q2_segmentation"
    runs = comparable(all_runs)
    doc.heading(1, "Q2: semantic segmentation")
    set_aside(doc, all_runs)
    missing = [head for head in Q2_HEADS if not any(run["model"] == head for run in runs.values())]
    if missing:
        doc.bullets([f"no `{head}` run: " + why_not(next((n for n in left_out if n.endswith(f"_{head}")), ""),
                                                      left_out, f"python q2_segmentation/train.py --model {head}")
                     for head in missing])
    if left_out:
        doc.bullets([f"`{name}` {why}" for name, why in left_out.items()])
    if not runs:
        doc.paragraph("No Q2 run found: run `python q2_segmentation/train.py`.")
    else:
        doc.table(["run", "trunk", "head", "params", "epochs", "precision", "val mAP", "val mIoU"],
                  [[name, run["backbone"], run["model"], f"{run['params']:,}", run["epochs"], precision_of(run),
                    f"{run['val_mAP']:.4f}", f"{run['val_mIoU']:.4f}"] for name, run in runs.items()],
                  align="lllrrlrr")
    for name, run in runs.items():
        folder, config = root / name, run["config"]
        model = build_q2_model(dict(config, pretrained=False, weights=None))  # the layout only: no weights needed
        head_layers = [m for m in model.head.modules() if isinstance(m, LAYER_TYPES)]
        trunk_params = sum(p.numel() for p in model.trunk.parameters())
        doc.heading(2, f"{name}: {run['backbone']} trunk, {run['model']} head")
        doc.paragraph("Upsampling: " + run["head"])
        doc.paragraph(f"Parameters: **{run['params']:,}** (trunk {trunk_params:,}, head "
                      f"{run['params'] - trunk_params:,}). Head layers on a 224x224 input:")
        doc.table(*layer_table(model, (3, 224, 224), head_layers), align="rllllrr")
        doc.paragraph(
            f"Training: {config.get('optimizer')}, peak lr {config.get('lr')} (trunk x{config.get('trunk_lr_scale')}), "
            f"weight decay {config.get('weight_decay')}, schedule {config.get('schedule')}, batch "
            f"{config.get('batch_size')}, {config.get('epochs')} epochs, loss {config.get('loss', 'ce')}; "
            f"augmentation: horizontal flip {config.get('augment')}, random scale "
            f"{config.get('min_scale', 1.0)}x to {config.get('max_scale', 1.0)}x, colour jitter "
            f"{config.get('color', 0.0)}, training crop {config.get('crop') or 'none (whole images)'}"
            f"{q2_train.describe_low_res(config)}; "
            f"weight average (EMA) decay {config.get('ema_decay', 0.0)}; {run['views']}; "
            f"precision {precision_of(run)}; ImageNet-pretrained trunk "
            f"{config.get('weights') or config.get('pretrained')}; best epoch {run.get('best_epoch')}; "
            f"{run['train_seconds']} s of training.")
        doc.paragraph("Val (the course's format):")
        doc.code(format_segmentation(list(run["val_ap"].values()), list(run["val_iou"].values()),
                                     list(run["val_ap"])))
        doc.figure(folder / "curves.png", f"{name}: training curves")
        doc.figure(folder / "per_class.png", f"{name}: per-class AP and IoU on val, the reference report's means "
                                             "dashed")
        doc.figure(folder / "vis_val.png", f"{name}: val examples (image | ground truth | prediction)")
        prediction = folder / q2_train.PREDICTIONS
        if prediction.is_file():
            doc.paragraph("Test predictions, checked by `cs543-check`:")
            doc.code(verdict(prediction))
        else:
            doc.paragraph(f"Test predictions `{repo_relative(prediction)}` not found: rerun with `--eval-only`.")
    ablation(doc, root, "python q2_segmentation/ablate.py")


def build_report(results):
    """Write REPORT.md and report.pdf in `results`; returns the Markdown text."""
    results = Path(results)
    (q1_runs, q1_left_out), (q2_runs, q2_left_out) = read_runs(results / "q1_fashion"), \
        read_runs(results / "q2_segmentation")
    doc = Document(TITLE)
    doc.paragraph("Generated by `cs543-report` from the runs in `results/`: every number below is read from the "
                  "files the training scripts wrote.")
    summary(doc, comparable(q1_runs), comparable(q2_runs), {**q1_left_out, **q2_left_out})
    q1_section(doc, results, q1_runs, q1_left_out)
    q2_section(doc, results, q2_runs, q2_left_out)
    results.mkdir(parents=True, exist_ok=True)
    text = to_markdown(doc, results) + "\n"
    write_text(results / "REPORT.md", text)
    write_atomically(results / "report.pdf", to_pdf(doc))
    return text


def main(argv=None):
    parser = Parser(prog="cs543-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="the runs to report on (default: results/ in the repository)")
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        raise UserError(f"--results-dir {args.results_dir}: no such folder (the training scripts write results/ in "
                        "the repository, or the folder --out-dir named)")
    build_report(args.results_dir)
    if not any(any((args.results_dir / question).glob("*/metrics.json")) for question in REQUIRED):
        print(f"note: no run found in {args.results_dir}: the report lists the commands that make them")
    print(f"wrote {args.results_dir / 'REPORT.md'} and {args.results_dir / 'report.pdf'}")
    return 0


def cli():
    sys.exit(run_cli(main))


if __name__ == "__main__":
    cli()
