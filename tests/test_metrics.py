import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from common.metrics import (
    accuracy,
    average_precision,
    confusion_matrix,
    course_average_precision,
    format_classification,
    format_segmentation,
    iou_from_confusion,
    per_class_accuracy,
    quantize_probabilities,
    segmentation_scores,
)


def reference_ap(scores, targets):
    """The course's computation written as plain loops."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    positives = sum(targets)
    tp, precision, recall = 0, [], []
    for rank, index in enumerate(order, start=1):
        tp += targets[index]
        precision.append(tp / rank)
        recall.append(tp / positives)
    mrec, mpre = [0.0] + recall + [1.0], [0.0] + precision + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def test_accuracy_and_per_class_hand_computed():
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    assert accuracy(predicted, labels) == pytest.approx(100 * 4 / 6)
    np.testing.assert_allclose(per_class_accuracy(predicted, labels, 4)[:3], [50.0, 200 / 3, 100.0])
    assert np.isnan(per_class_accuracy(predicted, labels, 4)[3])  # a class with no items


def test_accuracy_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        accuracy(np.zeros(3), np.zeros(4))


def test_ap_hand_computed():
    # ranks: +, -, +, -  -> precision 1, 1/2, 2/3, 1/2; recall 1/2, 1/2, 1, 1
    # envelope at the recall steps: 1 (0 -> 1/2) and 2/3 (1/2 -> 1): AP = 1/2 + 1/3
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert average_precision(np.array([0.1, 0.9]), np.array([1, 0])) == pytest.approx(0.5)
    assert average_precision(np.array([0.9, 0.1]), np.array([1, 0])) == pytest.approx(1.0)
    assert average_precision(np.array([0.9, 0.1]), np.array([0, 0])) == 0.0  # no positives


def test_ap_matches_plain_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 300))
        scores = rng.random(n)
        targets = (rng.random(n) < rng.random()).astype(int)
        if targets.sum() == 0:
            targets[0] = 1
        assert average_precision(scores, targets) == pytest.approx(reference_ap(scores.tolist(), targets.tolist()))


def test_ap_uint8_ties_keep_element_order():
    # uint8 scores tie: the stable order ranks the earlier element first, exactly as for float scores
    scores = np.array([200, 200, 100, 100], dtype=np.uint8)
    targets = np.array([0, 1, 1, 0])
    assert average_precision(scores, targets) == pytest.approx(average_precision(scores.astype(float), targets))
    assert average_precision(scores, targets) == pytest.approx(reference_ap([200, 200, 100, 100], [0, 1, 1, 0]))


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(1)
    labels, predicted = rng.integers(0, 6, 5000), rng.integers(0, 6, 5000)
    np.testing.assert_array_equal(confusion_matrix(predicted, labels, 6),
                                  sklearn_confusion_matrix(labels, predicted, labels=range(6)))


def test_iou_hand_computed():
    labels = np.array([[0, 0, 1, 1]])
    predicted = np.array([[0, 1, 1, 1]])
    cm = confusion_matrix(predicted, labels, 3)
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; class 2 absent: 0 / max(0, 1) = 0
    np.testing.assert_allclose(iou_from_confusion(cm), [0.5, 2 / 3, 0.0])


def test_segmentation_scores_against_independent_computation():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 6, 8, 8))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 6, (3, 8, 8))
    ap, iou = segmentation_scores(probabilities, labels, 6)
    hard = probabilities.argmax(axis=1).ravel()
    cm = sklearn_confusion_matrix(labels.ravel(), hard, labels=range(6))
    tp = np.diag(cm)
    np.testing.assert_allclose(iou, tp / np.maximum(cm.sum(0) + cm.sum(1) - tp, 1))
    for c in range(6):
        assert ap[c] == pytest.approx(reference_ap(probabilities[:, c].ravel().tolist(),
                                                   (labels.ravel() == c).astype(int).tolist()))


def test_segmentation_scores_shape_errors():
    with pytest.raises(ValueError, match="must be"):
        segmentation_scores(np.zeros((2, 5, 4, 4)), np.zeros((2, 4, 4), int), 6)
    with pytest.raises(ValueError, match="do not match"):
        segmentation_scores(np.zeros((2, 6, 4, 4)), np.zeros((2, 4, 5), int), 6)


def test_quantize_is_floor_times_255():
    probabilities = np.array([0.0, 0.5, 0.999, 1.0, 1 / 255 - 1e-7], dtype=np.float32)
    np.testing.assert_array_equal(quantize_probabilities(probabilities), [0, 127, 254, 255, 0])
    assert quantize_probabilities(probabilities).dtype == np.uint8


def test_course_printouts():
    text = format_segmentation(np.array([0.931, 0.5]), np.array([0.75, 0.25]), ["background", "sports"])
    assert text.splitlines() == ["background: AP: 0.93, IoU: 0.75", "sports: AP: 0.50, IoU: 0.25",
                                 "mean: AP: 0.72, IoU: 0.50"]
    lines = format_classification(91.5, [90.0, 93.0], ["Shirt", "Bag"]).splitlines()
    assert lines[0] == "Accuracy of the final network on the val images: 91.50 %"
    assert lines[2].startswith("Accuracy of") and lines[2].endswith("Bag : 93.00 %")


def course_rule_ap(scores, targets):
    """The course's rule, written out independently: rank by numpy's default argsort of the float64
    scores, reversed; precision and recall at every rank; VOC envelope over the recall steps."""
    order = np.argsort(np.asarray(scores, dtype=np.float64).ravel())[::-1]
    hits = np.asarray(targets, dtype=np.float64).ravel()[order]
    tp = np.cumsum(hits)
    recall = np.vstack(([[0.0]], (tp / hits.sum()).reshape(-1, 1), [[1.0]]))
    precision = np.vstack(([[0.0]], (tp / np.cumsum(np.ones_like(hits))).reshape(-1, 1), [[0.0]]))
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def test_exact_ap_follows_the_course_tie_order():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, 20_000).astype(np.uint8)  # six distinct values: every rank is a tie
    targets = rng.random(20_000) < 0.3 + 0.1 * scores
    exact = course_average_precision(scores, targets)
    assert exact == course_rule_ap(scores, targets)
    # the stable order breaks the ties another way, so the fast AP differs: the tie order matters here
    assert average_precision(scores, targets) != pytest.approx(exact, abs=1e-6)
    # without ties both orders rank alike
    distinct = rng.permutation(20_000).astype(np.float64)
    assert course_average_precision(distinct, targets) == pytest.approx(average_precision(distinct, targets))


def test_segmentation_scores_exact_by_default():
    rng = np.random.default_rng(6)
    scores = rng.integers(0, 43, (2, 6, 16, 16)).astype(np.uint8)
    labels = rng.integers(0, 6, (2, 16, 16))
    ap, _ = segmentation_scores(scores, labels, 6)
    assert list(ap) == [course_rule_ap(scores[:, c], labels == c) for c in range(6)]


# Edges a mutation run (mutmut, see README "Development") found unguarded.

def test_accuracy_edges_and_messages():
    assert accuracy([3], [3]) == 100.0  # one item is a valid set
    with pytest.raises(ValueError, match=r"need equal non-empty shapes, got \(0,\) and \(0,\)"):
        accuracy([], [])
    with pytest.raises(ValueError, match=r"need equal non-empty shapes, got \(2,\) and \(1,\)"):
        accuracy([1, 2], [1])  # would broadcast without the check
    with pytest.raises(ValueError, match="predicted has 2 elements, labels 3"):
        confusion_matrix([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match="scores have 2 elements, targets 3"):
        average_precision(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="scores have 2 elements, targets 3"):
        course_average_precision(np.zeros(2), np.zeros(3))


def test_a_class_with_no_items_is_nan_without_a_warning():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's 0/0 warning would be one
        result = per_class_accuracy([0, 0], [0, 0], 3)
    assert result[0] == 100.0 and np.isnan(result[1]) and np.isnan(result[2])


def test_iou_of_a_single_perfect_pixel_is_one():
    cm = np.array([[1, 0], [0, 0]])  # one pixel of class 0, predicted right; class 1 absent
    np.testing.assert_array_equal(iou_from_confusion(cm), [1.0, 0.0])


def test_ap_ranks_uint8_zero_scores_last():
    """A uint8 score of 0 is the lowest rank (negating uint8 would wrap 0 to the top)."""
    scores, targets = np.array([0, 200, 100], dtype=np.uint8), np.array([1, 0, 0])
    assert average_precision(scores, targets) == pytest.approx(1 / 3)
    assert course_average_precision(scores, targets) == pytest.approx(1 / 3)


def test_fast_ap_keeps_element_order_on_large_tied_inputs():
    """average_precision's promise: tied scores keep their element order (a stable sort), at any size."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, 2000).astype(np.uint8)  # four values: ties by the hundred
    targets = rng.random(2000) < 0.3
    order = sorted(range(2000), key=lambda i: -int(scores[i]))  # Python's sort is stable
    hits = np.cumsum(targets[order])
    expected = reference_voc(hits / targets.sum(), hits / np.arange(1, 2001))
    assert average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)


