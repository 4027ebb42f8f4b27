"""Omni-SR against spandrel 0.4.2's PyTorch module: a random state dict imported without naming the
architecture (detection and size inference) gives the same image on sides that are not window
multiples (zero padding, then a crop), at two configurations; remat and the official [-1, 1] range;
parameter counts at the paper's sizes; strict keys (thop counters ignored); the experiment loads."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from enhance_jax.errors import UserError
from enhance_jax.io.weights import archs
from enhance_jax.models.omnisr import OmniSR
from enhance_jax.training import config as config_lib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

from benchmarks.torch_reference import spandrel_models  # noqa: E402  pylint: disable=wrong-import-position

spandrel_models.load()
from spandrel.architectures.OmniSR import OmniSR as TorchOmniSR  # noqa: E402  pylint: disable=wrong-import-position,g-import-not-at-top


def _section(kwargs):
  return {'name': 'omnisr', 'num_feat': kwargs['num_feat'], 'res_num': kwargs['res_num'],
          'block_num': kwargs['block_num'], 'window_size': kwargs['window_size'],
          'pe': kwargs.get('pe', True), 'bias': kwargs.get('bias', True), 'scale': kwargs['up_scale']}


def _torch_module(**kwargs):
  return spandrel_models.randomize(TorchOmniSR(**kwargs), std=0.1)


X = np.random.default_rng(0).uniform(size=(1, 13, 19, 3)).astype(np.float32)  # pads to 16x24 / 16x20


def test_matches_spandrel():
  """The paper's layout (window 8, positional bias, biases) at 16 features, x4."""
  kwargs = dict(num_feat=16, res_num=1, block_num=1, window_size=8, up_scale=4)
  module = _torch_module(**kwargs)
  section, variables = archs.import_weights(spandrel_models.state_dict_of(module))
  assert section == _section(kwargs)
  model = archs._generator(section)
  assert model.input_multiple == 8
  out = np.asarray(jax.jit(model.apply)(variables, X))
  assert out.shape == (1, 52, 76, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, spandrel_models.run(module, X), rtol=0, atol=1e-4)


def test_matches_spandrel_other_sizes_with_remat_and_signed_input():
  """Two groups of two blocks, windows of 4, no biases, x3; built with remat and the official
  [-1, 1] range: the same as spandrel's module on 2x - 1, mapped back."""
  kwargs = dict(num_feat=12, res_num=2, block_num=2, window_size=4, up_scale=3, bias=False)
  module = _torch_module(**kwargs)
  section, variables = archs.import_weights(spandrel_models.state_dict_of(module))
  assert section == _section(kwargs)
  model = archs._generator({**section, 'remat': True, 'signed_input': True})
  assert model.input_multiple == 4
  out = np.asarray(jax.jit(model.apply)(variables, X))
  want = (spandrel_models.run(module, 2 * X - 1) + 1) / 2
  np.testing.assert_allclose(out, want, rtol=0, atol=1e-4)


def test_parameter_count_equals_spandrel(scale=4):
  """The paper's Omni-SR x4: 64 features, 5 OSAGs of one block, window 8 (~0.8M parameters)."""
  torch_count = sum(p.numel() for p in TorchOmniSR(res_num=5, up_scale=scale).parameters())
  variables = jax.eval_shape(lambda k: OmniSR(scale=scale).init(k, jnp.zeros((1, 16, 16, 3))),
                             jax.random.key(0))
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables)) == torch_count
  assert 0.78e6 < torch_count < 0.81e6


def test_without_positional_bias_the_window_is_not_in_the_file():
  sd = spandrel_models.state_dict_of(TorchOmniSR(num_feat=8, res_num=1, window_size=4, pe=False))
  section, _ = archs.import_weights(sd)
  assert not section['pe'] and section['window_size'] == 8  # spandrel's default, as it infers


def test_strict_keys_and_thop_counters():
  sd = spandrel_models.state_dict_of(TorchOmniSR(num_feat=8, res_num=2, window_size=4, up_scale=2))
  sd['total_ops'] = np.zeros((1,), np.float64)  # thop's profiling counters are ignored
  sd['residual_layer.0.esa.total_params'] = np.zeros((1,), np.float64)
  section, variables = archs.import_weights(sd)
  assert section['res_num'] == 2 and 'thop' not in variables.get('params', {})
  del sd['residual_layer.1.residual_layer.0.layer.11.fn.temperature']
  with pytest.raises(UserError, match=r"omnisr .*missing 'residual_layer.1.residual_layer.0.layer.11"
                                      r".fn.temperature'"):
    archs.import_weights(sd)
  sd = spandrel_models.state_dict_of(TorchOmniSR(num_feat=8, res_num=1, window_size=4, up_scale=2))
  sd['residual_layer.0.esa.conv2.weight'] = sd['residual_layer.0.esa.conv2.weight'][..., :1]
  with pytest.raises(UserError, match=r"'residual_layer.0.esa.conv2.weight' has shape \(16, 16, 3, 1\)"):
    archs.import_weights(sd)


def test_too_small_an_input_is_refused():
  model = OmniSR(num_feat=8, res_num=1, window_size=4)
  with pytest.raises(ValueError, match='at least 15 after padding'):
    jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 12, 40, 3))), jax.random.key(0))


def test_experiment_loads():
  c = config_lib.get_config('omnisr_x4')
  assert c.model.name == 'omnisr' and c.model.window_size == 8 and c.data.patch_size == 256
