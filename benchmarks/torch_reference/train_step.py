"""The PyTorch twin of enhance_jax.training.train_steps's ESRGAN steps, written for speed, plus weight exchange.

`make_trainer(config, device, precision)` builds G, D and the frozen VGG19 from an enhance_jax
ConfigDict; `pretrain_step(lr, hr)` and `gan_step(lr, hr)` take NCHW tensors and return loss and
metric tensors (no host sync). `load_jax_params`/`export_params` move weights between the twins
and the Flax modules, so both frameworks can start from the same weights.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import traverse_util

from benchmarks.torch_reference import models
from benchmarks.torch_reference import spandrel_models
from enhance_jax import models as jax_models
from enhance_jax.io import weights
from enhance_jax.models import vgg as jax_vgg
from enhance_jax.models.rrdbnet import RRDBNet as JaxRRDBNet

# ---------------------------------------------------------------- weights: Flax <-> torch

_TORCH_LEAF = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias',
               'mean': 'running_mean', 'var': 'running_var'}
_FLAX_STAT = {'running_mean': 'mean', 'running_var': 'var'}


def _torch_key(path):
  """Flax path ('body_0/rdb1/conv1/kernel', 'conv1_1/bias', 'bn1/mean') -> torch state_dict key."""
  path = re.sub(r'^(conv_up\d)/conv/', r'\1/', path)  # Flax UpsampleBlock nests its conv
  *mods, leaf = path.split('/')
  mods = [f'features.{jax_vgg.VGG19_TORCH_INDEX[m]}' if m in jax_vgg.VGG19_TORCH_INDEX
          else re.sub(r'^body_(\d+)$', r'body.\1', m) for m in mods]
  return '.'.join(mods + [_TORCH_LEAF[leaf]])


def _torch_value(x):
  """Flax conv kernel [kh,kw,in,out] -> [out,in,kh,kw], dense [in,out] -> [out,in]."""
  x = np.asarray(x, np.float32)
  return torch.from_numpy(np.array(x.transpose(3, 2, 0, 1) if x.ndim == 4 else x.T, order='C'))


def flax_to_state_dict(params, batch_stats=None):
  """Flax params (and BatchNorm stats) of any enhance_jax ESRGAN module -> torch tensors by key."""
  flat = traverse_util.flatten_dict(dict(params), sep='/')
  flat.update(traverse_util.flatten_dict(dict(batch_stats or {}), sep='/'))
  return {_torch_key(k): _torch_value(v) for k, v in flat.items()}


def load_jax_params(module, params, batch_stats=None):
  """Copies Flax params (and D's batch_stats) into a twin; every twin key must be covered."""
  sd = flax_to_state_dict(params, batch_stats)
  own = module.state_dict()
  extra = sorted(set(sd) - set(own))
  missing = sorted(k for k in own if k not in sd and not k.endswith('num_batches_tracked'))
  if extra or missing:
    raise KeyError(f'Flax params do not fit {type(module).__name__}: '
                   f'unknown {extra[:4]}, missing {missing[:4]}')
  own.update({k: v.to(own[k].dtype) for k, v in sd.items()})
  module.load_state_dict(own)


def export_params(module, tensors=None):
  """A twin's weights (or `tensors`, {name: tensor} such as each .grad) as Flax params for its
  enhance_jax module; the discriminator gives (params, batch_stats)."""
  tensors = module.state_dict() if tensors is None else tensors
  sd = {k: v.detach().float().cpu().numpy().copy() for k, v in tensors.items()}
  if isinstance(module, models.RRDBNet):
    return _fit_upsample(weights.rrdbnet_params_from_state_dict(sd, len(module.body)))
  if isinstance(module, models.VGG19Features):
    convs = [n for n, i in jax_vgg.VGG19_TORCH_INDEX.items() if i < len(module.features)]
    return weights.vgg19_params_from_state_dict(sd, convs)
  return discriminator_params(sd)


@functools.cache
def _upsample_nested():
  """True when the Flax RRDBNet keeps conv_up1/conv_up2 as `conv_upN/conv/{kernel,bias}`."""
  init = lambda: JaxRRDBNet(num_blocks=1, num_features=4, growth_channels=4).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))
  return 'conv' in jax.eval_shape(init)['params']['conv_up1']


def _fit_upsample(params):
  """Nests conv_upN as this build's Flax RRDBNet holds it: `conv_upN/conv/{kernel,bias}` inside
  models.rrdbnet.UpsampleBlock (as weights.rrdbnet_params_from_state_dict gives) or flat."""
  params = dict(params)
  for name in ('conv_up1', 'conv_up2'):
    if _upsample_nested() and 'kernel' in params[name]:
      params[name] = {'conv': params[name]}
    elif not _upsample_nested() and 'conv' in params[name]:
      params[name] = params[name]['conv']
  return params


