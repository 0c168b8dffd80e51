"""The GPU code paths: the device and precision a run chooses, fp16 with its loss scaler, the GPU random streams
in checkpoints, out-of-memory lines, and training, resuming and evaluating on every device present.

Each end-to-end test is one body run on the devices present: the CPU always (fp16 runs there through PyTorch's
CPU autocast and `GradScaler("cpu")`), CUDA and an Apple GPU where PyTorch sees them. The choices that depend on
what a GPU reports (its compute capability, its bf16, the architectures this PyTorch was built for) are tested
with stand-ins for those reports: a Colab T4, an A100, a GTX 1060, a CPU-only build.
"""
import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

from common import checkpoint as checkpoints
from common import training as training_loop
from common.command import UserError, run_cli
from common.device import autocast_runs, make_scaler, pick_device, resolve_precision
from common.predict import View, predict
from q1_fashion import train as q1_train
from q2_segmentation import train as q2_train
from tests.conftest import devices
from tests.helpers import interrupt_at_epoch, one_epoch, read_metrics, train_epochs

CUDA = torch.device("cuda")


# --- stand-ins for what a GPU reports ----------------------------------------------------------------------------

def stand_in_gpu(monkeypatch, capability, name, *, arch_list=("sm_75", "sm_80", "sm_86", "sm_90"), cuda="12.6"):
    """Make PyTorch report one CUDA GPU of `capability` with this PyTorch's `arch_list`. is_bf16_supported
    answers as PyTorch 2.4 on does: natively from 8.0, and by emulation (its default) on any GPU."""
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arch_list))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: capability[0] >= 8 or including_emulation)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def test_a_t4_trains_in_fp16_and_refuses_bf16(monkeypatch):
    """Colab's T4 (7.5): PyTorch says it "supports" bf16 by emulation; the run uses fp16 with the loss scaler."""
    stand_in_gpu(monkeypatch, (7, 5), "Tesla T4")
    assert torch.cuda.is_bf16_supported()  # the stand-in answers as PyTorch does on a T4
    precision, reason = resolve_precision("auto", CUDA)
    assert precision == "fp16" and reason == "the GPU (Tesla T4, compute capability 7.5) has no native bf16: fp16 " \
                                             "with a loss scaler"
    with pytest.raises(UserError, match=r"^--precision bf16: this GPU \(Tesla T4, compute capability 7.5\) has no "
                                        r"native bf16 \(it needs compute capability 8.0 or later\); use --precision "
                                        r"fp16 or auto$"):
        resolve_precision("bf16", CUDA)
    assert resolve_precision("fp16", CUDA) == ("fp16", "--precision")
    assert resolve_precision("fp32", CUDA) == ("fp32", "--precision")
    assert make_scaler("fp16", CUDA).is_enabled() and not make_scaler("bf16", CUDA).is_enabled()


def test_an_a100_trains_in_bf16(monkeypatch):
    stand_in_gpu(monkeypatch, (8, 0), "NVIDIA A100-SXM4-40GB")
    assert resolve_precision("auto", CUDA) == ("bf16", "the GPU computes bf16 natively")
    assert resolve_precision("bf16", CUDA) == ("bf16", "--precision")


def test_a_pytorch_without_the_emulation_argument_is_asked_plainly(monkeypatch):
    """PyTorch before 2.4: is_bf16_supported() takes no argument; capability 8.6 has native bf16."""
    stand_in_gpu(monkeypatch, (8, 6), "NVIDIA GeForce RTX 3060")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", CUDA)[0] == "bf16"


def test_the_gpu_choice_sets_cudnn_benchmark_and_auto_takes_a_supported_gpu(monkeypatch):
    stand_in_gpu(monkeypatch, (7, 5), "Tesla T4")
    assert pick_device("auto") == CUDA and torch.backends.cudnn.benchmark is True


