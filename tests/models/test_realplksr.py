"""RealPLKSR against spandrel 0.4.2's PyTorch module: a random state dict imported without naming the
architecture (detection and size inference) gives the same image, with the pixel-shuffle upsampler
and GroupNorm, and with DySample (offsets of several pixels, so sampling reaches the borders) and
LayerNorm; parameter counts at the released size; Dropout2d in training only; plain PLKSR files and
broken files refused in one sentence; the experiments load."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from enhance_jax.errors import UserError
from enhance_jax.io.weights import archs
from enhance_jax.models.realplksr import RealPLKSR
from enhance_jax.training import config as config_lib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

from benchmarks.torch_reference import spandrel_models  # noqa: E402  pylint: disable=wrong-import-position

spandrel_models.load()
from spandrel.architectures.PLKSR import PLKSR as TorchPLKSR  # noqa: E402  pylint: disable=wrong-import-position,g-import-not-at-top
from spandrel.architectures.PLKSR import RealPLKSR as TorchRealPLKSR  # noqa: E402  pylint: disable=wrong-import-position,g-import-not-at-top


def _count(module):
  variables = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 8, 8, 3))), jax.random.key(0))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))


def _torch_count(module):
  return sum(p.numel() for p in module.parameters())


# The default network (pixel shuffle, GroupNorm, x4) at a small width, and DySample + LayerNorm at
# another width, depth, kernel, split and scale (x2: DySample's 4 groups; x3: 3 groups).
CONFIGS = [
    dict(dim=16, n_blocks=2, kernel_size=7, split_ratio=0.25, upscaling_factor=4),
    dict(dim=24, n_blocks=3, kernel_size=9, split_ratio=0.5, upscaling_factor=2, dysample=True,
         layer_norm=True, use_ea=False),
    dict(dim=12, n_blocks=1, kernel_size=5, split_ratio=0.25, upscaling_factor=3, dysample=True),
]


@pytest.mark.parametrize('kwargs', CONFIGS)
def test_matches_spandrel(kwargs):
  module = spandrel_models.randomize(TorchRealPLKSR(**kwargs), std=0.1)
  if kwargs.get('dysample'):  # offsets of pixels (up to ~10): sampling reaches past the borders
    bias = module.to_img.offset.bias
    with torch.no_grad():
      bias.copy_(8.0 * torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)))
  section, variables = archs.import_weights(spandrel_models.state_dict_of(module))
  assert section == {'name': 'realplksr', 'dim': kwargs['dim'], 'n_blocks': kwargs['n_blocks'],
                     'kernel_size': kwargs['kernel_size'], 'split_ratio': kwargs['split_ratio'],
                     'use_ea': kwargs.get('use_ea', True),
                     'upsampler': 'dysample' if kwargs.get('dysample') else 'pixelshuffle',
                     'layer_norm': kwargs.get('layer_norm', False), 'scale': kwargs['upscaling_factor']}
  model = archs._generator(section)
  x = np.random.default_rng(0).uniform(size=(1, 13, 19, 3)).astype(np.float32)
  out = np.asarray(jax.jit(model.apply)(variables, x))
  s = kwargs['upscaling_factor']
  assert out.shape == (1, 13 * s, 19 * s, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, spandrel_models.run(module, x), rtol=0, atol=1e-4)


def test_parameter_count_equals_spandrel():
  """The released size (64 features, 28 blocks, 17x17 partial kernels over 16 channels, x4), and the
  DySample / LayerNorm variants at x4 and x2 (two blocks: the blocks are the default's)."""
  assert _count(RealPLKSR()) == _torch_count(TorchRealPLKSR()) == 7_389_680
  for scale in (4, 2):
    ours = RealPLKSR(n_blocks=2, upsampler='dysample', layer_norm=True, scale=scale)
    theirs = TorchRealPLKSR(n_blocks=2, dysample=True, layer_norm=True, upscaling_factor=scale)
    assert _count(ours) == _torch_count(theirs)


def test_dropout_only_in_training():
  """Dropout2d before the tail: off in eval mode (the dropout-free network's output), drawn per key
  in training."""
  model = RealPLKSR(dim=8, n_blocks=1, kernel_size=3, dropout=0.5, scale=2)
  plain = RealPLKSR(dim=8, n_blocks=1, kernel_size=3, scale=2)
  x = np.random.default_rng(1).uniform(size=(2, 6, 6, 3)).astype(np.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(2)
  variables = jax.tree.map(lambda s: rng.normal(0.0, 0.2, s.shape).astype(np.float32), shapes)

  @jax.jit
  def outputs(v):
    train = [model.apply(v, x, train=True, rngs={'dropout': jax.random.key(k)}) for k in (0, 1)]
    return model.apply(v, x), plain.apply(v, x), *train

  evaluated, reference, train0, train1 = outputs(variables)
  np.testing.assert_allclose(evaluated, reference, rtol=0, atol=1e-6)
  assert float(jnp.abs(train0 - train1).max()) > 1e-3


def test_plain_plksr_is_refused_by_name():
  module = TorchPLKSR(dim=8, n_blocks=1, kernel_size=5)
  with pytest.raises(UserError, match="'feats.1.channe_mixer.0.weight' is plain PLKSR's"):
    archs.import_weights(spandrel_models.state_dict_of(module))


def test_a_broken_state_dict_names_the_key():
  sd = spandrel_models.state_dict_of(TorchRealPLKSR(dim=8, n_blocks=2, kernel_size=5, dysample=True))
  del sd['feats.2.refine.bias']
  with pytest.raises(UserError, match=r"realplksr .*missing 'feats.2.refine.bias'"):
    archs.import_weights(sd)
  sd = spandrel_models.state_dict_of(TorchRealPLKSR(dim=8, n_blocks=2, kernel_size=5))
  sd['feats.1.lk.conv.weight'] = sd['feats.1.lk.conv.weight'][:, :1]
  with pytest.raises(UserError, match=r"'feats.1.lk.conv.weight' has shape \(2, 1, 5, 5\)"):
    archs.import_weights(sd)
  sd = spandrel_models.state_dict_of(TorchRealPLKSR(dim=8, n_blocks=1, kernel_size=5, dysample=True))
  sd['to_img.init_pos'] = sd['to_img.init_pos'][:, ::-1].copy()
  with pytest.raises(UserError, match="'to_img.init_pos' is not DySample's sub-pixel grid"):
    archs.import_weights(sd)


@pytest.mark.parametrize('name', ['realplksr_x4', 'realplksr_gan_x4'])
def test_experiments_load(name):
  c = config_lib.get_config(name)
  assert c.model.name == 'realplksr' and c.model.scale == 4 and c.train.optimizer == 'adamw'
