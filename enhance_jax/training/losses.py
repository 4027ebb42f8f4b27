"""Loss terms, one registry: `LOSSES = {name: fn(inputs) -> scalar}`.

An experiment weights them per stage (`loss.pretrain = {'pixel': 1.0}`, `loss.gan = {'pixel': 0.01,
'content': 1.0, 'adversarial': 0.005}`) and `total` assembles every step's loss the same way, each term
logged as `loss_NAME`. A new loss is one function of `LossInputs` and one line in LOSSES (plus one in
NEEDS when it runs a frozen network). All images are float32 NHWC in [0, 1]; logits are [N], or
[N, H, W, 1] from a per-pixel discriminator (unet_sn): the GAN losses average over every logit.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from enhance_jax import models
from enhance_jax.errors import UserError
from enhance_jax.eval import metrics as metrics_lib
from enhance_jax.eval import ms_ssim as ms_ssim_lib
from enhance_jax.models import vgg
from enhance_jax.models.nima import mean_score
from enhance_jax.training import frequency_losses
from enhance_jax.training import ldl as ldl_lib


def l1(pred, target):
  return jnp.mean(jnp.abs(pred - target))


def l2(pred, target):
  return jnp.mean(jnp.square(pred - target))


def charbonnier(pred, target, eps=1e-3):
  return jnp.mean(jnp.sqrt(jnp.square(pred - target) + eps * eps))


PIXEL_CRITERIA = {'l1': l1, 'l2': l2, 'mse': l2, 'charbonnier': charbonnier}
GAN_TYPES = ('vanilla', 'relativistic')


def content(sr_features, hr_features, criterion='l1', layer_weights=None):
  """Perceptual loss between VGG feature maps, summed over layers, each weighted by LAYER_WEIGHTS
  ({layer: weight}, 1 when None): L1 (BasicSR, ESRGAN) or 'l2' (SRGAN's MSE). Compared in float32
  whatever dtype the VGG computed in."""
  f32 = lambda a: a.astype(jnp.float32)
  w = layer_weights or {}
  return sum(w.get(k, 1.0) * PIXEL_CRITERIA[criterion](f32(sr_features[k]), f32(hr_features[k]))
             for k in sr_features)


def content_layers(options):
  """{VGG19 layer: weight} of the perceptual loss: the weighted layers of loss.content_layers when
  it is set (Real-ESRGAN's {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1, 'conv4_4': 1, 'conv5_4': 1};
  a weight of 0 drops a layer, and the VGG stops at the last one left), else loss.content_layer alone
  at weight 1 (SRGAN, ESRGAN)."""
  layers = options.content_layers
  if layers:
    return {k: float(w) for k, w in layers.items() if w}
  return {options.content_layer: 1.0}


def bce(logits, target):
  """Binary cross-entropy from logits against a constant target, numerically stable."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def generator_adversarial(real_logits, fake_logits, gan_type):
  """G's adversarial loss. Relativistic average (ESRGAN): real should look less real than fake."""
  if gan_type == 'vanilla':
    return bce(fake_logits, 1.0)
  if gan_type == 'relativistic':
    return 0.5 * (bce(real_logits - jnp.mean(fake_logits), 0.0) +
                  bce(fake_logits - jnp.mean(real_logits), 1.0))
  raise ValueError(f'unknown loss.gan_type {gan_type!r}')


def discriminator_adversarial(real_logits, fake_logits, gan_type):
  """D's loss: vanilla BCE (real -> 1, fake -> 0) or its relativistic average form."""
  if gan_type == 'vanilla':
    return bce(real_logits, 1.0) + bce(fake_logits, 0.0)
  if gan_type == 'relativistic':
    return 0.5 * (bce(real_logits - jnp.mean(fake_logits), 1.0) +
                  bce(fake_logits - jnp.mean(real_logits), 0.0))
  raise ValueError(f'unknown loss.gan_type {gan_type!r}')


@dataclasses.dataclass(frozen=True)
class LossInputs:
  """What a loss term may look at. `outputs` is the model's dict ('image' at least); `frozen` maps a
  frozen network's name to its forward function; the logits are set in the GAN step only, the EMA
  generator's outputs only when a weighted term needs them (EMA_TERMS)."""
  outputs: dict
  batch: dict
  options: Any                      # config.loss (criteria, gan_type, ...), read-only
  frozen: dict = dataclasses.field(default_factory=dict)
  rng: Any = None
  real_logits: Any = None
  fake_logits: Any = None
  ema_outputs: Any = None           # the EMA generator's outputs on the same batch (EMA_TERMS only)

  @property
  def image(self):
    return self.outputs['image'].astype(jnp.float32)

  @property
  def target(self):
    return self.batch['hr']


def pixel_loss(x):
  """loss.pixel_criterion (l1 | l2 | charbonnier) between output and target."""
  return PIXEL_CRITERIA[x.options.pixel_criterion](x.image, x.target)


def psnr_loss(x):
  """Minus the batch's mean PSNR in dB (report 001's PSNR loss)."""
  return -jnp.mean(metrics_lib.psnr(jnp.clip(x.image, 0.0, 1.0), x.target))


def ssim_loss(x):
  """1 - mean SSIM (report 001's SSIM loss)."""
  return 1.0 - jnp.mean(metrics_lib.ssim(jnp.clip(x.image, 0.0, 1.0), x.target))


def content_loss(x):
  """VGG19 perceptual loss on the frozen 'vgg19' features (layers, their weights and the activation
  from the config: `content_layers`)."""
  vgg = x.frozen['vgg19']
  return content(vgg(x.image), jax.lax.stop_gradient(vgg(x.target)), x.options.content_criterion,
                 content_layers(x.options))


def adversarial_loss(x):
  """G's adversarial term against the current D (GAN stage only)."""
  return generator_adversarial(jax.lax.stop_gradient(x.real_logits), x.fake_logits,
                               x.options.gan_type)


def kl_loss(x):
  """KL(q(z|x) || N(0, I)) of a VAE's latent, averaged over latent units and the batch."""
  if 'mean' not in x.outputs or 'logvar' not in x.outputs:
    raise UserError("loss term 'kl' needs a model that returns 'mean' and 'logvar' (a VAE, e.g. "
                    "model.name=denoise_vae); drop the kl weight for this model.")
  mean, logvar = (x.outputs[k].astype(jnp.float32) for k in ('mean', 'logvar'))
  return -0.5 * jnp.mean(1.0 + logvar - jnp.square(mean) - jnp.exp(logvar))


def nima_loss(x):
  """Report 002's aesthetic term: 10 - the frozen NIMA's mean score of the output (batch mean); with
  'mse' it makes the hybrid loss L2 + gamma * (10 - NIMA), gamma being this term's weight."""
  return 10.0 - jnp.mean(mean_score(x.frozen['nima'](jnp.clip(x.image, 0.0, 1.0))))


def emd_term(x):
  """NIMA's training loss: the EMD (r = loss.emd_r, 2 as NIMA and report 002) between the predicted
  and the true rating histograms ('histogram' of the outputs and of the batch), batch mean."""
  if 'histogram' not in x.outputs or 'histogram' not in x.batch:
    raise UserError("loss term 'emd' compares rating histograms: it needs a rating model (model.name="
                    'nima) and rated data; drop the emd weight for this model.')
  return metrics_lib.emd_loss(x.outputs['histogram'], x.batch['histogram'],
                              float(x.options.emd_r))


def ms_ssim_loss(x):
  """1 - MS-SSIM (piq's), over as many of the 5 scales as the patch holds (161 pixels take all five;
  the weights of the scales kept are renormalised), clipped at 1e-6 per scale for a finite gradient."""
  side = min(x.image.shape[1:3])
  levels = max(lvl for lvl in range(1, len(ms_ssim_lib.WEIGHTS) + 1) if ms_ssim_lib.min_side(lvl) <= side)
  weights = ms_ssim_lib.WEIGHTS[:levels]
  weights = tuple(w / sum(weights) for w in weights) if levels < len(ms_ssim_lib.WEIGHTS) else weights
  return 1.0 - jnp.mean(ms_ssim_lib.ms_ssim(jnp.clip(x.image, 0.0, 1.0), x.target, weights=weights,
                                            floor=1e-6))


def ms_ssim_l1_loss(x):
  """Zhao et al.'s mix: loss.ms_ssim_l1_alpha * (1 - MS-SSIM) + (1 - alpha) * L1 (alpha 0.84)."""
  a = float(x.options.ms_ssim_l1_alpha)
  return a * ms_ssim_loss(x) + (1.0 - a) * l1(x.image, x.target)


def ffl_loss(x):
  """The focal frequency loss (frequency_losses.focal_frequency) with loss.ffl_alpha, ffl_patch_factor,
  ffl_log_matrix."""
  o = x.options
  return frequency_losses.focal_frequency(x.image, x.target, float(o.ffl_alpha), int(o.ffl_patch_factor),
                                          log_matrix=bool(o.ffl_log_matrix))


def lpips_loss(x):
  """LPIPS (loss.lpips_net) between output and target through the frozen 'lpips' network, batch mean."""
  return jnp.mean(x.frozen['lpips'](jnp.clip(x.image, 0.0, 1.0), x.target))


def dists_loss(x):
  """DISTS between output and target through the frozen 'dists' network, batch mean."""
  return jnp.mean(x.frozen['dists'](jnp.clip(x.image, 0.0, 1.0), x.target))


def ldl_loss(x):
  """LDL (ldl.ldl): L1 weighted by the artifact map of G's output against the EMA generator's, over
  loss.ldl_kernel x loss.ldl_kernel windows (7, as BasicSR)."""
  ema = x.ema_outputs['image'].astype(jnp.float32)
  return ldl_lib.ldl(x.image, x.target, ema, int(x.options.ldl_kernel))


LOSSES: dict[str, Callable[[LossInputs], jax.Array]] = {
    'pixel': pixel_loss,
    'l1': lambda x: l1(x.image, x.target),
    'mse': lambda x: l2(x.image, x.target),
    'charbonnier': lambda x: charbonnier(x.image, x.target),
    'psnr': psnr_loss,
    'ssim': ssim_loss,
    'content': content_loss,
    'adversarial': adversarial_loss,
    'kl': kl_loss,
    'nima': nima_loss,
    'emd': emd_term,
    'ms_ssim': ms_ssim_loss,
    'ms_ssim_l1': ms_ssim_l1_loss,
    'ffl': ffl_loss,
    'lpips': lpips_loss,
    'dists': dists_loss,
    'ldl': ldl_loss,
}
NEEDS = {'content': ('vgg19',), 'nima': ('nima',), 'lpips': ('lpips',), 'dists': ('dists',)}  # frozen networks a term runs (frozen.FROZEN)
ADVERSARIAL = ('adversarial',)         # terms that need D's logits: GAN stage only
EMA_TERMS = ('ldl',)                   # terms that compare with the EMA generator's output
RATING_TERMS = ('emd',)                # terms of a rating model's histogram (NIMA); the rest score images


def total(weights, inputs):
  """(sum of weight * term, {name: term}) for WEIGHTS = ((name, weight), ...)."""
  terms = {name: LOSSES[name](inputs) for name, _ in weights}
  return sum(w * terms[name] for name, w in weights), terms


def needs_ema(weights):
  """Whether a stage weighted by WEIGHTS must also run the EMA generator (an EMA_TERMS term)."""
  return any(name in EMA_TERMS for name, _ in weights)


def frozen_needed(weight_sets):
  """The frozen networks the terms of WEIGHT_SETS run, in a stable order."""
  names = {n for weights in weight_sets for k, _ in weights for n in NEEDS.get(k, ())}
  return tuple(sorted(names))


def check_config(config):
  """UserError for a loss section the steps could only trip over mid-run."""
  l = config.loss
  for key in ('pixel_criterion', 'content_criterion'):
    if l[key] not in PIXEL_CRITERIA:
      raise UserError(f'unknown loss.{key} {l[key]!r}; valid: {", ".join(PIXEL_CRITERIA)}.')
  if l.gan_type not in GAN_TYPES:
    raise UserError(f'unknown loss.gan_type {l.gan_type!r}; valid: {", ".join(GAN_TYPES)}.')
  for layer, w in (l.content_layers or {l.content_layer: 1.0}).items():
    vgg.conv_name(layer)  # UserError naming the valid layers
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
      raise UserError(f'loss.content_layers.{layer}={w!r} must be a weight >= 0.')
  if not content_layers(l):
    raise UserError('loss.content_layers weights no layer; give one a weight, e.g. '
                    '--set loss.content_layers.conv5_4=1.0.')
  for stage in ('pretrain', 'gan'):
    unknown = sorted(set(l[stage]) - set(LOSSES))
    if unknown:
      raise UserError(f'loss.{stage} names unknown terms {unknown}; valid: {", ".join(LOSSES)}.')
  with_d = config.discriminator.name != 'none'
  stages = [('gan', l.gan)] if with_d else []
  if config.train.pretrain_steps > 0 or not with_d:
    stages.append(('pretrain', l.pretrain))
  for stage, section in stages:
    if not any(w for w in section.values()):
      raise UserError(f'loss.{stage} weights no term, but that stage runs; give a term a weight, e.g. '
                      f'--set loss.{stage}.{next(iter(section), "pixel")}=1.0.')
  adversarial = [k for k, w in l.pretrain.items() if w and k in ADVERSARIAL]
  if adversarial:
    raise UserError(f'loss.pretrain weights {adversarial}, which need a discriminator; move them to '
                    'loss.gan.')
  ema = [k for _, section in stages for k, w in section.items() if w and k in EMA_TERMS]
  if ema and not config.train.ema_decay > 0:
    raise UserError(f'loss terms {sorted(set(ema))} compare with the EMA generator, which '
                    'train.ema_decay=0 turns off; set --set train.ema_decay=0.999 (Real-ESRGAN).')
  k = l.ldl_kernel
  if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
    raise UserError(f'loss.ldl_kernel={k!r} must be an odd window side >= 3 (BasicSR: 7).')
  rating = models.output_key(models.build_generator(config)) != 'image'
  weighted = [k for _, section in stages for k, w in section.items() if w]
  wrong = sorted({k for k in weighted if (k in RATING_TERMS) != rating})
  if wrong:
    kind = ('a rating model (histograms), not images' if rating
            else 'an image model, not rating histograms')
    raise UserError(f'loss terms {wrong} do not fit model {config.model.name}, {kind}; '
                    + ("use loss.pretrain.emd." if rating else "drop them (emd is NIMA's loss)."))