def test_a_cpu_only_build_says_so_in_one_line(monkeypatch, capsys):
    """What PyPI installs on Windows: torch.version.cuda is None, so --device cuda cannot work whatever the card."""
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(q1_train.main, ["--device", "cuda"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --device cuda: this PyTorch ({torch.__version__}) is a CPU-only build; install a CUDA build "
        "(pytorch.org's install selector gives the command) or use --device cpu"]
    assert pick_device("auto") == torch.device("cpu")


def test_auto_with_an_nvidia_driver_and_a_cpu_only_build_trains_on_the_cpu_and_says_why(monkeypatch, capsys):
    """A Windows laptop with an NVIDIA card and PyPI's PyTorch: the CPU, with a NOTE naming the CPU-only build."""
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("common.device.shutil.which", lambda name: "C:/Windows/System32/nvidia-smi.exe")
    assert pick_device("auto") == torch.device("cpu")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(
        f"NOTE: this machine has an NVIDIA driver (nvidia-smi), but this PyTorch ({torch.__version__}) is a CPU-only "
        "build: training on the CPU")
    monkeypatch.setattr("common.device.shutil.which", lambda name: None)
    assert pick_device("auto") == torch.device("cpu") and capsys.readouterr().out == ""  # no NVIDIA driver: quiet


def test_a_cuda_build_that_sees_no_gpu_names_the_driver(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"PyTorch sees no CUDA GPU \(is the NVIDIA driver installed\? `nvidia-smi`"):
        pick_device("cuda")


@pytest.mark.parametrize("capability, arch_list, usable", [
    ((6, 1), ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"), False),  # a GTX 1060 and recent wheels
    ((8, 9), ("sm_75", "sm_80", "sm_86"), True),    # an sm_86 cubin runs on 8.9: same major, lower minor
    ((8, 0), ("sm_75", "sm_86"), False),            # but not on 8.0: a cubin needs the minor it was built for
    ((12, 0), ("sm_80", "sm_90", "compute_90"), True),  # PTX for 9.0 is compiled by the driver for later GPUs
    ((12, 0), ("sm_80", "sm_90"), False),           # no PTX: nothing runs on a newer major version
    ((9, 0), ("sm_80", "sm_90a"), True),            # an arch-specific cubin (9.0a) runs on its own GPU
])
def test_a_gpu_missing_from_the_builds_architectures_is_one_line(monkeypatch, capsys, capability, arch_list, usable):
    stand_in_gpu(monkeypatch, capability, "NVIDIA GeForce GTX 1060", arch_list=arch_list)
    if usable:
        assert pick_device("cuda") == CUDA
        return
    words = f"compute capability {capability[0]}.{capability[1]}"
    with pytest.raises(UserError, match=rf"^--device cuda: the GPU \(NVIDIA GeForce GTX 1060, {words}\) is not one "
                                        rf"this PyTorch .* was built for \({' '.join(arch_list)}\); install a PyTorch "
                                        "build for it"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")  # auto trains on the CPU and says why
    assert capsys.readouterr().out.startswith(f"NOTE: the GPU (NVIDIA GeForce GTX 1060, {words}) is not one this")


def test_a_mac_gpu_takes_only_the_precisions_it_runs(monkeypatch):
    mps = torch.device("mps")
    assert resolve_precision("auto", mps) == ("fp32", "the default on an Apple GPU")
    monkeypatch.setattr("common.device.autocast_runs", lambda device, precision: precision == "fp16")
    assert resolve_precision("fp16", mps) == ("fp16", "--precision")
    with pytest.raises(UserError, match=r"^--precision bf16: this Mac's PyTorch .* does not run bf16 on the Apple GPU "
                                        r"\(bf16 needs macOS 14 or later\); use --precision fp32$"):
        resolve_precision("bf16", mps)


def test_the_autocast_probe_sees_a_precision_autocast_does_not_run(monkeypatch):
    """The probe behind the Mac's check, on the CPU: PyTorch runs fp16 and bf16 autocast there; an autocast that
    computes in float32 instead (what PyTorch does, with a warning, for a dtype a device lacks) is caught."""
    cpu = torch.device("cpu")
    assert autocast_runs(cpu, "fp16") and autocast_runs(cpu, "bf16")

    class Float32Autocast:
        def __init__(self, *args, **kwargs):
            warnings.warn("In autocast, but the target dtype is not supported. Disabling autocast.", stacklevel=2)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch, "autocast", Float32Autocast)
    assert not autocast_runs(cpu, "fp16")


def test_fp16_on_a_cpu_needs_native_fp16():
    cpu = torch.device("cpu")
    assert resolve_precision("fp16", cpu, {"avx512_fp16"}) == ("fp16", "--precision")
    with pytest.raises(UserError, match=r"^--precision fp16: this CPU has no native fp16"):
        resolve_precision("fp16", cpu, {"avx512_bf16", "amx_bf16"})
    assert resolve_precision("auto", cpu, {"avx512_fp16"})[0] == "fp32"  # auto never picks fp16 on a CPU


# --- the GPU random streams in a checkpoint ----------------------------------------------------------------------

def test_a_checkpoint_from_two_gpus_resumes_on_one(monkeypatch):
    """The saved streams of GPUs 0 and 1 restore GPU 0's where only GPU 0 exists (PyTorch's set_rng_state_all
    would index GPU 1 and fail)."""
    restored = []

    def set_rng_state(state, device="cuda"):
        if device not in (0, "cuda"):
            raise IndexError("list index out of range")  # what PyTorch raises for a GPU index that is not there
        restored.append((int(state[0]), device))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.tensor([7], dtype=torch.uint8)])
    state = checkpoints.capture_rng()
    assert [int(s[0]) for s in state["cuda"]] == [7]
    state["cuda"] = [torch.tensor([10], dtype=torch.uint8), torch.tensor([11], dtype=torch.uint8)]
    checkpoints.restore_rng(state)
    assert restored == [(10, 0)]


