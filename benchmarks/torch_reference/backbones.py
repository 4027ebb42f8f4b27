"""PyTorch twins of torchvision's ResNet18 and VGG16 (same attribute names, so the same state_dict
keys), for the backbone importers' parity tests without torchvision."""

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
