import gzip
import json
from functools import partial

import numpy as np
import pytest
import torch

from common import training as training_loop
from common.command import UserError
from common.metrics import format_classification
from common.record import count_parameters
from q1_fashion import data as q1_data
from q1_fashion import train as q1_train
from q1_fashion.models import BaseNet, FashionNet, ReportBest, Residual, build_model
from tests.helpers import interrupted_then_resumed, read_metrics, views_only
from tools import check_submission


def test_basenet_architecture_and_output():
    net = BaseNet()
    assert count_parameters(net) == 156 + 1812 + 2316 + 130 == 4414
    assert [tuple(p.shape) for p in net.parameters()] == [(6, 1, 5, 5), (6,), (12, 6, 5, 5), (12,), (12, 192), (12,),
                                                          (10, 12), (10,)]
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_report_best_has_744394_parameters():
    assert count_parameters(ReportBest()) == 744_394
    assert ReportBest().eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_family_without_switches_is_basenet_and_improved_runs():
    assert count_parameters(FashionNet()) == count_parameters(BaseNet())
    config = dict(q1_train.RECIPES["improved"], model="improved")
    net = build_model(config)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_residual_blocks_add_their_input_to_the_plain_blocks_output():
    torch.manual_seed(0)
    plain, residual = FashionNet(8, 3, True), FashionNet(8, 3, True, residual=True)
    assert count_parameters(plain) == count_parameters(residual)  # a shortcut without a projection: no weights
    residual.load_state_dict({key: value for key, value in zip(residual.state_dict(), plain.state_dict().values(),
                                                               strict=True)})
    blocks = [m for m in residual.features if isinstance(m, Residual)]
    assert len(blocks) == 4  # depth 3: two extra blocks in each of the two stages
    plain.eval(), residual.eval()
    x = torch.randn(2, 1, 28, 28)
    # up to the first extra block the two networks are the same layers; then the block adds its input back
    before, block = plain.features[:4](x), plain.features[4:7]
    assert torch.allclose(residual.features[:5](x), before + block(before), atol=1e-6)
    assert FashionNet(8, 1, True, residual=True).state_dict().keys() == FashionNet(8, 1, True).state_dict().keys()
    assert q1_train.parse_args(["--residual"]).residual is True
    with pytest.raises(SystemExit):
        q1_train.parse_args(["--model", "basenet", "--residual"])


def test_split_is_first_55000_then_last_5000():
    train_index, val_index = q1_data.split_indices(60_000)
    assert train_index.tolist() == list(range(55_000))
    assert val_index.tolist() == list(range(55_000, 60_000))


def test_augment_shifts_and_flips_without_changing_content():
    images = torch.randint(1, 255, (64, 28, 28), dtype=torch.uint8)
    out = q1_data.augment(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for original, shifted in zip(padded, out, strict=True):
        candidates = [view[dy:dy + 28, dx:dx + 28] for view in (original, original.flip(-1))
                      for dy in range(5) for dx in range(5)]
        assert any(torch.equal(shifted, candidate) for candidate in candidates)


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_damage(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28) % 255
    good = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(good, images)
    np.testing.assert_array_equal(q1_data.read_idx(good, 3), images)

    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(UserError, match="truncated.gz: cannot read"):
        q1_data.read_idx(truncated, 3)

    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(gzip.decompress(good.read_bytes())[:-10])
    with pytest.raises(UserError, match="short.gz: header says"):
        q1_data.read_idx(short, 3)

    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"this is not gzip at all")
    with pytest.raises(UserError, match="garbage.gz"):
        q1_data.read_idx(garbage, 3)


def test_missing_fashion_mnist_without_network_names_three_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(q1_data, "SYSTEM_DIR", tmp_path / "no-debian-package")

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", offline)
    with pytest.raises(UserError) as error:
        q1_data.load_fashion_mnist(tmp_path / "data")
    message = str(error.value)
    assert "network" in message and "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "data" / "fashion" / "FashionMNIST" / "raw") in message


