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


# ---------------------------------------------------------------- the spandrel twin of a Flax generator
# spandrel's architectures are imported when built: `load()` must stub torchvision before any is.


def _swinir(m):
  from spandrel.architectures.SwinIR import SwinIR  # pylint: disable=import-outside-toplevel
  return SwinIR(upscale=m.scale, img_size=m.img_size, window_size=m.window_size,
                img_range=m.img_range, depths=list(m.depths), embed_dim=m.embed_dim,
                num_heads=list(m.num_heads), mlp_ratio=m.mlp_ratio, upsampler=m.upsampler,
                resi_connection=m.resi_connection, drop_path_rate=m.drop_path_rate)


def _hat(m):
  from spandrel.architectures.HAT import HAT  # pylint: disable=import-outside-toplevel
  return HAT(upscale=m.scale, window_size=m.window_size, depths=list(m.depths),
             embed_dim=m.embed_dim, num_heads=list(m.num_heads), compress_ratio=m.compress_ratio,
             squeeze_factor=m.squeeze_factor, conv_scale=m.conv_scale,
             overlap_ratio=m.overlap_ratio, mlp_ratio=m.mlp_ratio,
             resi_connection=m.resi_connection, num_feat=m.num_feat, img_range=m.img_range,
             drop_path_rate=m.drop_path_rate)


def _dat(m):
  from spandrel.architectures.DAT import DAT  # pylint: disable=import-outside-toplevel
  return DAT(img_size=m.img_size, embed_dim=m.embed_dim, split_size=list(m.split_size),
             depth=list(m.depths), num_heads=list(m.num_heads),
             expansion_factor=m.expansion_factor, qkv_bias=m.qkv_bias,
             drop_path_rate=m.drop_path_rate, upscale=m.scale, img_range=m.img_range,
             resi_connection=m.resi_connection, upsampler=m.upsampler)


def _span(m):
  from spandrel.architectures.SPAN import SPAN  # pylint: disable=import-outside-toplevel
  return SPAN(num_in_ch=3, num_out_ch=3, feature_channels=m.num_features, upscale=m.scale,
              norm=m.norm)


def _rcan(m):
  from spandrel.architectures.RCAN import RCAN  # pylint: disable=import-outside-toplevel
  return RCAN(scale=m.scale, n_resgroups=m.num_groups, n_resblocks=m.num_blocks,
              n_feats=m.num_features, norm=m.norm, kernel_size=m.kernel_size,
              reduction=m.reduction, unshuffle_mod=m.unshuffle)


def _realplksr(m):
  from spandrel.architectures.PLKSR import RealPLKSR  # pylint: disable=import-outside-toplevel
  return RealPLKSR(dim=m.dim, n_blocks=m.n_blocks, upscaling_factor=m.scale,
                   kernel_size=m.kernel_size, split_ratio=m.split_ratio, use_ea=m.use_ea,
                   norm_groups=m.norm_groups, dropout=m.dropout, dysample=m.upsampler == 'dysample',
                   layer_norm=m.layer_norm)


def _omnisr(m):
  from spandrel.architectures.OmniSR import OmniSR  # pylint: disable=import-outside-toplevel
  return OmniSR(num_in_ch=3, num_out_ch=3, num_feat=m.num_feat, block_num=m.block_num, pe=m.pe,
                window_size=m.window_size, res_num=m.res_num, up_scale=m.scale, bias=m.bias)


# Flax generator class name -> its spandrel module with the same sizes (random weights)
BUILDERS = {'SwinIR': _swinir, 'HAT': _hat, 'DAT': _dat, 'SPAN': _span, 'RCAN': _rcan,
            'RealPLKSR': _realplksr, 'OmniSR': _omnisr}


def build(generator) -> torch.nn.Module:
  """spandrel's module with the sizes of GENERATOR (an enhance_jax Flax generator, e.g.
  `models.build_generator(config)`), torch-initialised, in train mode."""
  load()
  kind = type(generator).__name__
  if kind not in BUILDERS:
    raise ValueError(f"no spandrel twin of {kind}; one of {', '.join(BUILDERS)}")
  return BUILDERS[kind](generator)