def discriminator_params(sd):
  """VGGStyleDiscriminator state_dict -> Flax (params, batch_stats)."""
  params, stats = {}, {}
  for key, value in sd.items():
    name, leaf = key.rsplit('.', 1)
    if leaf in _FLAX_STAT:
      stats[f'{name}/{_FLAX_STAT[leaf]}'] = value
    elif leaf == 'weight':
      kernel = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
      params[f'{name}/' + ('scale' if name.startswith('bn') else 'kernel')] = kernel
    elif leaf == 'bias':
      params[f'{name}/bias'] = value
  unflat = lambda d: traverse_util.unflatten_dict(d, sep='/')
  return unflat(params), unflat(stats)


# ---------------------------------------------------------------- modules from a config


def build_generator(config):
  """G of CONFIG in PyTorch: the RRDBNet, EDSR and SRVGGNetCompact twins, or spandrel's module of a
  newer architecture (SwinIR, HAT, DAT, SPAN, RealPLKSR, Omni-SR, RCAN) with the Flax module's sizes."""
  m = config.model
  if m.name == 'rrdbnet':
    return models.RRDBNet(num_feat=m.num_features, num_block=m.num_blocks,
                          num_grow_ch=m.growth_channels, scale=m.scale,
                          residual_scale=m.residual_scale)
  flax_g = jax_models.build_generator(config)
  if m.name == 'edsr':
    num_blocks, num_features, res_scale = flax_g.trunk
    return models.EDSR(num_feat=num_features, num_block=num_blocks, upscale=m.scale,
                       res_scale=res_scale, img_range=flax_g.img_range)
  if m.name == 'srvgg_compact':
    return models.SRVGGNetCompact(num_feat=flax_g.num_features, num_conv=flax_g.num_convs,
                                  upscale=m.scale)
  if type(flax_g).__name__ in spandrel_models.BUILDERS:
    return spandrel_models.build(flax_g)
  raise ValueError(f'the torch reference has no twin of model.name={m.name!r}')


def build_discriminator(config):
  """D of CONFIG (ESRGAN's VGG-style), or None for a run without a GAN stage."""
  d = config.discriminator
  if d.name == 'none':
    return None
  if d.name != 'vgg_style':
    raise ValueError(f'the torch reference has vgg_style only, not discriminator.name={d.name!r}')
  return models.VGGStyleDiscriminator(num_feat=d.num_features, dense_features=d.dense_features,
                                      norm=d.norm)


def build_perceptual(config):
  """The frozen-VGG19 content loss; weights from loss.vgg_weights, else random (as enhance_jax)."""
  l = config.loss
  loss = models.PerceptualLoss(l.content_layer, l.content_before_activation)
  if l.vgg_weights:
    convs = jax_vgg.convs_needed(l.content_layer)
    load_jax_params(loss.vgg, weights.vgg19_params_from_state_dict(
        weights.load_state_dict(l.vgg_weights), convs))
  return loss


def basicsr_generator(config, twin):
  """(BasicSR's own RRDBNet holding the weights of TWIN, None), or (None, why there is none).

  BasicSR's state_dict keys are the twin's (conv_first, body.{i}.rdb{j}.conv{k}, conv_body,
  conv_up1, conv_up2, conv_hr, conv_last); a strict load checks it. Its residual scale is fixed at
  0.2, its x1/x2 input pixel-unshuffled as the twin's.
  """
  m = config.model
  if m.name != 'rrdbnet':
    return None, f'the twin of {m.name} is its upstream module already (spandrel or BasicSR layout)'
  if float(m.residual_scale) != 0.2:
    return None, f'BasicSR has an RRDBNet with residual_scale 0.2 only, not {m.residual_scale}'
  try:  # any failure: basicsr's __init__ imports cv2, torchvision's private modules, its own ops
    from basicsr.archs.rrdbnet_arch import RRDBNet  # pylint: disable=g-import-not-at-top
  except Exception as e:  # pylint: disable=broad-except
    return None, f'BasicSR is not importable ({type(e).__name__}: {e})'
  net = RRDBNet(num_in_ch=3, num_out_ch=3, scale=m.scale, num_feat=m.num_features,
                num_block=m.num_blocks, num_grow_ch=m.growth_channels)
  net.load_state_dict(twin.state_dict(), strict=True)
  return net, None


# ---------------------------------------------------------------- metrics as enhance_jax.training.train_steps


def psnr(sr, hr):
  return (-10.0 * torch.log10((sr - hr).square().mean((1, 2, 3)))).mean()


