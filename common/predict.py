"""Prediction: the mean softmax of a model over test-time views of its inputs.

Each question supplies its views (Q1: the image, its mirror and both moved a pixel four ways; Q2: the
image and its mirror at several scales); this module only averages them.
"""
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from common.command import memory_remedy
from common.device import autocast


@dataclass(frozen=True)
class View:
    """One test-time view: `transform` maps a chunk of raw inputs (on the model's device) to the model's
    input; `inverse`, for dense (per-pixel) outputs, maps the model's output back onto the original pixels
    (None: the output needs no mapping, as a class-score vector or a view that moves no pixel)."""
    name: str
    transform: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor, torch.Size], torch.Tensor] | None = None


def flip_back(outputs, size):
    """The inverse of a horizontal mirror for per-pixel outputs."""
    return outputs.flip(-1)


def resize_to(outputs, size):
    """Per-pixel outputs resized (bilinearly) back to the original `size`."""
    return F.interpolate(outputs, size=size, mode="bilinear", align_corners=False)


@torch.inference_mode()
def predict(model, inputs, views, batch_size, precision="fp32"):
    """Softmax probabilities (float32 numpy) of `model` over `inputs`: the mean over `views`, chunk by chunk.

    The views of a chunk run one after another under `precision`'s autocast; the softmax is taken of the
    float32 outputs, once each view's output is mapped back. The outputs stay on the device until the end:
    one transfer back, not one per chunk. A last chunk of one is fine: the model is in eval mode. A GPU out of
    memory is one line naming --predict-batch-size, the flag that sets `batch_size`.
    """
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    with memory_remedy(f"a smaller --predict-batch-size (it was {batch_size})"):
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start:start + batch_size]
            total = 0
            with autocast(precision, device):
                for view in views:
                    out = model(view.transform(chunk)).float()
                    if view.inverse is not None:
                        out = view.inverse(out, chunk.shape[-2:])
                    total = total + out.softmax(dim=1)
            outputs.append(total / len(views))
        return torch.cat(outputs).cpu().numpy()