def reference_voc(recall, precision):
    """The VOC envelope as a loop: for each new recall level, the best precision at or after it."""
    area, previous = 0.0, 0.0
    for i, level in enumerate(recall):
        if level > previous:
            area += (level - previous) * max(precision[i:])
            previous = level
    return area


def test_ap_of_one_positive_and_of_none():
    assert course_average_precision(np.array([0.9, 0.1]), np.array([0, 1])) == pytest.approx(0.5)
    assert average_precision(np.array([0.9, 0.1]), np.array([0, 1])) == pytest.approx(0.5)
    assert course_average_precision(np.array([0.9, 0.1]), np.array([0, 0])) == 0.0  # nothing to find
    assert average_precision(np.array([0.9, 0.1]), np.array([0, 0])) == 0.0


def test_per_epoch_validation_uses_the_stable_tie_order():
    """Per-epoch figures (exact=False) rank ties in element order; the final ones in the course's order."""
    probabilities = np.full((1, 2, 1, 2), 0.5)  # every score tied
    labels = np.array([[[0, 1]]])
    fast, _ = segmentation_scores(probabilities, labels, 2, exact=False)
    exact, _ = segmentation_scores(probabilities, labels, 2, exact=True)
    assert fast[0] == pytest.approx(1.0)  # class 0's pixel comes first in element order
    assert exact[0] == pytest.approx(0.5)  # the course's reversed argsort puts it last


def test_quantize_clips_into_uint8():
    np.testing.assert_array_equal(quantize_probabilities(np.array([1.5, -0.2, 1.0, 0.0])), [255, 0, 255, 0])


def test_printouts_refuse_lists_of_different_lengths():
    with pytest.raises(ValueError):
        format_classification(50.0, [1.0, 2.0], ["a", "b", "c"])
    with pytest.raises(ValueError):
        format_segmentation([0.5, 0.5], [0.1, 0.2], ["a", "b", "c"])