def test_missing_secret_test_file(tmp_path):
    with pytest.raises(UserError, match="fashion_secret_test_data.npy not found"):
        q1_data.load_secret_test(tmp_path)


def test_missing_data_dir_exits_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(q1_data, "SYSTEM_DIR", tmp_path / "none")
    monkeypatch.setattr("torchvision.datasets.FashionMNIST",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(SystemExit) as exit_info:
        q1_train.run_cli(q1_train.main, ["--data-dir", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "o"),
                                         "--checkpoint-dir", str(tmp_path / "c")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: Fashion-MNIST not found")


def run_q1(tmp_path, name, *extra, course_data):
    args = ["--data-dir", str(course_data), "--out-dir", str(tmp_path / name / "out"),
            "--checkpoint-dir", str(tmp_path / name / "ckpt"), *extra]
    q1_train.main(args)
    return tmp_path / name / "out", tmp_path / name / "ckpt"


@pytest.mark.slow
def test_smoke_one_epoch_writes_every_output(tmp_path, course_data, capsys):
    out, ckpt = run_q1(tmp_path, "smoke", "--model", "basenet", "--epochs", "1", "--limit", "3000",
                       course_data=course_data)
    predictions = np.load(out / "Q1_label_predictions.npy")
    assert predictions.shape == (2000, 10) and predictions.dtype == np.float32
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)
    assert np.load(out / "Q1_val_label_predictions.npy").shape == (5000, 10)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"model", "params", "epochs", "train_seconds", "val_accuracy", "val_per_class"} <= metrics.keys()
    assert metrics["params"] == 4414 and metrics["epochs"] == 1
    assert list(metrics["val_per_class"]) == list(q1_data.CLASSES)
    assert 10 < metrics["val_accuracy"] <= 100
    for name in ("curves.png", "model.txt", "summary.txt"):
        assert (out / name).stat().st_size > 0
    state = torch.load(ckpt / "best.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "epoch", "best", "history", "config", "rng"} <= state.keys()
    assert (ckpt / "last.pt").is_file()

    # the submission checker scores the val file to exactly train.py's numbers
    capsys.readouterr()
    assert check_submission.main([str(out / "Q1_val_label_predictions.npy"), "--data-dir", str(course_data)]) == 0
    checked = capsys.readouterr().out
    assert format_classification(metrics["val_accuracy"], list(metrics["val_per_class"].values()),
                                 q1_data.CLASSES) in checked

    # --eval-only reloads best.pt and reproduces the same numbers and files
    before = read_metrics(out)
    q1_train.main(["--data-dir", str(course_data), "--out-dir", str(out), "--checkpoint-dir", str(ckpt),
                   "--model", "basenet", "--limit", "3000", "--eval-only"])
    assert read_metrics(out) == before
    np.testing.assert_array_equal(np.load(out / "Q1_label_predictions.npy"), predictions)


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, course_data, monkeypatch):
    common = ("--model", "improved", "--width", "8", "--epochs", "3", "--limit", "1500", "--batch-size", "128")
    straight, _ = run_q1(tmp_path, "straight", *common, course_data=course_data)
    again, _ = run_q1(tmp_path, "again", *common, course_data=course_data)
    assert read_metrics(straight) == read_metrics(again)  # same seed, same numbers
    assert [r["epoch"] for r in read_metrics(straight)["history"]] == [1, 2, 3]  # the whole run, not to best

    resumed, _ = interrupted_then_resumed(monkeypatch, partial(run_q1, tmp_path, course_data=course_data),
                                          *common)
    assert read_metrics(resumed) == read_metrics(straight)


