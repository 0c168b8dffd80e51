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
    assert batch_bounds(1, 4) == [(0, 1)]  # a whole set of one is one batch: nothing before it to join


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


# --- the training step and the end of an epoch (common/training.py), each against a hand-made case ---------------

def test_the_one_cycle_schedule_ends_at_zero_however_short():
    """Warm-up to the peak, then cosine to 0 at the last step, even when a single step follows the warm-up."""
    from common.training import lr_schedule
    multiplier = lr_schedule("onecycle", 2)  # warm-up: max(1, int(0.3)) = 1 step
    assert [multiplier(step) for step in (0, 1, 2)] == [pytest.approx(0.1), 1.0, pytest.approx(0.0, abs=1e-12)]


def test_seed_everything_repeats_every_stream():
    import random

    from common.training import seed_everything
    draws = []
    for _ in range(2):
        seed_everything(3)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_the_loss_scaler_travels_with_the_checkpoint_and_the_gpu_writes_last_pt_by_the_minute(tmp_path):
    """An fp16 run's scaler is enabled, its scale saved in the checkpoint and restored on resume; the checkpoint
    records the data the run used; on a GPU last.pt waits GPU_LAST_EVERY seconds, on a CPU none."""
    from types import SimpleNamespace

    from common.training import GPU_LAST_EVERY, Training
    from tests.test_defaults import fake_run, tiny_net
    run = fake_run(tmp_path, ema_decay=0.0)
    run.precision, run.data = "fp16", {"val_fingerprint": "abc"}
    model = tiny_net(0)
    training = Training(run, model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1)
    assert training.scaler.is_enabled() and training.last_every == 0.0
    training.scaler.scale(torch.ones(1))  # the scale exists from the first scaled loss on
    training.scaler.update(2.0 ** 7)  # a scale the scaler reached
    training.checkpoint(tmp_path / "last.pt", 1)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["data"] == {"val_fingerprint": "abc"} and state["scaler"]["scale"] == 2.0 ** 7
    resumed = Training(run, tiny_net(1), torch.optim.SGD(tiny_net(1).parameters(), lr=0.1), steps_per_epoch=1)
    resumed.restore(state)
    assert resumed.scaler.get_scale() == 2.0 ** 7
    on_a_gpu = dict(vars(run), precision="fp32", device=SimpleNamespace(type="cuda"))
    assert Training(SimpleNamespace(**on_a_gpu), model, torch.optim.SGD(model.parameters(), lr=0.1),
                    steps_per_epoch=1).last_every == GPU_LAST_EVERY


def test_a_restored_optimizer_keeps_this_devices_foreach_setting(tmp_path):
    """How the optimizer computes is this machine's, for `foreach` as for `fused`: a checkpoint of a foreach
    optimizer resumes with the default (None) this one was made with."""
    from common.checkpoint import capture_rng
    from common.training import Training
    from tests.test_defaults import fake_run, tiny_net
    model = tiny_net(0)
    saved = torch.optim.AdamW(model.parameters(), lr=0.1, foreach=True)
    training = Training(fake_run(tmp_path, ema_decay=0.0), model, torch.optim.AdamW(model.parameters(), lr=0.1), 1)
    training.restore({"model": model.state_dict(), "optimizer": saved.state_dict(), "ema": None, "scaler": None,
                      "scheduler": training.scheduler.state_dict(), "rng": capture_rng()})
    assert training.optimizer.param_groups[0]["foreach"] is None


def test_what_a_resume_prints(tmp_path, capsys):
    """A resumed --final run (no validation) says only where it resumes; a constant schedule never 'changes'; a
    one-cycle one that does says so in full."""
    from common.training import start_or_resume
    from tests.test_defaults import fake_run, tiny_net
    model = tiny_net(0)
    state = {"model": model.state_dict(), "epoch": 1, "best": -float("inf"), "history": [],
             "stretches": [{"first_epoch": 1, "last_epoch": 1, "schedule_epochs": 1}]}

    def resume(schedule, final=False, score="score"):
        run = fake_run(tmp_path, epochs=3, ema_decay=0.0, schedule=schedule)
        run.final, run.mode = final, "resume"
        fresh = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 1.0)
        from common.checkpoint import capture_rng
        run.saved = dict(state, optimizer=fresh.state_dict(), scheduler=scheduler.state_dict(), ema=None,
                         scaler=None, rng=capture_rng())
        start_or_resume(run, model, fresh, 2, score=score)
        return capsys.readouterr().out.splitlines()

    assert resume("onecycle", final=True)[0] == "resumed after epoch 1"
    assert resume("constant") == ["resumed after epoch 1 (no epoch validated yet)"]
    assert resume("onecycle")[1] == ("NOTE: the schedule changes: epochs 1-1 followed the 1-epoch schedule; epochs "
                                     "2-3 follow the 3-epoch one from its step 2 (metrics.json records both "
                                     "stretches)")


def test_an_epoch_of_one_batch_and_the_last_losses_read_at_its_end(monkeypatch):
    """The mean of one batch is its loss; with a GPU's reading interval the losses left at the epoch's end are
    read there, a NaN among them named with its epoch and batch; other warnings than the scheduler's pass."""
    import warnings

    from common import training as steps
    from tests.helpers import one_epoch

    def epoch(losses, batches):
        model = torch.nn.Linear(2, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        values = iter(losses)
        return one_epoch(model, [(torch.ones(1, 2), torch.tensor([0]))] * batches, optimizer,
                         torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                         lambda outputs, targets: (outputs * 0).sum() + next(values), epoch=7)

    assert epoch([3.0], 1) == 3.0
    monkeypatch.setattr(steps, "loss_reads_every", lambda device: 8)
    assert epoch([1.0] * 22, 22) == 1.0  # two reads of 8 in the epoch, 6 at its end (the 20th among them)
    with pytest.raises(UserError, match="^training loss became nan at epoch 7, batch 10;"):
        epoch([1.0] * 9 + [float("nan")], 10)

    def warns(outputs, targets):
        warnings.warn("a warning of the loss's own", UserWarning, stacklevel=1)
        return outputs.sum()

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="of the loss's own"):
        one_epoch(model, [(torch.ones(1, 2), torch.tensor([0]))], optimizer,
                  torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), warns)
