"""A random iresnet (InsightFace's ArcFace architecture at a few channels) and its ONNX export: what a
user's ``w600k_r50.onnx`` holds, at test size."""

import warnings

import torch


class Block(torch.nn.Module):
    """iresnet's block: BN, conv 3x3, BN, PReLU, conv 3x3 (stride), BN, plus a 1x1 conv + BN shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        conv = torch.nn.Conv2d
        self.body = torch.nn.Sequential(
            torch.nn.BatchNorm2d(inputs), conv(inputs, outputs, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(outputs),
            torch.nn.PReLU(outputs), conv(outputs, outputs, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(outputs),
        )  # fmt: skip
        self.shortcut = torch.nn.Sequential(
            conv(inputs, outputs, 1, stride, bias=False), torch.nn.BatchNorm2d(outputs)
        )

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class TinyIResNet(torch.nn.Module):
    """InsightFace's iresnet layout at a few channels: stem conv + BN + PReLU, strided blocks, BN,
    flatten, fully connected, BN1d (the 512-d feature here 32-d). ``own_normalisation`` starts the graph
    with (x - 127.5) * (1 / 127.5), as some InsightFace files do."""

    def __init__(self, own_normalisation: bool = False) -> None:
        super().__init__()
        self.own_normalisation = own_normalisation
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.PReLU(8)
        )
        self.blocks = torch.nn.Sequential(Block(8, 8, 2), Block(8, 16, 2), Block(16, 16, 2), Block(16, 16, 2))
        self.head = torch.nn.Sequential(
            torch.nn.BatchNorm2d(16), torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 32)
        )
        self.features = torch.nn.BatchNorm1d(32)
        for module in self.modules():  # random running statistics: batch norms that do something
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                torch.nn.init.uniform_(module.weight, 0.5, 1.5)
                torch.nn.init.uniform_(module.bias, -0.1, 0.1)

    def forward(self, x):
        if self.own_normalisation:
            x = (x - 127.5) * (1 / 127.5)
        return self.features(self.head(self.blocks(self.stem(x))))


def export(model: torch.nn.Module, path, size: int = 112) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(), (torch.randn(1, 3, size, size),), str(path), dynamo=False, input_names=["data"],
            output_names=["fc1"], dynamic_axes={"data": {0: "batch"}, "fc1": {0: "batch"}},
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
        )  # fmt: skip
