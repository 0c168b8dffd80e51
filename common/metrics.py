"""Metrics exactly as the course computes them, vectorised.

Classification: overall and per-class accuracy in percent.
Segmentation: per-class average precision of the soft output over all pixels of a split (VOC
interpolation), and per-class IoU of the hard output (argmax).
"""
import numpy as np


def accuracy(predicted, labels):
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or labels.size == 0:
        raise ValueError(f"need equal non-empty shapes, got {predicted.shape} and {labels.shape}")
    return 100.0 * float(np.mean(predicted == labels))


def per_class_accuracy(predicted, labels, num_classes):
    """Percent correct among the items of each true class (NaN for a class with no items)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    correct = np.bincount(labels[predicted == labels], minlength=num_classes)
    total = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * correct / total


def confusion_matrix(predicted, labels, num_classes):
    """cm[true, predicted] counts over all elements."""
    predicted = np.asarray(predicted).ravel().astype(np.int64)
    labels = np.asarray(labels).ravel().astype(np.int64)
    if predicted.shape != labels.shape:
        raise ValueError(f"predicted has {predicted.size} elements, labels {labels.size}")
    cm = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes)


def iou_from_confusion(cm):
    """IoU = TP / max(TP + FP + FN, 1) per class."""
    tp = np.diag(cm).astype(np.float64)
    denominator = cm.sum(axis=0) + cm.sum(axis=1) - tp
    return tp / np.maximum(denominator, 1)


def voc_ap(recall, precision):
    """Area under the precision envelope: pad, take the running max from the right, sum steps."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def average_precision(scores, targets):
    """VOC-style AP of `scores` for the binary `targets` (all elements pooled): the fast version.

    Ranked by descending score; tied scores keep their element order (a stable sort), so the value is
    reproducible, and uint8 scores sort in linear time. On uint8 files, which hold many ties, it can
    differ from the course's value in the fourth decimal (see course_average_precision), so training
    uses it only for its per-epoch validation.
    """
    scores = np.asarray(scores).ravel()
    targets = np.asarray(targets).ravel().astype(bool)
    if scores.shape != targets.shape:
        raise ValueError(f"scores have {scores.size} elements, targets {targets.size}")
    positives = int(targets.sum())
    if positives == 0:
        return 0.0
    descending = (255 - scores) if scores.dtype == np.uint8 else -scores
    order = np.argsort(descending, kind="stable")
    true_positives = np.cumsum(targets[order], dtype=np.int64)
    ranks = np.arange(1, scores.size + 1)
    return voc_ap(true_positives / positives, true_positives / ranks)


def course_average_precision(scores, targets):
    """AP exactly as the course's calc_pr computes it, ties included, for binary `targets`.

    The course ranks the pixels by `np.argsort(scores_as_float64)[::-1]`: numpy's default (unstable)
    sort, reversed. Where scores tie, which they do by the thousand in a uint8 file, that order decides
    the precision at each rank, so this sorts the same way: on the same numpy it gives the grader's digits.

    The course then computes precision and recall at every rank and sums over the ranks where recall
    steps, i.e. the positives. This computes them at the positives only: the same terms in the same
    order, so the same sum. (Their precision envelope is the same too: a negative's precision is below
    the rank's before it, so it is never a running maximum.) That saves most of the course's arrays of
    five million pixels, which cost time of their own on a machine where fresh memory is slow; tests
    check it against the course's rule written out rank by rank.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()  # float64 as the course's: it decides the tie order
    targets = np.asarray(targets).ravel()
    if scores.shape != targets.shape:
        raise ValueError(f"scores have {scores.size} elements, targets {targets.size}")
    positives = np.count_nonzero(targets)
    if positives == 0:
        return 0.0  # the course would divide by zero; no pixel of the class, nothing to find
    ranks = np.flatnonzero(targets[np.argsort(scores)[::-1]]) + 1.0  # the rank of each positive, from 1
    found = np.arange(1, positives + 1)  # positives found down to that rank
    envelope = np.maximum.accumulate((found / ranks)[::-1])[::-1]  # the best precision from that rank on
    return float(np.sum(np.diff(found / positives, prepend=0.0) * envelope))


def segmentation_scores(probabilities, labels, num_classes, exact=True):
    """Per-class AP and IoU for probabilities (N, C, H, W) against labels (N, H, W).

    `exact`: AP with the course's own tie order (course_average_precision), as the checker and the final
    printout use; False: the faster stable order, for per-epoch validation. The hard output is the
    argmax of the same scores, so a quantised submission file and the run that wrote it agree.
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if probabilities.ndim != 4 or probabilities.shape[1] != num_classes:
        raise ValueError(f"probabilities must be (N, {num_classes}, H, W), got {probabilities.shape}")
    if probabilities.shape[:1] + probabilities.shape[2:] != labels.shape:
        raise ValueError(f"probabilities {probabilities.shape} do not match labels {labels.shape}")
    ap_of = course_average_precision if exact else average_precision
    ap = np.array([ap_of(probabilities[:, c], labels == c) for c in range(num_classes)])
    cm = confusion_matrix(probabilities.argmax(axis=1), labels, num_classes)
    return ap, iou_from_confusion(cm)


def quantize_probabilities(probabilities):
    """The course's submission format: floor(prob * 255) as uint8."""
    return np.floor(np.asarray(probabilities, dtype=np.float32) * 255).clip(0, 255).astype(np.uint8)


def format_classification(accuracy_value, per_class, class_names, split="val"):
    lines = [f"Accuracy of the final network on the {split} images: {accuracy_value:.2f} %"]
    lines += [f"Accuracy of {name:>11s} : {value:.2f} %" for name, value in zip(class_names, per_class, strict=True)]
    return "\n".join(lines)


def format_segmentation(ap, iou, class_names):
    lines = [f"{name}: AP: {a:.2f}, IoU: {i:.2f}" for name, a, i in zip(class_names, ap, iou, strict=True)]
    lines.append(f"mean: AP: {np.mean(ap):.2f}, IoU: {np.mean(iou):.2f}")
    return "\n".join(lines)
