"""The evaluator shared by in-training validation and the evaluate command (big_vision's shape: a
cached jitted predict function and `run(variables) -> {name: value}`).

It scores a generator on fixed (input, target) pairs with the SR protocol (uint8-quantised output,
RGB and Y with a border crop of `scale`) and scores the baselines once: the degraded input itself for
same-size tasks ('input'), bicubic and nearest-neighbour upscaling where there is a scale.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from enhance_jax import parallel
from enhance_jax.eval import metrics as metrics_lib
from enhance_jax.eval import quality
from enhance_jax.models.nima import mean_score
from enhance_jax.ops import resize

METRICS = ('psnr', 'ssim', 'psnr_y', 'ssim_y', 'mse')
HIGHER_IS_BETTER = {'psnr': True, 'ssim': True, 'psnr_y': True, 'ssim_y': True, 'mse': False,
                    'emd': False, 'lcc': True, 'srcc': True, 'score_mae': False,
                    **quality.HIGHER_IS_BETTER}
RATING_METRICS = ('emd', 'lcc', 'srcc', 'score_mae')


def baseline_kinds(scale):
  """The baselines scored beside the model: the input itself at x1, bicubic and nearest otherwise."""
  return ('input',) if scale == 1 else ('bicubic', 'nearest')


def baselines(lr, hr_shape, scale=None):
  """{kind: LR brought to HR_SHAPE's height and width} for `baseline_kinds`, float32 in [0, 1]."""
  hw = tuple(hr_shape[:2])
  if scale == 1 or (scale is None and tuple(lr.shape[:2]) == hw):
    return {'input': np.clip(np.asarray(lr, np.float32), 0.0, 1.0)}
  return {'bicubic': np.clip(resize.resize(lr, hw), 0.0, 1.0),
          'nearest': np.asarray(resize.resize(lr, hw, 'nearest'), np.float32)}


@functools.partial(jax.jit, static_argnums=2)
def _sr_metrics(sr, hr, scale):
  return metrics_lib.sr_metrics(metrics_lib.quantize(sr), hr, scale)


def score(sr, hr, scale):
  """SR-protocol metrics of each image of a batch (NHWC in [0, 1]) as a list of {metric: float}."""
  out = jax.device_get(_sr_metrics(jnp.asarray(sr), jnp.asarray(hr), scale))
  return [{k: float(out[k][i]) for k in METRICS} for i in range(len(sr))]


def better(metric, new, old):
  """Whether NEW beats OLD for METRIC (higher PSNR/SSIM, lower MSE and losses); None is beaten."""
  if old is None:
    return True
  return new > old if HIGHER_IS_BETTER.get(metric, False) else new < old


class Evaluator:
  """Scores `predict(variables, lr_batch) -> sr_batch` on fixed pairs; baselines computed once.

  PAIRS is a list of (lr, hr) float32 HWC arrays. Images of one shape run together in chunks of
  CHUNK (the last padded by repetition); PLACE puts a numpy chunk where `predict` wants it.
  LOSSES, when given, is `(variables, lr, hr) -> {'loss': ..., 'loss_TERM': ...}` on a chunk: the
  stage's loss terms on held-out data, averaged over chunks, for `train.best_metric=loss`. EXTRA,
  {name: fn(sr, hr) -> [N]} (quality.build), adds perceptual metrics for the model and the baselines.
  """

  def __init__(self, predict, pairs, scale, chunk=1, place=jnp.asarray, names=None, losses=None,
               extra=None):
    self.predict, self.pairs, self.scale, self.losses = predict, pairs, scale, losses
    self.extra = dict(extra or {})
    self.chunk, self.place = max(1, chunk), place
    self.names = list(names) if names is not None else [f'image_{i}' for i in range(len(self.pairs))]
    self.kinds = baseline_kinds(scale)
    self._baselines = None

  def _groups(self):
    """Indices of same-shape pairs, to run together; in pair order when chunks are single images."""
    if self.chunk == 1:
      return [[i] for i in range(len(self.pairs))]
    groups = {}
    for i, (lr, hr) in enumerate(self.pairs):
      groups.setdefault((lr.shape, hr.shape), []).append(i)
    return groups.values()

  def _chunks(self):
    """(indices, lr chunk, hr chunk) over the pairs, same-shape images together, padded to CHUNK."""
    for idx in self._groups():
      for start in range(0, len(idx), self.chunk):
        part = idx[start:start + self.chunk]
        pad = lambda a: np.concatenate([a, np.repeat(a[-1:], self.chunk - len(part), 0)])
        items = [self.pairs[i] for i in part]
        lr, hr = (pad(np.stack([item[j] for item in items])) for j in (0, 1))
        yield part, lr, hr

  def predictions(self, variables):
    """Yields (index, sr) for every pair, SR as a float32 HWC numpy array in [0, 1]."""
    for part, lr, _ in self._chunks():
      sr = np.asarray(parallel.fetch(self.predict(variables, self.place(lr))), np.float32)
      yield from zip(part, sr[:len(part)])

  def loss_means(self, variables):
    """The LOSSES function's values averaged over the chunks ({} without one)."""
    if self.losses is None:
      return {}
    values, counts = [], []
    for part, lr, hr in self._chunks():
      values.append(parallel.fetch(self.losses(variables, self.place(lr), self.place(hr))))
      counts.append(len(part))
    return ({k: float(np.average([v[k] for v in values], weights=counts)) for k in values[0]}
            if values else {})

  def baseline_scores(self):
    """[{kind: metrics}] per pair for the baselines (computed once, cached)."""
    if self._baselines is None:
      self._baselines = []
      for lr, hr in self.pairs:
        base = baselines(lr, hr.shape, self.scale)
        self._baselines.append({k: self._score(v, hr) for k, v in base.items()})
    return self._baselines

  def _score(self, sr, hr):
    """One image's metrics: the SR protocol's and the EXTRA ones."""
    out = score(sr[None], hr[None], self.scale)[0]
    for name, fn in self.extra.items():
      if min(hr.shape[:2]) < quality.MIN_SIDE.get(name, 0):
        out[name] = float('nan')  # an image too small for this metric (MS-SSIM 161, NIQE 96)
      else:
        out[name] = float(np.asarray(fn(np.asarray(sr, np.float32)[None], hr[None]))[0])
    return out

  def records(self, variables):
    """Yields (record, sr) per image: {'name', 'height', 'width', 'model': metrics, kind: metrics}."""
    base = self.baseline_scores()
    for i, sr in self.predictions(variables):
      hr = self.pairs[i][1]
      yield ({'name': self.names[i], 'height': hr.shape[0], 'width': hr.shape[1],
              'model': self._score(sr, hr), **base[i]}, sr)

  def run(self, variables, samples=0):
    """{metric: mean over the pairs} for the model (what validation logs and best_metric reads);
    the outputs for the first SAMPLES pairs are kept in `self.samples` (for sample grids)."""
    recs, self.samples = [], []
    for record, sr in self.records(variables):
      recs.append(record)
      if len(self.samples) < samples:
        self.samples.append(sr)
    return {**mean_scores(recs, ('model',))['model'], **self.loss_means(variables)}


class MultiScaleEvaluator:
  """A multi-scale model's validation: one Evaluator per scale ({scale: Evaluator}, each on the
  held-out images degraded at its scale). `run` gives every metric's mean over the scales (what
  train.best_metric reads) and each scale's as `NAME_x{S}`; the samples are scale MAIN's."""

  def __init__(self, evaluators, main):
    self.evaluators, self.main, self.samples = dict(evaluators), main, []

  def run(self, variables, samples=0):
    per_scale = {s: e.run(variables, samples=samples if s == self.main else 0)
                 for s, e in self.evaluators.items()}
    self.samples = self.evaluators[self.main].samples
    means = {k: float(np.mean([v[k] for v in per_scale.values()])) for k in per_scale[self.main]}
    return {**means, **{f'{k}_x{s}': v for s, vals in per_scale.items() for k, v in vals.items()}}


class RatingEvaluator:
  """Scores a rating model (NIMA) on fixed rated images: `run(variables)` gives the mean EMD (r = 2)
  between predicted and true histograms, the linear (LCC) and rank (SRCC) correlations of predicted
  and true mean scores, and the mean absolute error of the mean score (`RATING_METRICS`).

  PREDICT: (variables, image batch) -> histograms [N, 10]; IMAGES [N, H, W, 3], HISTOGRAMS [N, 10];
  chunks of CHUNK images (the last padded by repetition), placed by PLACE."""

  def __init__(self, predict, images, histograms, chunk=1, place=jnp.asarray, names=None):
    self.predict, self.images = predict, np.asarray(images, np.float32)
    self.histograms = np.asarray(histograms, np.float32)
    self.chunk, self.place = max(1, chunk), place
    self.names = list(names) if names is not None else [f'image_{i}' for i in range(len(self.images))]
    self.samples, self.means = [], None  # the last run's (predicted, true) mean scores

  def predictions(self, variables):
    """Predicted histograms [N, 10] (float32 numpy) of every image."""
    out = []
    for start in range(0, len(self.images), self.chunk):
      part = self.images[start:start + self.chunk]
      padded = np.concatenate([part, np.repeat(part[-1:], self.chunk - len(part), 0)])
      out.append(np.asarray(parallel.fetch(self.predict(variables, self.place(padded))))[:len(part)])
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 10), np.float32)

  def run(self, variables, samples=0):
    pred = self.predictions(variables)
    true_mean = np.asarray(mean_score(jnp.asarray(self.histograms)))
    pred_mean = np.asarray(mean_score(jnp.asarray(pred)))
    self.means = (pred_mean, true_mean)
    self.samples = list(pred[:samples])
    return {'emd': float(np.mean(np.asarray(metrics_lib.emd(pred, self.histograms)))),
            'lcc': metrics_lib.lcc(pred_mean, true_mean),
            'srcc': metrics_lib.srcc(pred_mean, true_mean),
            'score_mae': float(np.mean(np.abs(pred_mean - true_mean)))}


def mean_scores(records, kinds):
  """{kind: {metric: mean over RECORDS}} for the metrics the records hold (METRICS at least); an image
  a metric could not score (NaN: too small for MS-SSIM or NIQE) is left out of that metric's mean."""
  names = list(records[0][kinds[0]]) if records else list(METRICS)
  mean = lambda values: float(np.nanmean(values)) if not np.all(np.isnan(values)) else float('nan')
  return {k: {m: mean(np.asarray([r[k][m] for r in records], np.float64)) for m in names} for k in kinds}
