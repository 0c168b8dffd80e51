"""Q2's loss terms against independent computations."""
import pytest
import torch

from q2_segmentation.data import IGNORE
from q2_segmentation.losses import dice_loss, lovasz_softmax, make_loss


def reference_lovasz(probabilities, labels):
    """Berman et al.'s Lovász-softmax over the present classes, written as in their paper: drop the
    ignored pixels, then for each class sort the errors and weigh them by the Jaccard increments."""
    keep = labels != IGNORE
    probabilities, labels = probabilities[keep], labels[keep]
    losses = []
    for c in range(probabilities.shape[1]):
        truth = (labels == c).float()
        if truth.sum() == 0:
            continue
        errors = (truth - probabilities[:, c]).abs()
        order = torch.argsort(errors, descending=True)
        truth_sorted, total = truth[order], truth.sum()
        jaccard = [1 - (total - truth_sorted[:k + 1].sum()) / (total + (1 - truth_sorted[:k + 1]).sum())
                   for k in range(len(order))]
        increments = [jaccard[0]] + [jaccard[k] - jaccard[k - 1] for k in range(1, len(jaccard))]
        losses.append(sum(e * g for e, g in zip(errors[order], increments, strict=True)))
    return torch.stack(losses).mean()


def test_lovasz_matches_the_papers_definition_with_ignored_pixels_and_absent_classes():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 8, 8)
    labels = torch.randint(0, 6, (2, 8, 8))
    labels[labels == 4] = 0  # class 4 absent
    labels[:, :2] = IGNORE
    probabilities = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, 6)
    expected = reference_lovasz(probabilities, labels.reshape(-1))
    torch.testing.assert_close(lovasz_softmax(logits, labels, stride=1), expected)


def test_dice_hand_computed():
    # two pixels, two classes; a huge logit makes the softmax one-hot
    logits = torch.tensor([[[[50.0, -50.0]], [[-50.0, 50.0]]]])  # pixel 0 -> class 0, pixel 1 -> class 1
    perfect = torch.tensor([[[0, 1]]])
    assert dice_loss(logits, perfect).item() == pytest.approx(0.0, abs=1e-6)
    swapped = torch.tensor([[[1, 0]]])
    # each class: intersection 0, |p| + |g| = 2 -> dice (0 + 1) / (2 + 1) = 1/3 -> loss 2/3
    assert dice_loss(logits, swapped).item() == pytest.approx(2 / 3, abs=1e-6)
    ignored = torch.tensor([[[0, IGNORE]]])  # pixel 1 left out: class 0 perfect, class 1 empty on both sides
    assert dice_loss(logits, ignored).item() == pytest.approx(0.0, abs=1e-6)


def test_the_combined_loss_adds_the_weighted_term_and_ignores_the_frame():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 8, 8, requires_grad=True)
    labels = torch.randint(0, 6, (2, 8, 8))
    labels[:, 0] = IGNORE
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE)
    torch.testing.assert_close(make_loss("ce")(logits, labels), ce)
    torch.testing.assert_close(make_loss("ce+dice", 0.5)(logits, labels), ce + 0.5 * dice_loss(logits, labels))
    make_loss("ce+lovasz")(logits, labels).backward()
    assert torch.isfinite(logits.grad).all()


def test_lovasz_with_a_single_present_class_and_the_default_weight():
    torch.manual_seed(2)
    logits = torch.randn(1, 6, 4, 4)
    labels = torch.full((1, 4, 4), 3)  # one class present: the mean over present classes is its own loss
    expected = reference_lovasz(logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, 6), labels.reshape(-1))
    torch.testing.assert_close(lovasz_softmax(logits, labels, stride=1), expected)
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE)
    torch.testing.assert_close(make_loss("ce+dice")(logits, labels), ce + dice_loss(logits, labels))  # weight 1
