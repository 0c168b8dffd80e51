"""The shared training plumbing: batches, settings on resume, precision, the weight average, TTA, atomic writes."""
import errno
import os

import numpy as np
import pytest
import torch

from common.average import WeightAverage
from common.checkpoint import save_checkpoint
from common.command import UserError, run_cli
from common.device import autocast, cpu_flags, resolve_precision
from common.files import save_npy, write_json
from common.predict import predict
from common.settings import run_name
from common.training import batch_bounds
from q2_segmentation import train as q2_train

CPU = torch.device("cpu")


def test_a_last_batch_of_one_joins_the_batch_before():
    assert batch_bounds(257, 256) == [(0, 257)]
    assert batch_bounds(512, 256) == [(0, 256), (256, 512)]
    bounds = batch_bounds(55_000, 97)  # 55000 % 97 == 1
    assert bounds[-1] == (97 * 566, 55_000) and len(bounds) == 567  # 566 full batches, then 97 + 1
    assert all(end - start >= 2 for start, end in bounds)
    assert sum(end - start for start, end in bounds) == 55_000
    assert batch_bounds(5, 2) == [(0, 2), (2, 5)]
    assert batch_bounds(4, 2) == [(0, 2), (2, 4)]


def test_network_variants_get_their_own_run_folders():
    ladder = q2_train.RECIPES["ladder"]
    assert run_name("b_ladder", {}, ladder) == "b_ladder"
    assert run_name("b_ladder", {"dilated": True, "batchnorm": True, "stepwise": True}, ladder) == \
        "b_ladder-dilated-batchnorm-stepwise"
    assert run_name("b_ladder", {"dilated": True, "stepwise": False}, ladder) == "b_ladder-dilated"
    assert run_name("improved", {"width": 8, "batchnorm": False}, {"width": 32, "batchnorm": True}, final=True) == \
        "improved-width8-no-batchnorm-final"
    assert run_name("improved", {"width": 32}, {"width": 32}) == "improved"  # the recipe's own value


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: x\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("flags, expected", [
    (set(), "fp32"),
    ({"avx512f", "avx512_bf16"}, "fp32"),  # AVX512-BF16 alone measured slower than fp32
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, "bf16"),
])
def test_auto_precision_on_a_cpu(flags, expected):
    assert resolve_precision("auto", CPU, flags)[0] == expected
    assert resolve_precision("fp32", CPU, flags)[0] == "fp32"


def test_explicit_precisions_the_hardware_lacks_are_clear_errors():
    with pytest.raises(UserError, match="--precision bf16: this CPU has no native bf16"):
        resolve_precision("bf16", CPU, {"avx2"})
    assert resolve_precision("bf16", CPU, {"avx512_bf16"})[0] == "bf16"
    with pytest.raises(UserError, match="--precision fp16: this CPU has no native fp16"):
        resolve_precision("fp16", CPU, {"avx512_bf16"})


def test_precision_flag_parses():
    from q1_fashion import train as q1_train
    assert q1_train.parse_args(["--precision", "bf16"]).precision == "bf16"
    assert q1_train.parse_args([]).precision is None  # auto, or the checkpoint's on --resume
    with pytest.raises(SystemExit):
        q1_train.parse_args(["--precision", "fp8"])


def tiny_classifier():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))


def identity_views(tta):
    from common.predict import View
    return [View("image", lambda x: x)] + ([View("mirror", lambda x: x.flip(-1))] if tta else [])


