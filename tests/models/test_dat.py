"""DAT against spandrel 0.4.2's PyTorch module: outputs on inputs whose sides are not split multiples
(two configurations, sizes inferred from the state_dict alone), the parameter counts of the published
networks, remat, the shifted-window masks and index constants, and what a damaged file says."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from enhance_jax.errors import UserError
from enhance_jax.io.weights import archs
from enhance_jax.io.weights import dat as dat_weights
from enhance_jax.models import dat

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest
from benchmarks.torch_reference import spandrel_models  # noqa: E402  pylint: disable=wrong-import-position

spandrel_models.load()
from spandrel.architectures.DAT import DAT as TorchDAT  # noqa: E402  pylint: disable=wrong-import-position
from spandrel.architectures.RGT import RGT as TorchRGT  # noqa: E402  pylint: disable=wrong-import-position

# Widths of 128 and 96 give the position-bias MLP 4 and 3 features (embed/32): with fewer, its
# LayerNorms leave almost nothing of the offsets and a wrong bias would still pass.
# A: spatial split (8, 16), a shifted DSTB in an even group (block 2) and in an odd one (block 0),
#    the heads read off `temperature`, pixelshuffle x4, 1conv.
# B: split (4, 8), no qkv bias, a one-block group (heads read off the position bias), masks stored
#    for img_size 32, expansion 4, 3conv, pixelshuffledirect x3.
CONFIGS = {
    'A': dict(embed_dim=128, depth=[3, 1], num_heads=[4, 4], split_size=[8, 16], expansion_factor=2.0,
              upscale=4),
    'B': dict(embed_dim=96, depth=[1, 3], num_heads=[4, 2], split_size=[4, 8], expansion_factor=4.0,
              qkv_bias=False, upscale=3, img_size=32, resi_connection='3conv',
              upsampler='pixelshuffledirect'),
}
X = np.random.default_rng(0).uniform(size=(1, 13, 19, 3)).astype(np.float32)  # no side a multiple of 8


def _section(kw):
  """The model section import_weights must infer for the spandrel constructor arguments KW."""
  return {'name': 'dat', 'embed_dim': kw['embed_dim'], 'depths': tuple(kw['depth']),
          'num_heads': tuple(kw['num_heads']), 'split_size': tuple(kw['split_size']),
          'expansion_factor': kw['expansion_factor'], 'qkv_bias': kw.get('qkv_bias', True),
          'resi_connection': kw.get('resi_connection', '1conv'),
          'upsampler': kw.get('upsampler', 'pixelshuffle'), 'img_size': kw.get('img_size', 64),
          'scale': kw['upscale']}


def _torch_dat(kw, seed=0):
  """spandrel's DAT with random weights that make every part count: the position-bias MLP and qkv
  scaled up (sharp, position-dependent attention), temperatures in [1, 5], BN statistics random."""
  module = spandrel_models.randomize(TorchDAT(**kw), seed=seed)
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if '.pos.' in name:
        p.mul_(20.0)
      elif '.attn.qkv.' in name:
        p.mul_(4.0)
      elif name.endswith('temperature'):
        p.copy_(1.0 + 4.0 * torch.rand(p.shape, generator=gen))
    for name, buf in module.named_buffers():
      if name.endswith('running_mean'):
        buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))
      elif name.endswith('running_var'):
        buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
  return module


@pytest.fixture(scope='module', name='reference')
def fixture_reference():
  """{config: (spandrel module, its state dict)}, built once."""
  out = {}
  for name, kw in CONFIGS.items():
    module = _torch_dat(kw)
    out[name] = module, spandrel_models.state_dict_of(module)
  return out


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_matches_spandrel_on_sides_that_are_not_window_multiples(reference, config):
  module, sd = reference[config]
  section, variables = archs.import_weights(sd)  # detection and sizes from the file alone
  assert section == _section(CONFIGS[config])
  model = archs._generator(section)  # pylint: disable=protected-access
  assert model.input_multiple == max(CONFIGS[config]['split_size'])
  out = np.asarray(jax.jit(model.apply)(variables, X))
  want = spandrel_models.run(module, X)
  assert out.shape == want.shape == (1, 13 * section['scale'], 19 * section['scale'], 3)
  assert out.dtype == np.float32
  assert np.abs(out - want).max() <= 1e-4, np.abs(out - want).max()


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_parameter_count_of_the_published_dat_x4():
  """DAT x4 (14.8M in the paper) as spandrel builds it (DAT-light's 3conv and one-step upsampler are
  in the parity test's configuration B)."""
  sizes = dat.VARIANTS['dat']
  torch_kw = {'depth': list(sizes['depths']), 'num_heads': list(sizes['num_heads']),
              'split_size': list(sizes['split_size']), 'upscale': 4,
              **{k: v for k, v in sizes.items() if k not in ('depths', 'num_heads', 'split_size')}}
  want = sum(p.numel() for p in TorchDAT(**torch_kw).parameters())
  shapes = jax.eval_shape(dat.DAT(**sizes, scale=4).init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  assert _param_count(shapes['params']) == want


def test_remat_gives_the_same_training_output():
  model = dat.DAT(embed_dim=32, depths=(2,), num_heads=(2,), split_size=(4, 8), scale=2)
  x = jnp.asarray(X[:, :8, :11])
  rng = np.random.default_rng(0)  # init's structure filled from numpy: no initialiser to compile
  variables = jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32) * 0.1,
                           jax.eval_shape(model.init, jax.random.key(0), x))
  rngs = {'dropout': jax.random.key(1)}  # stochastic depth (0.1) draws the same under remat
  run = lambda m: jax.jit(lambda v: m.apply(v, x, train=True, rngs=rngs, mutable=['batch_stats']))(
      variables)
  (out, stats), (out_remat, stats_remat) = run(model), run(model.clone(remat=True))
  np.testing.assert_allclose(out_remat, out, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), stats_remat, stats)


