"""The perceptual metrics validation and `evaluate` may add beside PSNR/SSIM, by name (train.eval_metrics):
each built once from the config into `fn(sr, hr) -> [N]` (NHWC in [0, 1]; NIQE ignores HR). LPIPS and
DISTS read the weights the loss terms of their names read (loss.lpips_*, loss.dists_*), random and said
once without a backbone file.
"""

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax.eval import dists as dists_lib
from enhance_jax.eval import lpips as lpips_lib
from enhance_jax.eval import ms_ssim as ms_ssim_lib
from enhance_jax.eval import niqe as niqe_lib
from enhance_jax.io import metric_weights

HIGHER_IS_BETTER = {'lpips': False, 'dists': False, 'niqe': False, 'ms_ssim': True}
NO_REFERENCE = ('niqe',)  # scored for the target too
MIN_SIDE = {'ms_ssim': ms_ssim_lib.min_side(), 'niqe': niqe_lib.MIN_SIDE}  # validated sides they need


def _random_backbone(module):
  x = jnp.zeros((1, 64, 64, 3), jnp.float32)
  return {'params': jax.jit(module.init)(jax.random.key(0), x, x)['params']['backbone']}


def lpips_variables(loss):
  """LPIPS(loss.lpips_net)'s variables: the backbone of loss.lpips_weights (random, said once, if
  unset) and the heads of loss.lpips_heads or the installed lpips package."""
  heads = metric_weights.load_lpips_heads(loss.lpips_net, loss.lpips_heads or None)
  backbone = metric_weights.load_lpips_backbone(loss.lpips_net, loss.lpips_weights or None)
  backbone = backbone or _random_backbone(lpips_lib.LPIPS(loss.lpips_net))
  return lpips_lib.variables_of(loss.lpips_net, backbone, heads)


def dists_variables(loss):
  """DISTS's variables: VGG16 of loss.dists_weights (random, said once, if unset) and the alpha/beta
  of loss.dists_alpha_beta or the installed DISTS_pytorch."""
  alpha, beta = metric_weights.load_dists_weights(loss.dists_alpha_beta or None)
  backbone = metric_weights.load_dists_backbone(loss.dists_weights or None)
  return dists_lib.variables_of(backbone or _random_backbone(dists_lib.DISTS()), alpha, beta)


def _lpips(config):
  apply, variables = jax.jit(lpips_lib.LPIPS(config.loss.lpips_net).apply), lpips_variables(config.loss)
  return lambda sr, hr: np.asarray(apply(variables, jnp.asarray(sr), jnp.asarray(hr)))


def _dists(config):
  apply, variables = jax.jit(dists_lib.DISTS().apply), dists_variables(config.loss)
  return lambda sr, hr: np.asarray(apply(variables, jnp.asarray(sr), jnp.asarray(hr)))


def _ms_ssim(config):
  del config
  fn = jax.jit(ms_ssim_lib.ms_ssim)
  return lambda sr, hr: np.asarray(fn(jnp.asarray(sr), jnp.asarray(hr)))


def _niqe(config):
  params = metric_weights.load_niqe_params(config.train.niqe_params or None)
  return lambda sr, hr: niqe_lib.niqe(sr, params)


BUILDERS = {'lpips': _lpips, 'dists': _dists, 'ms_ssim': _ms_ssim, 'niqe': _niqe}


def requested(config):
  """The perceptual metrics validation computes: those train.eval_metrics names, plus LPIPS when its
  backbone weights are given (loss.lpips_weights)."""
  names = [m for m in config.train.eval_metrics if m in BUILDERS]
  if config.loss.lpips_weights and 'lpips' not in names:
    names.append('lpips')
  return names


def build(config):
  """{name: fn(sr, hr) -> [N]} for `requested(config)` (weights read now)."""
  return {name: BUILDERS[name](config) for name in requested(config)}


def best_metric(config):
  """train.best_metric, with 'auto' resolved: LPIPS when validation computes it (its weights are
  given), else PSNR (the Real-ESRGAN experiments: PSNR prefers blur, so LPIPS when it can)."""
  metric = config.train.best_metric
  if metric != 'auto':
    return metric
  return 'lpips' if 'lpips' in requested(config) else 'psnr'
