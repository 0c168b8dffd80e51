"""The record describes what happened (README, Reliability): stretches of training with their schedules, the
precision trained in apart from the one evaluated in, the views actually used, an unfinished run as such."""
import json
from types import SimpleNamespace

import pytest
import torch

from common.checkpoint import Result, weights_to_predict_with
from common.record import announce, write_record
from common.training import Training, start_or_resume, train_one_epoch
from q1_fashion import train as q1_train
from q1_fashion.data import describe_views as q1_views
from q2_segmentation.data import describe_views as q2_views
from tests.helpers import checkpoint_of, settings, train_epochs
from tests.test_defaults import fake_run, save, tiny_net


def train_tiny(folder, epochs, mode="train", saved=None, schedule="onecycle"):
    folder.mkdir(exist_ok=True)
    torch.manual_seed(0)
    model = tiny_net(0)
    run = fake_run(folder, epochs=epochs, schedule=schedule)
    run.mode, run.saved = mode, saved
    training = start_or_resume(run, model, torch.optim.SGD(model.parameters(), lr=0.1), 2, score="score")
    inputs, targets = torch.randn(8, 4), torch.randint(0, 3, (8,))
    batches = [(inputs[:4], targets[:4]), (inputs[4:], targets[4:])]
    train_epochs(training, lambda epoch: train_one_epoch(training, batches, torch.nn.CrossEntropyLoss(), epoch),
                 lambda: {"score": 1.0})
    return torch.load(folder / "last.pt", weights_only=False)


def test_a_run_resumed_with_more_epochs_records_both_stretches_and_says_the_schedule_changed(tmp_path, capsys):
    """--epochs 1, then --resume --epochs 2: recorded as one 2-epoch run before; now as what happened."""
    first = train_tiny(tmp_path, 1)
    assert first["stretches"] == [{"first_epoch": 1, "last_epoch": 1, "schedule_epochs": 1, "precision": "fp32",
                                   "device": "cpu", "resumed": False}]
    capsys.readouterr()
    second = train_tiny(tmp_path, 2, mode="resume", saved=first)
    assert second["stretches"] == [{"first_epoch": 1, "last_epoch": 1, "schedule_epochs": 1, "precision": "fp32",
                                    "device": "cpu", "resumed": False},
                                   {"first_epoch": 2, "last_epoch": 2, "schedule_epochs": 2, "precision": "fp32",
                                    "device": "cpu", "resumed": True}]  # the first as recorded, not rebuilt
    assert ("NOTE: the schedule changes: epochs 1-1 followed the 1-epoch schedule; epochs 2-2 follow the 2-epoch "
            "one from its step 2") in capsys.readouterr().out
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and all(r["finished_at"] for r in history)
    # a resume that keeps the schedule is one schedule: no note
    train_tiny(tmp_path / "same", 2, mode="train")
    capsys.readouterr()
    kept = torch.load(tmp_path / "same" / "last.pt", weights_only=False)
    train_tiny(tmp_path / "same", 2, mode="resume", saved=kept)
    assert "schedule changes" not in capsys.readouterr().out


def test_the_validated_epochs_by_hand(tmp_path):
    def validated(epochs, every):
        training = start_or_resume(fake_run(tmp_path, epochs=epochs), tiny_net(0),
                                   torch.optim.SGD(tiny_net(0).parameters(), lr=0.1), 1, score="s", val_every=every)
        return [epoch for epoch in training.epochs() if training.validates(epoch)]
    assert validated(6, 7) == [6] and validated(14, 7) == [7, 14] and validated(3, 1) == [1, 2, 3]
    final = fake_run(tmp_path, epochs=3)
    final.final = True  # its val images are training images: never validated
    training = start_or_resume(final, tiny_net(0), torch.optim.SGD(tiny_net(0).parameters(), lr=0.1), 1, score="s")
    assert not any(training.validates(epoch) for epoch in training.epochs())


def test_eval_only_in_another_precision_records_both_and_the_views_used(tmp_path):
    ckpt = tmp_path / "C"
    trained = settings(q1_train, "--no-tta", "--checkpoint-dir", str(ckpt), "--out-dir", str(tmp_path / "O"))
    ckpt.mkdir()
    torch.save(checkpoint_of("q1_fashion", dict(trained.record, precision="bf16"), 3, run_id="r1"), ckpt / "last.pt")
    evaluated = settings(q1_train, "--eval-only", "--precision", "fp32", "--checkpoint-dir", str(ckpt), "--out-dir",
                         str(tmp_path / "O"))
    (tmp_path / "O").mkdir()
    stretches = [{"first_epoch": 1, "last_epoch": 15, "schedule_epochs": 15, "precision": "bf16", "device": "cpu",
                  "resumed": False}]
    history = [{"epoch": e, "train_loss": 1.0, "seconds": 2.0} for e in range(1, 16)]
    state = {"epoch": 15, "history": history}
    write_record(evaluated, torch.nn.Linear(2, 2), Result(state, state, history, stretches, 15, True, True),
                 q1_views(evaluated.evaluation), {})
    metrics = json.loads((tmp_path / "O" / "metrics.json").read_text())
    assert metrics["train_precision"] == "bf16" and metrics["eval_precision"] == "fp32"
    assert metrics["config"]["precision"] == "bf16"  # the settings it was trained with, not the evaluation's
    assert metrics["views"] == "1 test-time view (the image)" and metrics["config"]["tta_shift"] == 0
    assert metrics["run_id"] == "r1" and metrics["train_seconds"] == 30.0 and "finished_at" not in str(metrics)