@pytest.mark.slow
def test_resume_with_larger_epochs_trains_only_new_epochs(tmp_path, course_data, capsys):
    common = ("--model", "basenet", "--limit", "1000")
    run_q1(tmp_path, "grow", *common, "--epochs", "1", course_data=course_data)
    capsys.readouterr()
    out, ckpt = run_q1(tmp_path, "grow", *common, "--epochs", "2", "--resume", course_data=course_data)
    printed = capsys.readouterr().out
    assert "epoch   1/2" not in printed and "epoch   2/2" in printed
    assert [r["epoch"] for r in torch.load(ckpt / "last.pt", weights_only=False)["history"]] == [1, 2]


def test_the_q1_batches_join_a_last_image_to_the_batch_before_and_bn_trains_on_them():
    """A last batch of one joins the batch before it (BatchNorm cannot train on one image): the batches train.py
    draws, 257 images in batches of 256, are one batch of all 257, and the default network trains a step on it."""
    images = torch.randint(0, 256, (257, 28, 28), dtype=torch.uint8)
    labels = torch.arange(257) % 10
    drawn = list(q1_data.batches(images, labels, 256, augmented=True))
    assert [len(batch_labels) for _, batch_labels in drawn] == [257]
    assert sorted(drawn[0][1].tolist()) == sorted(labels.tolist())  # every image once, shuffled or not
    model = build_model(dict(q1_train.RECIPES["improved"], model="improved", width=4)).train()
    torch.nn.functional.cross_entropy(model(drawn[0][0]), drawn[0][1]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
def test_a_last_batch_of_one_image_trains(tmp_path, course_data):
    # 257 = 256 + 1: the last batch would hold one image, on which BatchNorm1d cannot train
    out, ckpt = run_q1(tmp_path, "one", "--width", "4", "--epochs", "1", "--limit", "257", "--no-tta",
                       course_data=course_data)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.slow
def test_resume_refuses_changed_settings_in_one_line(tmp_path, course_data, capsys):
    common = ("--model", "improved", "--width", "4", "--limit", "600", "--batch-size", "128")
    run_q1(tmp_path, "r", *common, "--epochs", "1", course_data=course_data)
    capsys.readouterr()
    argv = ["--data-dir", str(course_data), "--out-dir", str(tmp_path / "r" / "out"),
            "--checkpoint-dir", str(tmp_path / "r" / "ckpt"), "--resume", "--epochs", "2"]
    with pytest.raises(SystemExit) as exit_info:
        q1_train.run_cli(q1_train.main, [*argv, *common[:4], "--limit", "500", "--lr", "0.3", "--ema-decay", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "was trained with --lr 0.1 --ema-decay 0.995 --limit 600, not --lr 0.3 --ema-decay 0.0 --limit 500" in err[0]
    # settings not given are the checkpoint's own: --width 4 and --batch-size 128 carry over
    q1_train.main([*argv, "--width", "4"])
    config = json.loads((tmp_path / "r" / "out" / "metrics.json").read_text())["config"]
    assert config["batch_size"] == 128 and config["limit"] == 600 and config["epochs"] == 2


@pytest.mark.slow
def test_a_resumed_run_takes_its_new_schedule_from_the_first_step(tmp_path, course_data, monkeypatch):
    common = ("--model", "improved", "--width", "4", "--limit", "512", "--batch-size", "128", "--no-tta")
    run_q1(tmp_path, "s", *common, "--epochs", "1", course_data=course_data)
    seen = []
    real = training_loop.train_one_epoch

    def record(training, batches, loss_fn, epoch):
        seen.append(training.optimizer.param_groups[0]["lr"])
        return real(training, batches, loss_fn, epoch)

    monkeypatch.setattr(q1_train, "train_one_epoch", record)
    run_q1(tmp_path, "s", *common, "--epochs", "3", "--resume", course_data=course_data)
    steps = 4  # 512 images in batches of 128
    expected = 0.1 * training_loop.lr_schedule("onecycle", 3 * steps)(steps)
    assert seen[0] == pytest.approx(expected)  # the old one-epoch schedule had ended at lr 0
    assert expected > 0.05


@pytest.mark.slow
def test_final_trains_on_all_60000_images_and_says_so(tmp_path, course_data, capsys):
    out, ckpt = run_q1(tmp_path, "f", "--model", "basenet", "--epochs", "1", "--final", course_data=course_data)
    printed = capsys.readouterr().out
    assert "train 60000 images" in printed and "the val figures below are not held-out figures" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"] is True and metrics["config"]["final"] is True
    assert [r.keys() for r in metrics["history"]] == [{"epoch", "train_loss"}]  # no val pick of an epoch
    assert (ckpt / "last.pt").is_file() and not (ckpt / "best.pt").exists()
    assert np.load(out / "Q1_label_predictions.npy").shape == (2000, 10)


@pytest.mark.slow
def test_resume_under_bf16_matches_an_uninterrupted_run(tmp_path, course_data, monkeypatch):
    monkeypatch.setattr("common.device.cpu_flags", lambda: {"avx512_bf16"})  # bf16 runs (emulated) anywhere
    common = ("--width", "4", "--epochs", "2", "--limit", "1000", "--batch-size", "128", "--precision", "bf16")
    straight, _ = run_q1(tmp_path, "straight", *common, course_data=course_data)
    assert read_metrics(straight)["train_precision"] == "bf16"
    resumed, _ = interrupted_then_resumed(monkeypatch, partial(run_q1, tmp_path, course_data=course_data),
                                          *common)
    assert read_metrics(resumed) == read_metrics(straight)


def shifted_by_hand(image, dy, dx):
    """`image` (H, W) moved dy rows down and dx columns right, zeros coming in: pixel by pixel."""
    height, width = image.shape
    out = torch.zeros_like(image)
    for y in range(height):
        for x in range(width):
            if 0 <= y - dy < height and 0 <= x - dx < width:
                out[y, x] = image[y - dy, x - dx]
    return out


def test_the_ten_test_time_views_are_the_image_and_mirror_moved_one_pixel_four_ways():
    """README: "the image and its mirror, each also moved 1 pixel four ways (10 views)"."""
    images = torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 28, 28)
    expected_views = [(flip, dy, dx) for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
                      for flip in (False, True)]
    assert q1_data.test_views(True, 1) == expected_views
    assert q1_data.test_views(False, 1) == [(False, 0, 0)] and len(q1_data.test_views(True, 0)) == 2
    by_hand = [torch.stack([shifted_by_hand(image.flip(-1) if flip else image, dy, dx) for image in images])
               for flip, dy, dx in expected_views]
    assert len({tuple(view.flatten().tolist()) for view in by_hand}) == 10  # ten different views
    torch.manual_seed(0)
    net = FashionNet(width=4, batchnorm=True).eval()
    got = q1_train.predictions(net, images, views_only(tta=True, tta_shift=1))
    with torch.no_grad():  # the mean softmax over the ten views, each made pixel by pixel above
        expected = sum(net(q1_data.normalize(view)).softmax(1) for view in by_hand) / 10
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    flip_only = q1_train.predictions(net, images, views_only(tta=True, tta_shift=1), validation=True)
    with torch.no_grad():
        expected = (net(q1_data.normalize(images)).softmax(1) + net(q1_data.normalize(images.flip(-1))).softmax(1)) / 2
    np.testing.assert_allclose(flip_only, expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_quick_check_with_the_default_weight_average_scores_well_above_chance(tmp_path, course_data):
    """README: --limit is for quick checks; the weight average's warm-up keeps a short run's average from
    being the near-random weights of its first steps (it scored 10.46 %, chance, before)."""
    out, _ = run_q1(tmp_path, "quick", "--epochs", "1", "--limit", "2000", course_data=course_data)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["ema_decay"] == 0.995  # the default recipe's average
    assert metrics["val_accuracy"] > 40, metrics["val_accuracy"]
