"""The default recipes' wiring: each test states the promise it guards (README's words) and checks it
against a hand-computed case, an independent computation or a property, never against the code's own
constants. Hand-made mutants (a wrong checkpoint, raw weights, a wrong score, a loss term wired to another,
an ignored learning-rate scale, augmenters that do nothing) each fail one of these."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common.average import WeightAverage
from common.checkpoint import save_checkpoint, weights_to_predict_with
from common.training import start_or_resume, train_one_epoch
from q1_fashion import data as q1_data
from q2_segmentation import train as q2_train
from q2_segmentation.data import augment as q2_augment
from q2_segmentation.data import load_split
from q2_segmentation.losses import make_loss
from q2_segmentation.models import build_model, build_trunk
from q2_segmentation.weights import imagenet_weights
from tests.helpers import settings, train_epochs
from tests.test_losses import reference_lovasz


def tiny_net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def fake_run(tmp_path, **recipe):
    """The parts of a Run that the epoch loop reads."""
    recipe = {"schedule": "onecycle", "epochs": 3, "ema_decay": 0.9, **recipe}
    return SimpleNamespace(recipe=recipe, precision="fp32", device=torch.device("cpu"), checkpoint_dir=tmp_path,
                           out_dir=tmp_path, mode="train", saved=None, record=dict(recipe), final=False,
                           hint="train first", run_id="test", question=SimpleNamespace(name="test"), data=None)


def save(path, model, ema, epoch):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, best=0.5,
                    history=[{"epoch": e, "seconds": 1.0} for e in range(1, epoch + 1)], config={}, ema=ema,
                    run_id="test", question="test", stretches=[{"first_epoch": 1, "last_epoch": epoch}])


def test_predictions_come_from_the_best_checkpoints_weight_average(tmp_path):
    """README: the prediction file holds the best-val checkpoint's predictions, made with the weight average
    (--final: the last epoch's)."""
    raw, averaged, last = tiny_net(0), tiny_net(1), tiny_net(2)
    ema = WeightAverage(raw, 0.9)
    ema.module.load_state_dict(averaged.state_dict())
    save(tmp_path / "best.pt", raw, ema, epoch=2)
    save(tmp_path / "last.pt", last, WeightAverage(last, 0.9), epoch=3)
    model = tiny_net(3)
    result = weights_to_predict_with(fake_run(tmp_path), model)
    state, history = result.state, result.history
    assert state["epoch"] == 2 and [r["epoch"] for r in history] == [1, 2, 3]  # best's weights, last's history
    for key, value in model.state_dict().items():
        assert torch.equal(value, averaged.state_dict()[key]), key  # the average, not the raw weights
    final = fake_run(tmp_path)
    final.final = True
    state = weights_to_predict_with(final, model).state
    assert state["epoch"] == 3 and torch.equal(model[0].weight, last[0].weight)


def test_the_best_checkpoint_is_the_best_score_not_the_last_epoch(tmp_path):
    """README: best.pt holds the epoch with the best validation score (Q2: val mIoU)."""
    model = tiny_net(0)
    training = start_or_resume(fake_run(tmp_path), model, torch.optim.SGD(model.parameters(), lr=0.01), 1,
                               score="val_mIoU")
    scores = iter([{"val_mAP": 0.2, "val_mIoU": 0.5}, {"val_mAP": 0.9, "val_mIoU": 0.1},
                   {"val_mAP": 0.1, "val_mIoU": 0.3}])
    train_epochs(training, lambda epoch: 1.0, lambda: next(scores))
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 1 and best["best"] == 0.5  # mIoU's best; mAP would have picked epoch 2


def test_q2_picks_its_best_epoch_by_val_miou(monkeypatch, tmp_path):
    """README: best.pt (best val mIoU) in checkpoints/q2_segmentation/."""
    seen = {}

    def started(run, model, optimizer, steps, score=None, val_every=1):
        seen.update(score=score, val_every=val_every)
        raise StopIteration  # the loop's settings are all this test needs

    monkeypatch.setattr(q2_train, "start_or_resume", started)
    monkeypatch.setattr(q2_train, "load_data", lambda run, data_dir: SimpleNamespace(
        record={}, train_size=2))
    with pytest.raises(StopIteration):
        q2_train.main(["--backbone", "efficientnet_lite0", "--model", "baseline", "--no-pretrained", "--out-dir",
                       str(tmp_path / "out"), "--checkpoint-dir", str(tmp_path / "checkpoints")])
    assert seen == {"score": "val_mIoU", "val_every": 1}


def test_the_trunk_learns_at_its_scale_of_the_heads_rate():
    """README: --trunk-lr-scale is the trunk's learning rate relative to --lr."""
    run = settings(q2_train, "--backbone", "efficientnet_lite0", "--no-pretrained", "--lr", "0.002",
                   "--trunk-lr-scale", "0.25")
    model = q2_train.build(run, None)
    optimizer = q2_train.make_optimizer(model, run)
    trunk_ids = {id(p) for p in model.trunk.parameters()}
    for group in optimizer.param_groups:
        in_trunk = {id(p) in trunk_ids for p in group["params"]}
        assert len(in_trunk) == 1  # a group is all trunk or all head
        assert group["lr"] == pytest.approx(0.0005 if in_trunk.pop() else 0.002)
    frozen = [p for p in model.trunk.parameters() if not p.requires_grad]
    assert frozen and not any(p is q for group in optimizer.param_groups for p in group["params"] for q in frozen)


def test_ce_plus_lovasz_is_cross_entropy_plus_the_papers_lovasz():
    """README: --loss ce+lovasz (the default): cross-entropy plus a Lovász term, on every 2nd pixel."""
    torch.manual_seed(3)
    logits = torch.randn(2, 6, 8, 8)
    labels = torch.randint(0, 6, (2, 8, 8))
    labels[:, 0] = 255
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    sub_logits, sub_labels = logits[:, :, ::2, ::2], labels[:, ::2, ::2]
    lovasz = reference_lovasz(sub_logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, 6), sub_labels.reshape(-1))
    torch.testing.assert_close(make_loss("ce+lovasz", 0.7)(logits, labels), ce + 0.7 * lovasz)