def test_a_cuda_checkpoint_resumes_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = checkpoints.capture_rng()
    assert "cuda" not in state
    state["cuda"] = [torch.tensor([1], dtype=torch.uint8)]
    checkpoints.restore_rng(state)  # nothing to restore it to: left out, no error


def test_the_apple_gpu_random_stream_travels_with_the_checkpoint(monkeypatch):
    saved, restored = torch.tensor([3, 1, 4], dtype=torch.uint8), []
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda device="mps": saved.clone())
    monkeypatch.setattr(torch.mps, "set_rng_state", lambda state, device="mps": restored.append(state))
    state = checkpoints.capture_rng()
    assert torch.equal(state["mps"], saved)
    checkpoints.restore_rng(state)
    assert len(restored) == 1 and torch.equal(restored[0], saved)


# --- out of memory -----------------------------------------------------------------------------------------------

class Exhausted(torch.nn.Module):
    """A network whose forward pass fails as a full GPU does: `error` in training or in eval mode."""

    def __init__(self, error, when_training):
        super().__init__()
        self.linear, self.error, self.when_training = torch.nn.Linear(4, 3), error, when_training

    def forward(self, x):
        if self.training == self.when_training:
            raise self.error
        return self.linear(x)


ERRORS = [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
          RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.2 GB)"),
          RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")]


@pytest.mark.parametrize("error", ERRORS, ids=["cuda", "mps", "cudnn"])
def test_out_of_memory_names_the_batch_that_ran_out(error):
    first_line = str(error).splitlines()[0]
    model = Exhausted(error, when_training=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError) as training:
        one_epoch(model, [(torch.ones(2, 4), torch.zeros(2, dtype=torch.long))], optimizer,
                  torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), torch.nn.CrossEntropyLoss())
    assert str(training.value) == (f"the GPU ran out of memory ({first_line}); try a smaller --batch-size. The saved "
                                   "checkpoints are intact")
    with pytest.raises(UserError) as predicting:
        predict(Exhausted(error, when_training=False), torch.ones(5, 4), [View("id", lambda x: x)], 2)
    assert str(predicting.value) == (f"the GPU ran out of memory ({first_line}); try a smaller --predict-batch-size "
                                     "(it was 2). The saved checkpoints are intact")


@pytest.mark.parametrize("error", ERRORS, ids=["cuda", "mps", "cudnn"])
def test_out_of_memory_outside_a_batch_is_one_line_and_other_errors_are_not_hidden(error, capsys):
    def main(argv):
        raise error

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: the GPU ran out of memory ({str(error).splitlines()[0]}); try a smaller --batch-size. "
                   "The saved checkpoints are intact"]
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(lambda argv: (_ for _ in ()).throw(RuntimeError("a bug")), [])


