"""The run protocol both questions follow, written once; each question supplies its pieces."""
from dataclasses import dataclass
from typing import Callable

from common.loop import load_result
from common.run import owned, resolve
from common.runtime import describe_model


@dataclass(frozen=True)
class Pieces:
    """What a question supplies to the protocol."""
    load_data: Callable      # (run, data_dir) -> the question's data, on the run's device
    build: Callable          # run -> the network, on the run's device
    input_size: tuple        # one input's shape, for the torchsummary table
    train: Callable          # (run, model, data): fit the network (skipped by --eval-only)
    write_outputs: Callable  # (run, model, data, checkpoint, history): figures, predictions, metrics.json


def run_protocol(args, question, pieces):
    """Resolve the run's settings, own its folders, load the data, build the network, train it (unless
    --eval-only), load the weights to predict with (best.pt's average; --final: last.pt's) and write the
    outputs. Returns the Run."""
    run = resolve(args, question)
    with owned(run):
        data = pieces.load_data(run, args.data_dir)
        model = pieces.build(run)
        describe_model(model, pieces.input_size, run.out_dir)
        if run.trains:
            pieces.train(run, model, data)
        state, history = load_result(run, model)
        pieces.write_outputs(run, model, data, state, history)
    return run