def _blur(x, filt):
  """Separable valid Gaussian blur of [N,C,H,W], per channel."""
  c = x.shape[1]
  x = F.conv2d(x, filt.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
  return F.conv2d(x, filt.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def ssim(a, b, size=11, sigma=1.5, k1=0.01, k2=0.03):
  """dm-pix SSIM (11x11 Gaussian, sigma 1.5, valid), averaged over the batch."""
  filt = torch.exp(-0.5 * ((torch.arange(size, device=a.device) - size // 2) / sigma) ** 2)
  filt = filt / filt.sum()
  mu_a, mu_b = _blur(a, filt), _blur(b, filt)
  eps = torch.finfo(torch.float32).eps ** 2
  var_a = torch.clamp(_blur(a * a, filt) - mu_a ** 2, min=eps)
  var_b = torch.clamp(_blur(b * b, filt) - mu_b ** 2, min=eps)
  cov = _blur(a * b, filt) - mu_a * mu_b
  cov = torch.sign(cov) * torch.minimum(torch.sqrt(var_a * var_b), cov.abs())
  c1, c2 = k1 ** 2, k2 ** 2
  numer = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
  return (numer / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean()


def global_norm(tensors):
  return torch.nn.utils.get_total_norm([t for t in tensors if t is not None])


# ---------------------------------------------------------------- the trainer


def to_nchw(x, device, channels_last=True):
  """An NHWC numpy/jax batch -> NCHW float32 tensor on `device` (channels_last memory if asked)."""
  t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  return t.to(device).contiguous(memory_format=fmt)


def _adam(params, lr, milestones, config):
  """optax.adam under piecewise_constant_schedule as torch Adam (fused on CUDA) + MultiStepLR."""
  t = config.train
  opt = torch.optim.Adam(params, lr=lr, betas=(t.b1, t.b2), eps=1e-8,
                         fused=params[0].is_cuda or None)
  return opt, torch.optim.lr_scheduler.MultiStepLR(opt, [int(m) for m in milestones], t.lr_decay)


class Trainer:
  """G, D, the content loss, their optimisers and the two steps of enhance_jax.training.train_steps."""

  def __init__(self, config, device, precision, channels_last, compile_modules, metrics,
               generator=None):
    l, t = config.loss, config.train
    self.device, self.metrics = device, metrics
    self.fmt = torch.channels_last if channels_last else torch.contiguous_format
    self.dtype = {'fp32': None, 'bf16': torch.bfloat16}[precision or t.precision]
    self.pretrain_weights = {k: float(w) for k, w in l.pretrain.items() if w}
    self.gan_weights = {k: float(w) for k, w in l.gan.items() if w}
    self.pixel, self.gan_type = models.PIXEL_CRITERIA[l.pixel_criterion], l.gan_type
    place = lambda m: m.to(device, memory_format=self.fmt)
    self.generator = place(build_generator(config) if generator is None else generator)
    self.discriminator = build_discriminator(config)
    self.discriminator = self.discriminator and place(self.discriminator)
    self.perceptual = place(build_perceptual(config))
    wrap = torch.compile if compile_modules else (lambda m: m)
    self._g = wrap(self.generator)
    self._d = self.discriminator and wrap(self.discriminator)
    self._vgg = wrap(self.perceptual.vgg)
    self.g_params = list(self.generator.parameters())
    self.d_params = list(self.discriminator.parameters()) if self.discriminator else []
    self.opt_g_pretrain, self.sched_g_pretrain = _adam(
        self.g_params, t.pretrain_lr, t.pretrain_milestones, config)
    self.opt_g, self.sched_g = _adam(self.g_params, t.g_lr, t.gan_milestones, config)
    self.opt_d, self.sched_d = (_adam(self.d_params, t.d_lr, t.gan_milestones, config)
                                if self.d_params else (None, None))
    self.ema_decay = float(t.ema_decay)
    self.updates = 0  # G updates so far: the EMA decay warms up with it, as enhance_jax's
    self.reset_ema()

  def reset_ema(self, ema_params=None):
    """EMA weights: a copy of G's (as init_state), or the given Flax params; None if disabled."""
    self.ema = None
    if self.ema_decay > 0:
      names = [k for k, _ in self.generator.named_parameters()]
      sd = (flax_to_state_dict(ema_params) if ema_params is not None
            else dict(self.generator.named_parameters()))
      self.ema = [sd[k].detach().to(self.device).clone() for k in names]

  def load_jax_state(self, state, vgg_params=None):
    """Loads an enhance_jax TrainState's G, D (+ BatchNorm stats) and EMA; VGG19 if given."""
    load_jax_params(self.generator, state.g_params)
    self.updates = int(state.step)
    if self.discriminator is not None:
      load_jax_params(self.discriminator, state.d_params, state.d_stats)
    if vgg_params is not None:
      load_jax_params(self.perceptual.vgg, vgg_params)
    self.reset_ema(state.ema_params)

  def _inputs(self, *images):
    return (x.to(self.device, non_blocking=True).contiguous(memory_format=self.fmt) for x in images)

  def _autocast(self):
    return torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16,
                          enabled=self.dtype is not None)

  def _terms(self, sr, hr, weights_):
    """Pixel and (if weighted) VGG content loss; HR features without a graph."""
    terms = {'pixel': self.pixel(sr.float(), hr)}
    if 'content' in weights_:
      with torch.no_grad():
        hr_features = self._vgg(hr).float()
      terms['content'] = F.l1_loss(self._vgg(sr).float(), hr_features)
    return terms

  @torch.no_grad()
  def _finish(self, out, sr, hr, extra=None):
    """EMA update, then the step's outputs (+ psnr/ssim, norms, `extra()` when `metrics`)."""
    self.updates += 1
    if self.ema is not None:  # decay min(d, (1 + t) / (10 + t)) after t updates
      decay = min(self.ema_decay, (1.0 + self.updates) / (10.0 + self.updates))
      torch._foreach_lerp_(self.ema, self.g_params, 1.0 - decay)  # pylint: disable=protected-access
    out = {k: v.detach() for k, v in out.items()}
    if self.metrics:
      sr = sr.detach().float().clamp(0.0, 1.0)
      out.update(psnr=psnr(sr, hr), ssim=ssim(sr, hr), **(extra() if extra else {}),
                 g_grad_norm=global_norm(p.grad for p in self.g_params),
                 g_param_norm=global_norm(self.g_params))
    return out

  def pretrain_step(self, lr, hr):
    """One supervised step of G on the pre-training terms (L1 for ESRGAN)."""
    lr, hr = self._inputs(lr, hr)
    self.opt_g_pretrain.zero_grad(set_to_none=True)
    with self._autocast():
      sr = self._g(lr)
      terms = self._terms(sr, hr, self.pretrain_weights)
      g_loss = sum(w * terms[k] for k, w in self.pretrain_weights.items())
    g_loss.backward()
    self.opt_g_pretrain.step()
    self.sched_g_pretrain.step()
    out = {'g_loss': g_loss, **{f'loss_{k}': v for k, v in terms.items()}}
    return self._finish(out, sr, hr)

  def gan_step(self, lr, hr):
    """One GAN step: G against the current D, D on the same SR; one D forward each on HR and SR."""
    lr, hr = self._inputs(lr, hr)
    self.opt_g.zero_grad(set_to_none=True)
    self.opt_d.zero_grad(set_to_none=True)
    with self._autocast():
      sr = self._g(lr)
      real, fake = self._d(hr), self._d(sr)  # HR first: BatchNorm running stats as in JAX
      terms = self._terms(sr, hr, self.gan_weights)
      terms['adversarial'] = models.generator_adversarial(real.detach(), fake, self.gan_type)
      g_loss = sum(w * terms[k] for k, w in self.gan_weights.items())
      d_loss = models.discriminator_adversarial(real, fake, self.gan_type)
    d_loss.backward(inputs=self.d_params, retain_graph=True)  # into D only: SR acts detached
    g_loss.backward(inputs=self.g_params)  # into G only: G's loss does not move D
    for opt, sched in ((self.opt_g, self.sched_g), (self.opt_d, self.sched_d)):
      opt.step()
      sched.step()
    out = {'g_loss': g_loss, 'd_loss': d_loss, **{f'loss_{k}': v for k, v in terms.items()}}
    extra = lambda: {'d_real': torch.sigmoid(real).mean(), 'd_fake': torch.sigmoid(fake).mean(),
                     'd_grad_norm': global_norm(p.grad for p in self.d_params)}
    return self._finish(out, sr, hr, extra)


def make_trainer(config, device='cpu', precision=None, channels_last=True,
                 compile=False, metrics=True, generator=None):  # pylint: disable=redefined-builtin
  """A Trainer for an enhance_jax ConfigDict. precision: 'fp32' | 'bf16' (autocast, fp32 params),
  None = config.train.precision; metrics: psnr/ssim/norms each step as enhance_jax computes;
  generator: a torch module to train as G instead of the twin (BasicSR's RRDBNet)."""
  device = torch.device(device)
  if device.type == 'cuda':
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision('high')  # TF32 matmuls; cuDNN convs use TF32 by default
  return Trainer(config, device, precision, channels_last, compile, metrics, generator)