def test_bf16_predictions_are_float32_probabilities_close_to_fp32():
    images = torch.randn(7, 1, 8, 8)
    net = tiny_classifier().eval()
    for tta in (False, True):
        probabilities = predict(net, images, identity_views(tta), 3, precision="bf16")
        assert probabilities.dtype == np.float32 and probabilities.shape == (7, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        # bf16 keeps 8 bits of mantissa: the probabilities agree with fp32's to about 1e-2
        np.testing.assert_allclose(probabilities, predict(net, images, identity_views(tta), 3), atol=2e-2)
    with autocast("bf16", CPU):
        assert tiny_classifier()(images).dtype == torch.bfloat16  # bf16 really ran


def test_flip_views_for_a_classifier_are_the_mean_of_two_softmaxes():
    net = tiny_classifier().eval()
    x = torch.randn(5, 1, 8, 8)
    expected = (net(x).softmax(1) + net(x.flip(-1)).softmax(1)) / 2  # class scores are not mirrored
    got = predict(net, x, identity_views(True), 2)  # chunks of 2, 2 and 1: a tail of one in eval mode
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-6)


def test_weight_average_ramps_its_decay_and_copies_every_buffer():
    """README: validate and predict with a moving average of the weights, warmed up so a short run is not at
    chance: after n updates the decay is min(decay, (1 + n) / (10 + n))."""
    model = tiny_classifier()
    ours = WeightAverage(model, 0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    expected = None
    for n in range(30):
        model(torch.randn(6, 1, 8, 8)).mean().backward()  # moves BatchNorm statistics too
        optimizer.step()
        optimizer.zero_grad()
        ours.update(model)
        current = {key: value.clone() for key, value in model.state_dict().items()}
        if expected is None:  # the first update copies the weights
            expected = current
        else:  # by hand: d = min(0.9, (1 + n) / (10 + n)) after n updates, integer counters copied
            d = min(0.9, (1 + n) / (10 + n))
            expected = {key: d * expected[key] + (1 - d) * value if value.is_floating_point() else value
                        for key, value in current.items()}
    assert ours.updates == 30 and ours.current_decay == 31 / 40  # still ramping: 0.9 from 80 updates on
    assert [round(min(0.9, (1 + n) / (10 + n)), 4) for n in (1, 5, 80)] == [0.1818, 0.4, 0.9]
    for key, value in ours.module.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    counter = [key for key in expected if not expected[key].is_floating_point()]
    assert counter and all(torch.equal(ours.module.state_dict()[key], model.state_dict()[key]) for key in counter)
    restored = WeightAverage(tiny_classifier(), 0.9)
    restored.load_state_dict(ours.state_dict())
    assert restored.updates == 30 and restored.current_decay == ours.current_decay
    torch.testing.assert_close(restored.module.state_dict(), ours.module.state_dict())


class FullDisk:
    """os.fdopen whose files write half of what they are given, then fail as a full disk does."""

    def __init__(self, real):
        self.real = real

    def __call__(self, fd, mode):
        file = self.real(fd, mode)
        real_write = file.write

        def write(data):
            real_write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        file.write = write
        return file


@pytest.mark.parametrize("kind", ["checkpoint", "npy", "json"])
def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch, kind):
    target = tmp_path / {"checkpoint": "last.pt", "npy": "Q1_label_predictions.npy", "json": "metrics.json"}[kind]
    model = tiny_classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def write(value):
        if kind == "checkpoint":
            save_checkpoint(target, model=model, optimizer=optimizer, scheduler=scheduler, epoch=value, best=0.0,
                            history=[], config={})
        elif kind == "npy":
            save_npy(target, np.full(1000, value))
        else:
            write_json(target, {"epoch": value})

    write(1)
    before = target.read_bytes()
    monkeypatch.setattr(os, "fdopen", FullDisk(os.fdopen))
    with pytest.raises(UserError) as error:
        write(2)
    assert str(error.value) == f"cannot write {target}: No space left on device (the previous file is intact)"
    assert target.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == [target.name]  # no temporary file left


def test_gpu_out_of_memory_is_one_line(capsys):
    def main(argv):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the GPU ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); try a smaller "
                   "--batch-size. The saved checkpoints are intact"]


def test_the_weight_average_is_not_trained():
    average = WeightAverage(tiny_classifier(), 0.9)
    assert not any(p.requires_grad for p in average.module.parameters())
