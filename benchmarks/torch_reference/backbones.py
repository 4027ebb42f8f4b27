"""PyTorch twins of torchvision's ResNet18, VGG16, AlexNet and SqueezeNet 1.1 (same attribute names, so
the same state_dict keys), for the backbone importers' parity tests without torchvision, and
`stub_torchvision_models()`, which serves them as `torchvision.models` to packages that build their
networks from it (the `lpips` package)."""

import sys
import types

import torch

class TorchBasicBlock(torch.nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    nn = torch.nn
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                       if stride != 1 or cin != cout else None)

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    y = torch.relu(self.bn1(self.conv1(x)))
    return torch.relu(self.bn2(self.conv2(y)) + identity)


class TorchResNet18(torch.nn.Module):
  """torchvision's resnet18, same attribute names (so the same state_dict keys), fc included."""

  def __init__(self):
    super().__init__()
    nn = torch.nn
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, (c, s) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
      setattr(self, f'layer{i}', nn.Sequential(TorchBasicBlock(cin, c, s), TorchBasicBlock(c, c, 1)))
      cin = c
    self.fc = nn.Linear(512, 1000)

  def features(self, x):
    x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def torch_vgg16():
  """torchvision's vgg16 (features + classifier, same indices)."""
  nn = torch.nn
  layers, cin = [], 3
  for v in (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'):
    if v == 'M':
      layers.append(nn.MaxPool2d(2, 2))
    else:
      layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
      cin = v
  net = nn.Module()
  net.features = nn.Sequential(*layers)
  net.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 1000))
  return net


def torch_alexnet():
  """torchvision's alexnet `features` (indices 0-12; the classifier is not needed by its users here)."""
  nn = torch.nn
  net = nn.Module()
  net.features = nn.Sequential(
      nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
      nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
      nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
      nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
  return net


class TorchFire(torch.nn.Module):
  """SqueezeNet's Fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated, ReLUs after each."""

  def __init__(self, cin, squeeze, e1, e3):
    super().__init__()
    self.squeeze = torch.nn.Conv2d(cin, squeeze, 1)
    self.expand1x1 = torch.nn.Conv2d(squeeze, e1, 1)
    self.expand3x3 = torch.nn.Conv2d(squeeze, e3, 3, padding=1)

  def forward(self, x):
    x = torch.relu(self.squeeze(x))
    return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


def torch_squeezenet1_1():
  """torchvision's squeezenet1_1 `features` (indices 0-12, ceil-mode max-pools)."""
  nn = torch.nn
  pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)
  net = nn.Module()
  net.features = nn.Sequential(
      nn.Conv2d(3, 64, 3, 2), nn.ReLU(), pool(), TorchFire(64, 16, 64, 64), TorchFire(128, 16, 64, 64),
      pool(), TorchFire(128, 32, 128, 128), TorchFire(256, 32, 128, 128), pool(),
      TorchFire(256, 48, 192, 192), TorchFire(384, 48, 192, 192), TorchFire(384, 64, 256, 256),
      TorchFire(512, 64, 256, 256))
  return net


def stub_torchvision_models(nets: dict, pretrained_ok: bool = False):
  """Serves NETS (name -> module, e.g. {'alexnet': randomise(torch_alexnet())}) as the constructors of
  a stub `torchvision.models` (the module already imported, if any, so a package that bound it at
  import sees them); asking for pretrained weights is an error unless PRETRAINED_OK, where the given
  module stands in for the pretrained one (a caller that loads the same weights into both sides)."""
  root = sys.modules.get('torchvision') or types.ModuleType('torchvision')
  models = sys.modules.get('torchvision.models') or types.ModuleType('torchvision.models')

  def constructor(name):
    def build(pretrained=False, **kwargs):
      if (pretrained or kwargs.get('weights')) and not pretrained_ok:
        raise RuntimeError(f'torchvision is stubbed: no pretrained {name} here.')
      return nets[name]
    return build

  for name in nets:
    setattr(models, name, constructor(name))
  root.models = models
  sys.modules.update({'torchvision': root, 'torchvision.models': models})
  return models


def randomise(net):
  """torchvision's init (kaiming normal, fan_out) plus random biases and BatchNorm statistics, so every
  imported tensor matters and activations stay O(1)."""
  g = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.Conv2d):
        fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan_out) ** 0.5)
        if m.bias is not None:
          m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
      elif isinstance(m, torch.nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=g))
        m.bias.copy_(torch.randn(c, generator=g) * 0.1)
        m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
        m.running_var.copy_(0.5 + torch.rand(c, generator=g))
  return net.eval()
