"""SPAN against spandrel 0.4.2's PyTorch module: a random state dict imported without naming the
architecture (detection and size inference) gives the same image in eval mode (fused Conv3XC) and in
training mode (the branches); parameter counts at the released sizes; the `no_norm` variant; strict
keys; the span_x4 experiment."""

import functools
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import fast_jit
from enhance_jax.errors import UserError
from enhance_jax.io.weights import archs
from enhance_jax.models.span import SPAN
from enhance_jax.training import config as config_lib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

from benchmarks.torch_reference import spandrel_models  # noqa: E402  pylint: disable=wrong-import-position

spandrel_models.load()
from spandrel.architectures.SPAN import SPAN as TorchSPAN  # noqa: E402  pylint: disable=wrong-import-position,g-import-not-at-top


def _torch_span(num_features, scale, norm=True):
  module = TorchSPAN(num_in_ch=3, num_out_ch=3, feature_channels=num_features, upscale=scale,
                     norm=norm)
  return spandrel_models.randomize(module)


def _count(module):
  variables = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 8, 8, 3))), jax.random.key(0))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))


# The default (48 features, x4, mean shift) and another width, scale and spandrel's no_norm variant,
# whose stored eval_conv kernels are zeroed: PyTorch's eval mode recomputes them from the branches,
# and so does the Flax module (the file's copy is checked for its shape only).
@pytest.mark.parametrize('num_features,scale,norm', [(48, 4, True), (12, 2, False)])
def test_matches_spandrel_in_eval_and_training_mode(num_features, scale, norm):
  module = _torch_span(num_features, scale, norm)
  sd = spandrel_models.state_dict_of(module)
  if not norm:
    sd = {k: np.zeros_like(v) if 'eval_conv' in k else v for k, v in sd.items()}
  section, variables = archs.import_weights(sd)
  assert section == {'name': 'span', 'num_features': num_features, 'norm': norm, 'scale': scale}
  model = archs._generator(section)
  x = np.random.default_rng(0).uniform(size=(1, 13, 19, 3)).astype(np.float32)
  for train in (False, True):  # train: the Conv3XC branches, as PyTorch's module.train() runs them
    out = np.asarray(fast_jit(functools.partial(model.apply, train=train), variables, x)(variables, x))
    assert out.shape == (1, 13 * scale, 19 * scale, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, spandrel_models.run(module.train(train), x), rtol=0, atol=1e-4)


def test_training_mode_equals_eval_mode_and_trains_the_branches():
  """The fused kernel is a function of the branch parameters: both modes give them one gradient."""
  model = SPAN(num_features=4, scale=2, norm=False)
  x = np.random.default_rng(2).uniform(size=(2, 5, 6, 3)).astype(np.float32)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32),
                        jax.eval_shape(model.init, jax.random.key(0), x)['params'])
  assert set(params['block_1']['c1_r']) == {'sk', 'conv_0', 'conv_1', 'conv_2'}
  loss = lambda p, train: jnp.sum(model.apply({'params': p}, x, train=train) ** 2)
  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  (l_eval, g_eval), (l_train, g_train) = grad(params, False), grad(params, True)
  np.testing.assert_allclose(l_eval, l_train, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_eval), jax.tree.leaves(g_train)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(jnp.abs(b).max()))
  assert float(jnp.abs(g_train['block_3']['c2_r']['conv_0']['kernel']).sum()) > 0


@pytest.mark.parametrize('num_features,scale', [(48, 4), (52, 2)])
def test_parameter_count_equals_spandrel(num_features, scale):
  """The training parameters (Conv3XC branches) are spandrel's less the fused eval_conv copies; the
  deployed network (fused) is the paper's 426K at 48 features x4."""
  torch_module = TorchSPAN(num_in_ch=3, num_out_ch=3, feature_channels=num_features, upscale=scale)
  named = dict(torch_module.named_parameters())
  fused = sum(p.numel() for k, p in named.items() if 'eval_conv' in k)
  branches = sum(p.numel() for k, p in named.items() if '.sk.' in k or '.conv.' in k)
  assert _count(SPAN(num_features=num_features, scale=scale)) == sum(
      p.numel() for p in named.values()) - fused
  if (num_features, scale) == (48, 4):
    assert sum(p.numel() for p in named.values()) - branches == 426_288


def test_mismatched_state_dict_is_a_user_error_naming_the_key():
  sd = spandrel_models.state_dict_of(TorchSPAN(num_in_ch=3, num_out_ch=3, feature_channels=8,
                                               upscale=2))
  del sd['block_4.c2_r.conv.1.bias']
  with pytest.raises(UserError, match=r"missing 'block_4\.c2_r\.conv\.1\.bias'"):
    archs.import_weights(sd)
  sd = spandrel_models.state_dict_of(TorchSPAN(num_in_ch=3, num_out_ch=3, feature_channels=8,
                                               upscale=2))
  sd['block_6.c3_r.eval_conv.weight'] = np.zeros((8, 8, 1, 1), np.float32)
  sd['extra.weight'] = np.zeros((1,), np.float32)
  with pytest.raises(UserError, match=r"'block_6\.c3_r\.eval_conv\.weight' has shape \(8, 8, 1, 1\)"
                                      r".*unexpected 'extra\.weight'"):
    archs.import_weights(sd)
  assert archs.infer_arch(sd) == 'span'


def test_span_x4_experiment():
  c = config_lib.load_experiment('span_x4')
  assert (c.model.name, c.model.num_features, c.model.norm, c.model.scale) == ('span', 48, False, 4)
  assert (c.data.patch_size, c.data.degradation, c.data.source) == (256, 'bicubic(4)', 'embedded')
  t = c.train
  assert (t.batch_size, t.pretrain_lr, t.b1, t.b2, t.lr_decay, t.ema_decay) == (16, 5e-4, 0.9, 0.99,
                                                                               0.5, 0.999)
  assert t.pretrain_milestones == (200_000, 400_000, 600_000, 800_000) and t.num_steps == 1_000_000
  assert dict(c.loss.pretrain) == {'pixel': 1.0} and c.loss.pixel_criterion == 'l1'
  small = config_lib.get_config('span_x4', ['model.num_features=8', 'data.patch_size=32'])
  assert small.model.num_features == 8
