"""What a model makes decides how the training core feeds, scores and shows it: one `Kind` per
output (a model's `makes`, models.output_key). The step, predict, the loop's validation and its
samples read the entry and never branch on the kind, so a new kind of model is a new entry here.

'image': restoration and super-resolution ({'lr', 'hr'} batches, PSNR/SSIM, LR | output | HR grids).
'histogram': rating models, NIMA ({'image', 'histogram'} batches, EMD/LCC/SRCC, a score scatter).
"""

import dataclasses
from typing import Callable

import jax.numpy as jnp

from enhance_jax.data import input_pipeline
from enhance_jax.eval import evaluators
from enhance_jax.eval import quality
from enhance_jax.eval import metrics as metrics_lib
from enhance_jax.io import reporting
from enhance_jax.models.nima import mean_score


@dataclasses.dataclass(frozen=True)
class Kind:
  """How the core handles one kind of model output."""
  inputs: str  # the batch entry the model reads
  degraded: bool  # its input is made from the target in the step (data.degrade_on_device, ...)
  step_metrics: Callable  # (output, batch) -> {name: scalar}: training metrics, inside the step
  finish: Callable  # (output) -> what `predict` returns
  evaluator: Callable  # (task, config, jitted, val, frozen, chunk, place) -> `run(vars)` evaluator
  samples: Callable  # (evaluator, val, k, step) -> HWC float image for samples.png
  metrics: Callable  # (loss terms) -> the validation metrics train.best_metric may name
  summary: tuple  # the validation line's metrics


def _image_step_metrics(sr, batch):
  sr = jnp.clip(sr.astype(jnp.float32), 0.0, 1.0)
  hr = batch['hr']
  return {'psnr': jnp.mean(metrics_lib.psnr(sr, hr)), 'ssim': jnp.mean(metrics_lib.ssim(sr, hr))}


def _image_evaluator(task, config, jitted, val, frozen, chunk, place):
  """The SR-protocol evaluator on the held-out pairs; for a multi-scale model (MDSR) one per scale,
  each on the held-out images degraded at its scale."""
  extra = quality.build(config)
  if not task.scales:
    return evaluators.Evaluator(
        jitted['predict'], list(zip(val['lr'], val['hr'])), config.model.scale, chunk=chunk,
        place=place, losses=lambda v, lr, hr: jitted['losses'](v, frozen, lr, hr), extra=extra)
  return evaluators.MultiScaleEvaluator(
      {s: evaluators.Evaluator(
          jitted['predict'][s],
          list(zip(input_pipeline.degrade_fixed(val['hr'], config, scale=s), val['hr'])),
          s, chunk=chunk, place=place,
          losses=lambda v, lr, hr, s=s: jitted['losses'][s](v, frozen, lr, hr), extra=extra)
       for s in task.scales}, main=config.model.scale)


def _image_samples(evaluator, val, k, step):
  del step
  return reporting.sample_grid(val['lr'][:k], evaluator.samples, val['hr'][:k])


def _rating_step_metrics(histogram, batch):
  """The mean absolute error of the mean score (the EMD itself is the loss term)."""
  return {'score_mae': jnp.mean(jnp.abs(mean_score(histogram) - mean_score(batch['histogram'])))}


def _rating_evaluator(task, config, jitted, val, frozen, chunk, place):
  del task, config, frozen
  return evaluators.RatingEvaluator(jitted['predict'], val['image'], val['histogram'], chunk=chunk,
                                    place=place)


def _rating_samples(evaluator, val, k, step):
  del val, k
  pred, true = evaluator.means
  return reporting.score_scatter(pred, true, f'step {step}: predicted vs true mean score')


KINDS = {
    'image': Kind(
        inputs='lr', degraded=True, step_metrics=_image_step_metrics,
        finish=lambda out: jnp.clip(out.astype(jnp.float32), 0.0, 1.0),
        evaluator=_image_evaluator, samples=_image_samples,
        metrics=lambda terms: (*evaluators.METRICS, *quality.BUILDERS, 'loss',
                               *(f'loss_{k}' for k in terms)),
        summary=('psnr', 'ssim')),
    'histogram': Kind(
        inputs='image', degraded=False, step_metrics=_rating_step_metrics,
        finish=lambda out: out.astype(jnp.float32),
        evaluator=_rating_evaluator, samples=_rating_samples,
        metrics=lambda terms: evaluators.RATING_METRICS,
        summary=('emd', 'lcc', 'srcc')),
}