@pytest.mark.parametrize("size", ["0", "1", "2"])
def test_each_efficientnet_lite_trunk_sees_the_statistics_its_weights_were_trained_on(course_data, size):
    """README: each trunk gets its own input normalisation. Property: with it, real images reach the first
    BatchNorm with about the mean and variance that layer recorded on ImageNet (ImageNet's mean/std instead
    would more than double the spread)."""
    backbone = f"efficientnet_lite{size}"
    trunk = build_trunk(backbone, imagenet_weights(backbone)).eval()
    images = load_split(course_data, "val", limit=24).images.float()
    mean = torch.tensor(trunk.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(trunk.std).view(1, 3, 1, 1) * 255
    net = trunk.net
    with torch.no_grad():
        stem = net._conv_stem((images - mean) / std)
    variance = stem.var(dim=(0, 2, 3))
    ratio = (variance / net._bn0.running_var).median().item()
    assert 0.5 < ratio < 2.0, ratio


def test_q1_augmentation_flips_about_half_and_shifts_most_images():
    """README: --augment: random shifts of up to 2 pixels and horizontal flips."""
    torch.manual_seed(0)
    images = torch.randint(1, 255, (400, 28, 28), dtype=torch.uint8)
    out = q1_data.augment(images)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flipped = shifted = 0
    for original, moved in zip(padded, out, strict=True):
        matches = [(flip, dy, dx) for flip in (False, True) for dy in range(5) for dx in range(5)
                   if torch.equal(moved, (original.flip(-1) if flip else original)[dy:dy + 28, dx:dx + 28])]
        flip, dy, dx = matches[0]
        flipped += flip
        shifted += (dy, dx) != (2, 2)
    assert 140 < flipped < 260  # half of 400, give or take 3 standard deviations
    assert shifted > 340  # 24 of the 25 offsets move the image


def test_q2_augmentation_flips_about_half_of_the_batch():
    """README: joint horizontal flips of image and mask."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (200, 3, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 6, (200, 4, 4), dtype=torch.uint8)
    out_images, out_labels = q2_augment(images, labels)
    flipped = [torch.equal(out_images[i], images[i].flip(-1)) and torch.equal(out_labels[i], labels[i].flip(-1))
               for i in range(200)]
    kept = [torch.equal(out_images[i], images[i]) for i in range(200)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 60 < sum(flipped) < 140


def test_resume_is_exact_on_a_tiny_model(tmp_path):
    """README: a run interrupted after epoch k and resumed ends with the same weights as an uninterrupted one."""
    inputs, targets = torch.randn(12, 4), torch.randint(0, 3, (12,))

    def train(folder, epochs, mode="train", saved=None):
        folder.mkdir(exist_ok=True)
        torch.manual_seed(0)
        model = tiny_net(0)
        run = fake_run(folder, epochs=3)
        run.mode, run.saved = mode, saved
        training = start_or_resume(run, model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 3,
                                   score="score")
        loss_fn = torch.nn.CrossEntropyLoss()

        def run_epoch(epoch):
            if epoch > epochs:
                raise KeyboardInterrupt
            order = torch.randperm(12)  # the random stream must resume where it was
            batches = [(inputs[order[i:i + 4]], targets[order[i:i + 4]]) for i in range(0, 12, 4)]
            return train_one_epoch(training, batches, loss_fn, epoch)

        try:
            train_epochs(training, run_epoch, lambda: {"score": -loss_fn(model(inputs), targets).item()})
        except KeyboardInterrupt:
            pass
        return model, training.ema.module

    straight, straight_ema = train(tmp_path / "a", 3)
    train(tmp_path / "b", 1)  # stopped as epoch 2 begins
    state = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    resumed, resumed_ema = train(tmp_path / "b", 3, mode="resume", saved=state)
    for ours, theirs in ((resumed, straight), (resumed_ema, straight_ema)):
        for key, value in ours.state_dict().items():
            assert torch.equal(value, theirs.state_dict()[key]), key


def test_every_q2_head_predicts_probabilities_in_eval_mode_for_a_tail_of_one():
    """A last prediction chunk of one image runs in eval mode: BatchNorm needs no batch statistics there."""
    torch.manual_seed(0)
    model = build_model(dict(backbone="efficientnet_lite0", model="improved", stride4_refine=False))
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    run = SimpleNamespace(evaluation={"tta": True, "tta_scales": [1.0]}, precision="fp32", predict_batch_size=2)
    scores, _, _ = q2_train.evaluate(model, SimpleNamespace(images=images, labels=None), run)
    assert scores.shape == (3, 6, 64, 64) and np.all(scores.astype(int).sum(axis=1) >= 249)
