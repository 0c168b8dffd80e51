"""The weight average both questions validate and predict with (an exponential moving average)."""
import copy

import torch


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics, updated every step.

    Validating and predicting with the average rather than the raw weights smooths out the noise of a
    high learning rate, so good accuracy comes epochs earlier. The first update copies the weights; update
    n + 1 moves the average (1 - d) of the way towards them, with d = min(decay, (1 + n) / (10 + n)): the
    usual warm-up (TensorFlow's ExponentialMovingAverage with num_updates), so the average of a short run
    is not still the weights of its first, near-random steps. The counter is a Python int, so no step waits
    for the GPU, and it is checkpointed, so a resumed run averages exactly as an uninterrupted one.
    """

    def __init__(self, model, decay):
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay, self.updates = decay, 0
        # (average, model) tensor pairs; both sides are updated in place, so the pairs stay valid
        self.pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))

    @torch.no_grad()
    def update(self, model):
        """Move the average towards `model`, the model it was made from."""
        pairs = self.pairs
        if self.updates == 0:
            torch._foreach_copy_([mine for mine, _ in pairs], [theirs for _, theirs in pairs])
        else:
            floats = [(mine, theirs) for mine, theirs in pairs if mine.is_floating_point()]
            torch._foreach_lerp_([mine for mine, _ in floats], [theirs for _, theirs in floats], 1 - self.current_decay)
            for mine, theirs in pairs:
                if not mine.is_floating_point():  # BatchNorm's batch counters
                    mine.copy_(theirs)
        self.updates += 1

    @property
    def current_decay(self):
        """The decay of the next update: the warm-up's (1 + n) / (10 + n) until it reaches `decay`."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def state_dict(self):
        return {"updates": self.updates, "module": self.module.state_dict()}

    def load_state_dict(self, state):
        self.updates = state["updates"]
        self.module.load_state_dict(state["module"])