# --- fp16 with its loss scaler -----------------------------------------------------------------------------------

OPTIMIZERS = {  # each question's optimizer with the kernels it steps with
    "Q1: SGD": lambda parameters: torch.optim.SGD(parameters, lr=0.1, momentum=0.9, nesterov=True),
    "Q2 on a CPU: AdamW": lambda parameters: torch.optim.AdamW(parameters, lr=1e-2),
    "Q2 on a CUDA GPU: fused AdamW": lambda parameters: torch.optim.AdamW(parameters, lr=1e-2, fused=True),
}


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_a_scaler_that_skips_overflowing_steps_settles_and_then_trains(optimizer_name):
    """A loss scale far too large for fp16 overflows the first steps: each is skipped (the weights do not move, the
    scale halves), the schedule still counts it without the scheduler's warning, and once the scale settles the
    weights update and stay finite. Also with the fused AdamW a CUDA GPU steps Q2 with, which takes the overflow
    flag on the device (no host read)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)
    batches = [(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])) for _ in range(40)]
    weights, scales = [], []

    class Recorder(list):  # the batches, recording the weights and the scale before each step
        def __iter__(self):
            for batch in super().__iter__():
                weights.append(model[2].weight.detach().clone())
                scales.append(scaler.get_scale())
                yield batch

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test, the scheduler's included
        loss = one_epoch(model, Recorder(batches), optimizer, scheduler, torch.nn.CrossEntropyLoss(),
                         precision="fp16", scaler=scaler)
    weights.append(model[2].weight.detach().clone())
    scales.append(scaler.get_scale())
    moved = [not torch.equal(before, after) for before, after in zip(weights, weights[1:], strict=False)]
    skipped = moved.index(True)
    assert skipped >= 3, "the first steps overflow at a scale of 2**40"
    assert scales[:skipped + 1] == [2.0 ** (40 - k) for k in range(skipped + 1)]  # halved at each skipped step
    # once the scale settles the weights update: a step moves them exactly when the scale did not halve
    assert moved == [after >= before for before, after in zip(scales, scales[1:], strict=False)]
    assert sum(moved) >= 10 and all(parameter.isfinite().all() for parameter in model.parameters())
    assert scheduler.last_epoch == len(batches) and np.isfinite(loss)


def test_q2_steps_with_fused_kernels_on_a_cuda_gpu_and_the_default_ones_elsewhere():
    from tests.helpers import settings
    run = settings(q2_train, "--backbone", "efficientnet_lite0", "--no-pretrained", "--precision", "fp32")
    model = q2_train.build(run, None)
    on_the_gpu = q2_train.make_optimizer(model, dataclasses.replace(run, device=CUDA))  # the weights stay here
    assert all(group["fused"] for group in on_the_gpu.param_groups)
    assert not any(group["fused"] for group in q2_train.make_optimizer(model, run).param_groups)
    q1_run = settings(q1_train, "--width", "4", "--precision", "fp32")  # Q1's SGD: the default kernels everywhere
    assert not q1_train.make_optimizer(q1_train.build(q1_run), q1_run).param_groups[0]["fused"]


def test_a_checkpoint_of_fused_kernels_resumes_with_this_devices_kernels(tmp_path):
    """What the optimizer holds comes from the checkpoint; how it computes stays this device's: a GPU run's
    checkpoint (Q2's fused AdamW) continues on a CPU with the CPU's kernels."""
    from common.checkpoint import capture_rng
    from tests.test_defaults import fake_run, tiny_net
    model = tiny_net(0)
    on_the_gpu = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    torch.nn.functional.cross_entropy(model(torch.randn(2, 4)), torch.tensor([0, 1])).backward()
    on_the_gpu.step()
    training = training_loop.Training(fake_run(tmp_path, ema_decay=0.0), model,
                                      torch.optim.AdamW(model.parameters(), lr=0.1), steps_per_epoch=1)
    training.restore({"model": model.state_dict(), "optimizer": on_the_gpu.state_dict(), "ema": None, "scaler": None,
                      "scheduler": training.scheduler.state_dict(), "rng": capture_rng()})
    group = training.optimizer.param_groups[0]
    assert not group["fused"] and group["lr"] == pytest.approx(0.1 * 0.1)  # the schedule's first step: 0.1 x peak
    first = group["params"][0]
    assert torch.equal(training.optimizer.state[first]["exp_avg"], on_the_gpu.state[first]["exp_avg"])
    batch = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    training_loop.train_one_epoch(training, batch, torch.nn.CrossEntropyLoss(), 1)  # it steps


# --- training, resuming and evaluating on every device -----------------------------------------------------------

# The CPU runs the GPU's fp16 path (fp32 on the CPU is what every other end-to-end test runs)
PRECISIONS = [(device, precision) for device in devices()
              for precision in {"cpu": ["fp16"], "cuda": ["auto", "fp16"], "mps": ["fp32", "fp16"]}[device]]


def fp16_runs_here(monkeypatch, device, precision):
    """On the CPU fp16 needs native fp16 arithmetic: stand in its flag (PyTorch runs fp16 autocast on any CPU)."""
    if device == "cpu" and precision == "fp16":
        monkeypatch.setattr("common.device.cpu_flags", lambda: {"avx512_fp16"})


def a_scale_that_moves(monkeypatch):
    """A loss scaler whose scale overflows, halves and grows again within a few steps, so a resume that lost its
    state (back to the first scale) would skip other steps and end with other numbers."""
    monkeypatch.setattr(training_loop, "make_scaler", lambda precision, device: torch.amp.GradScaler(
        device.type, init_scale=2.0 ** 24, growth_interval=3, enabled=precision == "fp16"))


def train(main, tmp_path, name, data_dir, device, *extra):
    out, ckpt = tmp_path / name / "out", tmp_path / name / "ckpt"
    main(["--device", device, "--data-dir", str(data_dir), "--out-dir", str(out), "--checkpoint-dir", str(ckpt),
          *extra])
    return out, ckpt


@pytest.mark.slow
@pytest.mark.parametrize("device, precision", PRECISIONS)
def test_q1_trains_checkpoints_and_resumes(tmp_path, tiny_fashion_data, monkeypatch, device, precision):
    fp16_runs_here(monkeypatch, device, precision)
    a_scale_that_moves(monkeypatch)
    flags = ("--width", "8", "--epochs", "2", "--limit", "2000", "--no-tta", "--precision", precision)
    straight, _ = train(q1_train.main, tmp_path, "straight", tiny_fashion_data, device, *flags)
    undo = interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(q1_train.main, tmp_path, "resumed", tiny_fashion_data, device, *flags)
    undo()
    state = torch.load(tmp_path / "resumed" / "ckpt" / "last.pt", weights_only=False)
    used = state["config"]["precision"]
    assert state["epoch"] == 1 and used == (precision if precision != "auto" else used)
    assert ("cuda" in state["rng"]) == (device == "cuda") and ("mps" in state["rng"]) == (device == "mps")
    if used == "fp16":
        assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] >= 0
    resumed, _ = train(q1_train.main, tmp_path, "resumed", tiny_fashion_data, device, *flags, "--resume")
    a, b = read_metrics(straight), read_metrics(resumed)
    assert b["train_precision"] == used and b["config"]["precision"] == used
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    probabilities = np.load(resumed / "Q1_label_predictions.npy")
    assert probabilities.dtype == np.float32 and probabilities.shape == (2000, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    if device == "cpu":  # the same numbers: the scaler's state, the RNG and the schedule resumed exactly
        assert a == b
        name = "Q1_label_predictions.npy"
        assert (straight / name).read_bytes() == (resumed / name).read_bytes()
    else:  # GPU kernels are not bitwise deterministic (atomic adds): the same run within 10 of 500 val images
        assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=2.0)


@pytest.mark.slow
@pytest.mark.parametrize("device, precision", PRECISIONS)
def test_q2_trains_and_evaluates(tmp_path, tiny_course_data, monkeypatch, device, precision):
    fp16_runs_here(monkeypatch, device, precision)
    flags = ("--backbone", "efficientnet_lite0", "--no-pretrained", "--epochs", "1", "--tta-scales", "1.25")
    out, _ = train(q2_train.main, tmp_path, "q2", tiny_course_data, device, *flags, "--precision", precision)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_precision"] == metrics["eval_precision"] == metrics["config"]["precision"]
    if precision != "auto":
        assert metrics["train_precision"] == precision
    scores = np.load(out / "Q2_sseg_predictions.npy")
    assert scores.dtype == np.uint8 and scores.shape == (2, 6, 224, 224)
    assert 249 <= scores.astype(int).sum(axis=1).min()  # floor(p x 255) of probabilities that sum to 1
    train(q2_train.main, tmp_path, "q2", tiny_course_data, device, "--eval-only")
    again = json.loads((out / "metrics.json").read_text())  # the same checkpoint evaluated again
    assert again["best_epoch"] == metrics["best_epoch"] and again["config"] == metrics["config"]
    assert again["eval_precision"] == metrics["eval_precision"]
    if device == "cpu":
        assert again["val_mIoU"] == metrics["val_mIoU"]
    else:
        assert again["val_mIoU"] == pytest.approx(metrics["val_mIoU"], abs=1e-3)


def test_last_pt_is_written_at_most_once_an_interval_and_after_the_last_epoch(tmp_path, monkeypatch):
    """The GPU's rule for last.pt (an interval between writes), run on the CPU with the GPU's interval: a 4-epoch
    run whose epochs take no time writes last.pt once, after epoch 4; best.pt whenever the score improves."""
    from tests.test_defaults import fake_run, tiny_net
    model = tiny_net(0)
    run = fake_run(tmp_path, epochs=4, ema_decay=0.0, batch_size=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    written = []

    def train_four_epochs(last_every):
        training = training_loop.start_or_resume(run, model, optimizer, 1, score="score")
        training.last_every = last_every
        monkeypatch.setattr(training, "checkpoint", lambda path, epoch: written.append((path.name, epoch)))
        scores = iter([0.1, 0.3, 0.2, 0.4])
        train_epochs(training, lambda epoch: training_loop.train_one_epoch(training, batch, torch.nn.CrossEntropyLoss(),
                                                                           epoch),
                     lambda: {"score": next(scores)})

    train_four_epochs(training_loop.GPU_LAST_EVERY)
    assert written == [("best.pt", 1), ("best.pt", 2), ("best.pt", 4), ("last.pt", 4)]
    written.clear()
    train_four_epochs(0.0)  # the CPU's rule: after every epoch
    assert [name for name, _ in written].count("last.pt") == 4


def test_a_nan_loss_on_a_gpu_stops_the_run_within_its_reading_interval(monkeypatch):
    """On a GPU the NaN guard reads the losses of GPU_LOSS_READS steps at once: a NaN at batch 5 stops training by
    the end of that interval, naming batch 5. Run on the CPU with a GPU's interval of 4."""
    assert training_loop.loss_reads_every(CUDA) == training_loop.GPU_LOSS_READS > 1
    assert training_loop.loss_reads_every(torch.device("cpu")) == 1
    monkeypatch.setattr(training_loop, "loss_reads_every", lambda device: 4)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batches = [(torch.ones(2, 4) * (float("nan") if index == 4 else 1.0), torch.tensor([0, 1])) for index in range(12)]
    with pytest.raises(training_loop.TrainingStopped, match="^training loss became nan at epoch 3, batch 5; lower"):
        one_epoch(model, batches, optimizer, scheduler, torch.nn.CrossEntropyLoss(), epoch=3)
    assert scheduler.last_epoch == 7  # batches 5-8 read after the 8th forward pass: 7 steps taken, the 8th not


def test_the_mean_loss_is_the_same_whatever_the_reading_interval(monkeypatch):
    """The losses are added one by one in step order, however many are read at once: a CPU's number is a GPU's."""
    def mean_loss():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        batches = [(torch.randn(2, 4), torch.tensor([0, 1])) for _ in range(10)]
        return one_epoch(model, batches, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                         torch.nn.CrossEntropyLoss())

    every_step = mean_loss()
    monkeypatch.setattr(training_loop, "loss_reads_every", lambda device: 4)
    assert mean_loss() == every_step
