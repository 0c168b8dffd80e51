"""Segmentation losses: cross-entropy, plus an optional term aimed at IoU for the rare classes.

Pixels labelled IGNORE (the frame around a shrunken training image) count in none of them.
"""
import torch
import torch.nn.functional as F

from q2_segmentation.data import IGNORE

LOSSES = ("ce", "ce+dice", "ce+lovasz")


def dice_loss(logits, labels, eps=1.0):
    """1 - the soft Dice score, averaged over the classes, of the softmax over the whole batch.

    Every class weighs the same whatever its pixel count, so the rare ones (sports: 2.7 % of the
    pixels) pull as hard as the background.
    """
    classes = logits.shape[1]
    valid = (labels != IGNORE).unsqueeze(1)
    probabilities = logits.softmax(dim=1) * valid
    truth = F.one_hot(labels.masked_fill(~valid[:, 0], 0), classes).permute(0, 3, 1, 2) * valid
    intersection = (probabilities * truth).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + truth.sum(dim=(0, 2, 3))
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


def lovasz_grad(truth_sorted):
    """The gradient of the Lovász extension of the Jaccard loss at the sorted errors (Berman et al. 2018)."""
    positives = truth_sorted.sum()
    intersection = positives - truth_sorted.cumsum(0)
    union = positives + (1 - truth_sorted).cumsum(0)
    jaccard = 1 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(logits, labels, stride=2):
    """The Lovász-softmax loss (Berman et al. 2018): a convex surrogate of 1 - IoU, averaged over the
    classes present in the batch.

    Computed on every `stride`-th pixel in each direction: sorting all 800,000 pixels of a batch for
    each class would cost a third of a CPU training step, and a quarter of them rank the errors as well.
    Ignored pixels get error 0 and no truth, so they sort last and add nothing; nothing here waits on the
    GPU (no boolean indexing, no Python test of a tensor).
    """
    logits, labels = logits[:, :, ::stride, ::stride], labels[:, ::stride, ::stride]
    classes = logits.shape[1]
    probabilities = logits.softmax(dim=1).permute(0, 2, 3, 1).reshape(-1, classes)
    labels = labels.reshape(-1)
    valid = (labels != IGNORE).float()
    losses, present = [], []
    for c in range(classes):
        truth = (labels == c).float()
        errors_sorted, order = torch.sort((truth - probabilities[:, c]).abs() * valid, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(truth[order])))
        present.append(truth.sum() > 0)
    present = torch.stack(present).float()
    return (torch.stack(losses) * present).sum() / present.sum().clamp(min=1)


def make_loss(name, weight=1.0):
    """The training loss `name` (one of LOSSES): cross-entropy, plus `weight` times the named IoU term."""
    cross_entropy = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    extra = {"ce": None, "ce+dice": dice_loss, "ce+lovasz": lovasz_softmax}[name]
    if extra is None:
        return cross_entropy

    def loss(logits, labels):
        return cross_entropy(logits, labels) + weight * extra(logits, labels)

    return loss