def test_the_views_in_words_count_what_predict_uses():
    assert q1_views({"tta": True, "tta_shift": 1}).startswith("10 test-time views")
    assert q1_views({"tta": True, "tta_shift": 0}) == "2 test-time views (the image and its mirror)"
    assert q1_views({"tta": False, "tta_shift": 1}) == "1 test-time view (the image)"
    assert q2_views({"tta": True, "tta_scales": [0.75, 1.0, 1.25]}) == \
        "6 test-time views (the image and its mirror at scales 0.75, 1, 1.25)"
    assert q2_views({"tta": False, "tta_scales": [0.75, 1.0]}) == "1 test-time view (the image)"


def test_before_the_first_validation_the_last_epoch_predicts_and_the_run_says_so(tmp_path, capsys):
    """A Q2 run stopped before epoch 7 has last.pt and no best.pt: --eval-only predicts from last.pt."""
    model = tiny_net(0)
    save(tmp_path / "last.pt", model, None, epoch=3)
    run = fake_run(tmp_path, epochs=17)
    result = weights_to_predict_with(run, tiny_net(1))
    assert result.state["epoch"] == 3 and not result.validated and not result.finished and result.epochs == 3
    announce(SimpleNamespace(final=False, precision="fp32", evaluation={}, recipe=run.recipe,
                             options={"holdout": None, "limit": None}, trained_on=None), result, "2 test-time views")
    out = capsys.readouterr().out
    assert "NOTE: this run is unfinished: 3 of 17 epochs trained (continue it with --resume)" in out


def test_one_epoch_steps_once_a_batch_returns_the_mean_loss_and_stops_on_a_nan_before_the_step():
    """train_one_epoch against a hand count: 3 batches, 3 optimizer and schedule steps and weight-average
    updates, the mean of the 3 losses; a NaN in batch 2 stops before that batch's step, naming it."""
    from common.average import WeightAverage
    from common.command import TrainingStopped
    from common.device import make_scaler
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema = WeightAverage(model, 0.9)
    batches = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(3)]
    losses = iter([0.5, 1.0, 3.0])

    def loss_fn(outputs, targets):
        return (outputs * 0).sum() + next(losses)

    training = SimpleNamespace(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema, steps_per_epoch=3,
                               scaler=make_scaler("fp32", torch.device("cpu")), run=SimpleNamespace(precision="fp32"))
    mean = train_one_epoch(training, batches, loss_fn, 4)
    assert mean == pytest.approx(1.5) and model.training
    assert scheduler.last_epoch == 3 and ema.updates == 3
    weights = [p.clone() for p in model.parameters()]
    nan_losses = iter([0.5, float("nan")])

    def nan_loss(outputs, targets):
        return (outputs * 0).sum() + next(nan_losses)

    with pytest.raises(TrainingStopped) as error:
        train_one_epoch(SimpleNamespace(**{**vars(training), "ema": None}), batches, nan_loss, 5)
    assert str(error.value) == "training loss became nan at epoch 5, batch 2; lower --lr"
    assert scheduler.last_epoch == 4  # batch 1 stepped, batch 2 did not
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))  # zero gradients


def test_the_epoch_loop_prints_records_and_checkpoints_each_epoch_and_resumes_on_the_new_schedule(tmp_path, capsys):
    """The loop against a hand count: the schedule spans steps_per_epoch x epochs, each epoch prints one line and
    writes last.pt with the run's settings and identity, a resume says where it starts and sets the rate of its
    new schedule at the step reached, and a finished run has nothing to train."""
    from common.training import lr_schedule

    first = train_tiny(tmp_path, 2)
    out = capsys.readouterr().out
    assert "epoch   1/2  train_loss " in out and "  score 1.0000  seconds " in out and "epoch   2/2  " in out
    assert first["config"] == {"schedule": "onecycle", "epochs": 2, "ema_decay": 0.9}
    assert first["run_id"] == "test" and first["question"] == "test" and first["epoch"] == 2
    assert [r["epoch"] for r in first["history"]] == [1, 2] and all(0 <= r["seconds"] < 60 for r in first["history"])
    assert all("train_loss" in r for r in first["history"])
    assert first["scheduler"]["last_epoch"] == 4  # 2 epochs of 2 steps
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 1 and [r["epoch"] for r in best["history"]] == [1]  # a tie keeps the first epoch
    assert best["stretches"][0]["first_epoch"] == 1
    capsys.readouterr()
    train_tiny(tmp_path / "again", 2, mode="resume", saved=best)  # epoch 1 of a 2-epoch schedule, resumed as such
    assert "schedule changes" not in capsys.readouterr().out
    result = weights_to_predict_with(fake_run(tmp_path, epochs=2), tiny_net(1))
    assert result.finished and result.epochs == 2 and result.state["epoch"] == 1 and result.last["epoch"] == 2
    assert result.stretches == first["stretches"]
    assert first["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * lr_schedule("onecycle", 4)(4))

    torch.manual_seed(0)
    model = tiny_net(0)
    run = fake_run(tmp_path, epochs=5)
    run.mode, run.saved = "resume", first
    training = Training(run, model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=2)
    training.restore(first)
    assert training.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr_schedule("onecycle", 10)(4))
    capsys.readouterr()
    train_tiny(tmp_path, 2, mode="resume", saved=first)
    assert capsys.readouterr().out.startswith("resumed after epoch 2 (best score so far 1.0000)\n"
                                              "nothing to train: the checkpoint already has 2 of 2 epochs")
    (tmp_path / "last.pt").unlink()  # a full disk lost last.pt: best.pt predicts, and is the record
    assert weights_to_predict_with(fake_run(tmp_path, epochs=2), tiny_net(1)).last["epoch"] == 1
