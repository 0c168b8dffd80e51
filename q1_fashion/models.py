"""Q1 classifiers: the course's BaseNet, the reference report's best model, and the improved family."""
from torch import nn

NUM_CLASSES = 10


class BaseNet(nn.Module):
    """The assignment's baseline, exactly: two 5x5 conv/ReLU/maxpool stages, then fc 192->12->10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 12, 5)
        self.fc1 = nn.Linear(12 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, NUM_CLASSES)

    def forward(self, x):
        x = self.pool(self.conv1(x).relu())
        x = self.pool(self.conv2(x).relu())
        return self.fc2(self.fc1(x.flatten(1)).relu())


class ReportBest(nn.Module):
    """The reference report's best model (744,394 parameters)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Dropout(0.2),
            nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 4 * 4, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Dropout(0.2),
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
            nn.Linear(128, NUM_CLASSES),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def _stage(in_channels, out_channels, batchnorm):
    """A stage's 5x5 conv, then the 2x2 max-pool, then BatchNorm and ReLU.

    Pooling before the per-channel BatchNorm and ReLU instead of after keeps the model family (a max-pool
    commutes with a per-channel increasing map, which a ReLU always is and BatchNorm with a positive scale)
    while those two run on a quarter of the pixels: a Q1 training step is 1.22x faster.
    """
    layers = [nn.Conv2d(in_channels, out_channels, 5, bias=not batchnorm), nn.MaxPool2d(2)]
    return layers + ([nn.BatchNorm2d(out_channels)] if batchnorm else []) + [nn.ReLU(inplace=True)]


def _conv3x3(channels, batchnorm):
    layers = [nn.Conv2d(channels, channels, 3, padding=1, bias=not batchnorm)]
    return layers + ([nn.BatchNorm2d(channels)] if batchnorm else []) + [nn.ReLU(inplace=True)]


class Residual(nn.Sequential):
    """x + layers(x): a block that keeps its input's channels and size, with a ResNet shortcut around it."""

    def forward(self, x):
        return x + super().forward(x)


class FashionNet(nn.Module):
    """BaseNet's shape with the ablation's switches.

    width: channels of the first stage; the second has 2x, the hidden fc layer 2x (BaseNet: 6).
    depth: convolutions per stage; the extra ones are 3x3 'same' convs after each pool, so the
        spatial sizes, and the 16-pixel map the fc layer sees, stay those of BaseNet.
    batchnorm: BatchNorm after every conv and the hidden fc layer.
    residual: each extra 3x3 conv block (depth 2 or more) adds its input back, a ResNet shortcut.
    dropout: before the last fc layer. (Dropout after the first stage as well was measured and did not
        pay: docs/performance.md.)
    width=6, depth=1, batchnorm=False, dropout=0 is BaseNet itself: the same layers and parameters, and
    the same outputs (without BatchNorm, pooling before the ReLU changes nothing).
    """

    def __init__(self, width=6, depth=1, batchnorm=False, dropout=0.0, residual=False):
        super().__init__()
        layers, channels = [], 1
        for out_channels in (width, 2 * width):
            layers += _stage(channels, out_channels, batchnorm)
            for _ in range(depth - 1):
                block = _conv3x3(out_channels, batchnorm)
                layers += [Residual(*block)] if residual else block
            channels = out_channels
        self.features = nn.Sequential(*layers)
        hidden = 2 * width
        classifier = [nn.Linear(channels * 16, hidden, bias=not batchnorm)]
        classifier += [nn.BatchNorm1d(hidden)] if batchnorm else []
        classifier += [nn.ReLU(inplace=True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        self.classifier = nn.Sequential(*classifier, nn.Linear(hidden, NUM_CLASSES))

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


MODELS = ("basenet", "report_best", "improved")
FAMILY_KEYS = ("width", "depth", "batchnorm", "dropout", "residual")


def build_model(config):
    """The network a run's config names; `improved` reads the family's switches from the config."""
    name = config["model"]
    if name == "basenet":
        return BaseNet()
    if name == "report_best":
        return ReportBest()
    if name == "improved":
        return FashionNet(**{key: config[key] for key in FAMILY_KEYS})
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
