"""RCAN against spandrel 0.4.2's PyTorch module: a random state dict imported without naming the
architecture (detection and size inference) gives the same image; the stored MeanShift convs are
used; the parameter count at the paper's size; told apart from EDSR-PyTorch; strict keys; the rcan_x4
experiment."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import fast_jit
from enhance_jax.errors import UserError
from enhance_jax.io.weights import archs
from enhance_jax.models.rcan import RCAN
from enhance_jax.training import config as config_lib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

from benchmarks.torch_reference import spandrel_models  # noqa: E402  pylint: disable=wrong-import-position

spandrel_models.load()
from spandrel.architectures.RCAN import RCAN as TorchRCAN  # noqa: E402  pylint: disable=wrong-import-position,g-import-not-at-top

_SIZES = ('num_groups', 'num_blocks', 'num_features', 'reduction', 'kernel_size', 'norm', 'unshuffle',
          'scale')


def _torch_rcan(num_groups, num_blocks, num_features, reduction, kernel_size, norm, unshuffle, scale):
  module = TorchRCAN(scale=scale, n_resgroups=num_groups, n_resblocks=num_blocks,
                     n_feats=num_features, reduction=reduction, kernel_size=kernel_size, norm=norm,
                     unshuffle_mod=unshuffle)
  spandrel_models.randomize(module)
  if norm:  # MeanShifts near their initial values (random ones scale the image to ~1e-3) but not equal
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
      for shift, sign in ((module.sub_mean, -1), (module.add_mean, 1)):
        shift.weight.copy_(torch.eye(3).view(3, 3, 1, 1) + 0.05 * torch.randn(3, 3, 1, 1, generator=gen))
        shift.bias.copy_(sign * 255 * torch.tensor([0.4488, 0.4371, 0.4040])
                         + 5 * torch.randn(3, generator=gen))
  return module


# RCAN's structure at test size (x4, mean shift), then another depth, width ratio, scale and no mean
# shift, and spandrel's unshuffle variant (x2 through an x4 upsampler, odd sides reflect-padded).
@pytest.mark.parametrize('sizes', [(2, 2, 16, 4, 3, True, False, 4), (1, 3, 16, 8, 3, False, False, 3),
                                   (1, 1, 8, 2, 3, True, True, 2)])
def test_matches_spandrel(sizes):
  module = _torch_rcan(*sizes)
  section, variables = archs.import_weights(spandrel_models.state_dict_of(module))
  assert section == {'name': 'rcan', **dict(zip(_SIZES, sizes))}
  model = archs._generator(section)
  x = np.random.default_rng(0).uniform(size=(1, 13, 19, 3)).astype(np.float32)
  out = np.asarray(fast_jit(model.apply, variables, x)(variables, x))
  scale = section['scale']
  assert out.shape == (1, 13 * scale, 19 * scale, 3) and out.dtype == np.float32
  ref = spandrel_models.run(module, x)
  assert np.abs(ref).max() > 0.1
  np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


def test_parameter_count_at_the_paper_size_equals_spandrel():
  """10 groups of 20 RCABs, 64 features, reduction 16, x4: 15.59M (the paper's "about 16M")."""
  variables = jax.eval_shape(lambda k: RCAN().init(k, jnp.zeros((1, 8, 8, 3))), jax.random.key(0))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))
  assert count == sum(p.numel() for p in TorchRCAN(scale=4).parameters()) == 15_592_379


def _edsr_pytorch_keys(nf=8, blocks=2):
  """An EDSR-PyTorch state dict: the same head/body/tail names, no channel attention."""
  sd = {'sub_mean.weight': np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1),
        'sub_mean.bias': np.float32(-255) * np.asarray([0.4488, 0.4371, 0.4040], np.float32),
        'head.0.weight': np.zeros((nf, 3, 3, 3), np.float32), 'head.0.bias': np.zeros(nf, np.float32)}
  sd['add_mean.weight'], sd['add_mean.bias'] = sd['sub_mean.weight'], -sd['sub_mean.bias']
  convs = [f'body.{i}.body.{j}' for i in range(blocks) for j in (0, 2)] + [f'body.{blocks}']
  for key, c_out in [(k, nf) for k in convs] + [('tail.0.0', 4 * nf), ('tail.1', 3)]:
    sd[f'{key}.weight'] = np.zeros((c_out, nf, 3, 3), np.float32)
    sd[f'{key}.bias'] = np.zeros(c_out, np.float32)
  return sd


def test_told_apart_from_edsr():
  sd = spandrel_models.state_dict_of(_torch_rcan(1, 1, 8, 2, 3, True, False, 2))
  assert archs.infer_arch(sd) == 'rcan'
  edsr_sd = _edsr_pytorch_keys()
  assert archs.infer_arch(edsr_sd) == 'edsr'
  assert archs.import_weights(edsr_sd)[0]['name'] == 'edsr'


def test_mismatched_state_dict_is_a_user_error_naming_the_key():
  sd = spandrel_models.state_dict_of(_torch_rcan(2, 2, 8, 2, 3, True, False, 2))
  del sd['body.1.body.0.body.3.conv_du.2.bias']
  with pytest.raises(UserError, match=r"missing 'body\.1\.body\.0\.body\.3\.conv_du\.2\.bias'"):
    archs.import_weights(sd)
  sd = spandrel_models.state_dict_of(_torch_rcan(2, 2, 8, 2, 3, True, False, 2))
  sd['tail.1.weight'] = np.zeros((3, 8, 5, 5), np.float32)
  with pytest.raises(UserError, match=r"'tail\.1\.weight' has shape \(3, 8, 5, 5\)"):
    archs.import_weights(sd)


def test_unshuffle_needs_scale_one_or_two():
  with pytest.raises(ValueError, match='scale must be 1 or 2'):
    jax.eval_shape(RCAN(1, 1, 8, 2, unshuffle=True, scale=4).init, jax.random.key(0),
                   jnp.zeros((1, 8, 8, 3)))


def test_rcan_x4_experiment():
  c = config_lib.load_experiment('rcan_x4')
  m = c.model
  assert (m.name, m.num_groups, m.num_blocks, m.num_features, m.reduction, m.scale) == (
      'rcan', 10, 20, 64, 16, 4)
  assert (c.data.patch_size, c.data.degradation, c.data.source) == (192, 'bicubic(4)', 'embedded')
  t = c.train
  assert (t.batch_size, t.pretrain_lr, t.b1, t.b2, t.lr_decay, t.ema_decay) == (16, 1e-4, 0.9, 0.999,
                                                                               0.5, 0.0)
  assert t.pretrain_milestones == (200_000, 400_000, 600_000, 800_000) and t.num_steps == 1_000_000
  assert dict(c.loss.pretrain) == {'pixel': 1.0} and c.loss.pixel_criterion == 'l1'
  small = config_lib.get_config('rcan_x4', ['model.num_groups=1', 'model.num_blocks=1',
                                            'model.num_features=16', 'model.reduction=4'])
  assert small.model.num_groups == 1
