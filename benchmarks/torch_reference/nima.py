"""PyTorch twins of NIMA's torchvision networks (MobileNetV2, MNASNet 1.0 with NIMA's head), keyed
as torchvision keys them: what the importer and `convert` are checked against without torchvision."""

import torch
from torch import nn as tnn


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _cba(c_in, c_out, k, s=1, groups=1, act=tnn.ReLU6):
  """torchvision's Conv2dNormActivation: keys .0 (conv), .1 (BN)."""
  return tnn.Sequential(tnn.Conv2d(c_in, c_out, k, s, k // 2, groups=groups, bias=False),
                        tnn.BatchNorm2d(c_out), act())


class _InvertedResidualV2(tnn.Module):
  def __init__(self, inp, oup, stride, t):
    super().__init__()
    hidden = int(round(inp * t))
    self.use_res = stride == 1 and inp == oup
    layers = [_cba(inp, hidden, 1)] if t != 1 else []
    layers += [_cba(hidden, hidden, 3, stride, hidden), tnn.Conv2d(hidden, oup, 1, bias=False),
               tnn.BatchNorm2d(oup)]
    self.conv = tnn.Sequential(*layers)

  def forward(self, x):
    return x + self.conv(x) if self.use_res else self.conv(x)


class TorchMobileNetV2NIMA(tnn.Module):
  """torchvision mobilenet_v2 with classifier.1 = Linear(1280, 10) and a softmax."""

  def __init__(self):
    super().__init__()
    features, inp = [_cba(3, 32, 3, 2)], 32
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)):
      for i in range(n):
        features.append(_InvertedResidualV2(inp, c, s if i == 0 else 1, t))
        inp = c
    features.append(_cba(inp, 1280, 1))
    self.features = tnn.Sequential(*features)
    self.classifier = tnn.Sequential(tnn.Dropout(0.75), tnn.Linear(1280, 10))

  def forward(self, x):
    f = self.features((x - MEAN) / STD)
    return f, self.classifier(f.mean((2, 3))).softmax(-1)


class _InvertedResidualMnas(tnn.Module):
  def __init__(self, c_in, c_out, k, stride, e):
    super().__init__()
    mid = c_in * e
    self.apply_residual = c_in == c_out and stride == 1
    self.layers = tnn.Sequential(
        tnn.Conv2d(c_in, mid, 1, bias=False), tnn.BatchNorm2d(mid), tnn.ReLU(),
        tnn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), tnn.BatchNorm2d(mid),
        tnn.ReLU(), tnn.Conv2d(mid, c_out, 1, bias=False), tnn.BatchNorm2d(c_out))

  def forward(self, x):
    return x + self.layers(x) if self.apply_residual else self.layers(x)


class TorchMnasNetNIMA(tnn.Module):
  """torchvision mnasnet1_0 with classifier.1 = Linear(1280, 10) and a softmax."""

  def __init__(self):
    super().__init__()
    layers = [tnn.Conv2d(3, 32, 3, 2, 1, bias=False), tnn.BatchNorm2d(32), tnn.ReLU(),
              tnn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False), tnn.BatchNorm2d(32), tnn.ReLU(),
              tnn.Conv2d(32, 16, 1, bias=False), tnn.BatchNorm2d(16)]
    c_in = 16
    for c, k, s, e, n in ((24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2),
                          (192, 5, 2, 6, 4), (320, 3, 1, 6, 1)):
      blocks = [_InvertedResidualMnas(c_in if j == 0 else c, c, k, s if j == 0 else 1, e)
                for j in range(n)]
      layers.append(tnn.Sequential(*blocks))
      c_in = c
    layers += [tnn.Conv2d(320, 1280, 1, bias=False), tnn.BatchNorm2d(1280), tnn.ReLU()]
    self.layers = tnn.Sequential(*layers)
    self.classifier = tnn.Sequential(tnn.Dropout(0.2), tnn.Linear(1280, 10))

  def forward(self, x):
    f = self.layers((x - MEAN) / STD)
    return f, self.classifier(f.mean((2, 3))).softmax(-1)


def randomised(net):
  """NET in eval mode with random BatchNorm affines, running statistics measured on a random batch
  (so activations stay normalised and the outputs depend on the image, as in a trained network),
  and a head that spreads the scores."""
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, tnn.BatchNorm2d):
        m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        m.momentum = 1.0  # running stats := this batch's
    net.train()
    net(torch.rand((4, 3, 64, 64), generator=g))
    net.classifier[1].weight.mul_(4.0)
  return net.eval()
