"""spandrel 0.4.2's upstream-faithful PyTorch modules (a test and benchmark dependency only), importable
beside the CPU torch: two of spandrel's architectures (LaMa, RestoreFormer) import torchvision at
package import, which cannot be installed here, so `load()` first puts a stub of the three names they
use into `sys.modules` (neither architecture is built by enhance_jax's tests or benchmarks).

`load()` returns the spandrel package; `state_dict_of(module)` the numpy state dict a user's file holds;
`describe(sd)` what spandrel's own detector infers from it (architecture name and scale).
"""

import sys
import types

import numpy as np
import torch


def _stub_torchvision():
  """torchvision, .transforms and .transforms.functional with InterpolationMode, rotate and normalize."""
  if 'torchvision' in sys.modules:
    return
  root = types.ModuleType('torchvision')
  transforms = types.ModuleType('torchvision.transforms')
  functional = types.ModuleType('torchvision.transforms.functional')

  class InterpolationMode:  # the members LaMa names
    NEAREST = 'nearest'
    BILINEAR = 'bilinear'
    BICUBIC = 'bicubic'

  def unavailable(*args, **kwargs):
    raise RuntimeError('torchvision is stubbed in enhance_jax tests: this op is not available.')

  functional.InterpolationMode = InterpolationMode
  functional.rotate = unavailable
  functional.normalize = unavailable
  transforms.InterpolationMode = InterpolationMode
  transforms.functional = functional
  transforms.Normalize = unavailable
  root.transforms = transforms
  sys.modules.update({'torchvision': root, 'torchvision.transforms': transforms,
                      'torchvision.transforms.functional': functional})


def load():
  """The spandrel package (ImportError naming the pip line when it is not installed)."""
  _stub_torchvision()
  try:
    import spandrel  # pylint: disable=import-outside-toplevel
  except ImportError as err:
    raise ImportError('spandrel is a test dependency: pip install --no-deps spandrel==0.4.2 einops') from err
  return spandrel


def state_dict_of(module) -> dict:
  """{key: float32 numpy} of a torch module, as a released .pth file holds it."""
  return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def describe(module) -> tuple[str, int]:
  """(spandrel's architecture id, scale) for a torch module, by spandrel's own key detection."""
  spandrel = load()
  sd = {k: torch.as_tensor(v) for k, v in module.state_dict().items()}
  desc = spandrel.ModelLoader().load_from_state_dict(sd)
  return desc.architecture.id, desc.scale


def randomize(module, seed: int = 0, std: float = 0.05):
  """Fills every parameter and buffer that is not an index table with N(0, std) noise (torch's inits
  leave biases zero and norms at 1, which hides swapped or untransposed weights)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      base = 1.0 if name.endswith(('norm.weight', 'norm1.weight', 'norm2.weight')) else 0.0
      p.copy_(base + std * torch.randn(p.shape, generator=gen))
  return module.eval()


def run(module, x: np.ndarray) -> np.ndarray:
  """NHWC float32 numpy in -> NHWC numpy out through a torch NCHW module (no grad)."""
  with torch.no_grad():
    out = module(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
  return out.numpy().transpose(0, 2, 3, 1)