def test_constants_match_the_stored_buffers(reference):
  """The shift masks, offsets and index the model computes are the reference's buffers."""
  module, _ = reference['A']
  attn = module.layers[0].blocks[2].attn  # shifted, masks stored for 64 x 64
  masks = (dat.shift_mask(64, 64, 8, 16, 4, 8), dat.shift_mask(64, 64, 16, 8, 8, 4))
  np.testing.assert_array_equal(masks[0], attn.attn_mask_0.numpy())
  np.testing.assert_array_equal(masks[1], attn.attn_mask_1.numpy())
  for branch, window in zip(attn.attns, ((8, 16), (16, 8))):
    np.testing.assert_array_equal(dat.relative_coordinates(*window), branch.rpe_biases.numpy())
    np.testing.assert_array_equal(dat.relative_position_index(*window),
                                  branch.relative_position_index.numpy())
  assert [dat.is_shifted(0, b) for b in range(7)] == [False, False, True, False, False, False, True]
  assert [dat.is_shifted(1, b) for b in range(5)] == [True, False, False, False, True]


def test_damaged_files_name_the_key(reference):
  _, sd = reference['B']
  key = 'layers.1.blocks.2.ffn.sg.conv.weight'
  with pytest.raises(UserError, match=f"missing '{key}'"):
    archs.import_weights({k: v for k, v in sd.items() if k != key})
  key = 'layers.1.blocks.1.attn.proj.weight'
  with pytest.raises(UserError, match=rf"'{key}' has shape \(96, 95\)"):
    archs.import_weights({**sd, key: sd[key][:, :95]})
  key = 'layers.1.blocks.0.attn.attns.1.rpe_biases'
  with pytest.raises(UserError, match=f"'{key}' is not the constant"):
    archs.import_weights({**sd, key: sd[key][::-1].copy()})
  with pytest.raises(UserError, match="unexpected 'layers.1.blocks.2.attn.attn_mask_0'"):
    archs.import_weights({**sd, 'layers.1.blocks.2.attn.attn_mask_0': sd['layers.1.blocks.0.attn.attn_mask_0']})


def test_detection_is_dat_only():
  """RGT shares DAT's `before_RG` and window attention buffers but not its SGFN (`ffn.sg`)."""
  rgt = spandrel_models.state_dict_of(TorchRGT(embed_dim=32, depth=[2], num_heads=[2], split_size=[4, 8]))
  assert not dat_weights.detect(rgt)
  assert dat_weights.detect(spandrel_models.state_dict_of(TorchDAT(embed_dim=32, depth=[2], num_heads=[2])))
