"""Figures for runs and reports, written without a display.

matplotlib's object API (Figure, not pyplot) needs no GUI backend and keeps no global figure state.
"""
import io

import numpy as np
from matplotlib.figure import Figure

from common.files import write_atomically


def _subplots(*args, **kwargs):
    fig = Figure(figsize=kwargs.pop("figsize"))
    return fig, fig.subplots(*args, **kwargs)


def _save(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_atomically(path, buffer.getbuffer())


def plot_curves(history, panels, path, title=None):
    """One panel per (key, label) in `panels`, each value against its epoch; gaps where not measured."""
    fig, axes = _subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (key, label) in zip(axes[0], panels, strict=True):
        points = [(r["epoch"], r[key]) for r in history if key in r]
        if points:
            epochs, values = zip(*points, strict=True)
            axis.plot(epochs, values, marker="o", markersize=3)
        axis.set_xlabel("epoch")
        axis.set_title(label)
        axis.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def plot_bars(names, values, path, ylabel, title=None):
    fig, axis = _subplots(figsize=(1.3 * len(names) + 2, 3.6))
    bars = axis.bar(range(len(names)), values, color="tab:blue")
    axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.set_xticks(range(len(names)), names, rotation=20, ha="right")
    axis.set_ylabel(ylabel)
    low = min(values)
    axis.set_ylim(max(0.0, low - (max(values) - low) - 1e-3) if len(values) > 1 else 0, None)
    if title:
        axis.set_title(title)
    fig.tight_layout()
    _save(fig, path)


CLASS_COLOURS = np.array([
    [0, 0, 0], [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [213, 94, 0],
    [204, 121, 167], [0, 114, 178], [120, 120, 120], [255, 255, 255],
], dtype=np.uint8)


def plot_segmentation_examples(images, labels, predictions, class_names, path):
    """Rows of image | ground truth | prediction; images uint8 (N, H, W, 3), label maps (N, H, W)."""
    from matplotlib.patches import Patch

    rows = len(images)
    fig, axes = _subplots(rows, 3, figsize=(7.5, 2.5 * rows + 0.6), squeeze=False)
    for row in range(rows):
        panels = (images[row], CLASS_COLOURS[labels[row]], CLASS_COLOURS[predictions[row]])
        for column, (panel, heading) in enumerate(zip(panels, ("image", "ground truth", "prediction"), strict=True)):
            axes[row, column].imshow(panel)
            axes[row, column].axis("off")
            if row == 0:
                axes[row, column].set_title(heading)
    legend = [Patch(facecolor=CLASS_COLOURS[i] / 255, edgecolor="grey", label=name)
              for i, name in enumerate(class_names)]
    fig.legend(handles=legend, loc="lower center", ncol=min(len(class_names), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, path)


def plot_confusion(cm, class_names, path, title=None):
    """A confusion matrix with each row (true class) normalised to 1: the share of that class predicted
    as each column, printed in every cell."""
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, axis = _subplots(figsize=(7.2, 6.2))
    shown = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for row in ticks:
        for column in ticks:
            axis.text(column, row, f"{shares[row, column]:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if shares[row, column] > 0.5 else "black")
    fig.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
    if title:
        axis.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def plot_misclassified(images, labels, predicted, class_names, path, count=24, columns=8):
    """A grid of the first `count` misclassified images (uint8 N x H x W), each titled true -> predicted."""
    wrong = np.flatnonzero(predicted != labels)[:count]
    rows = max(1, -(-len(wrong) // columns))
    fig, axes = _subplots(rows, columns, figsize=(1.45 * columns, 1.7 * rows + 0.3), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), wrong, strict=False):
        axis.imshow(images[index], cmap="gray", vmin=0, vmax=255)
        axis.set_title(f"{class_names[labels[index]]}\n-> {class_names[predicted[index]]}", fontsize=7)
    fig.suptitle(f"misclassified val images (first {len(wrong)}): true -> predicted", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_per_class(class_names, series, path, references=(), title=None):
    """Grouped bars per class for each (label, values) of `series`, plus a `mean` group; each (label, value)
    of `references` (published means) is drawn as a dashed line across the plot and labelled."""
    groups = [*class_names, "mean"]
    fig, axis = _subplots(figsize=(8.4, 3.8))
    width = 0.8 / len(series)
    for number, (label, values) in enumerate(series):
        heights = [*values, float(np.mean(values))]
        bars = axis.bar(np.arange(len(groups)) + (number - (len(series) - 1) / 2) * width, heights, width,
                        label=label)
        axis.bar_label(bars, fmt="%.2f", fontsize=6)
    for number, (label, value) in enumerate(references):
        axis.axhline(value, color=f"C{number + len(series)}", linestyle="--", linewidth=1, label=label)
    axis.set_xticks(range(len(groups)), groups)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        axis.set_title(title)
    fig.tight_layout()
    _save(fig, path)
