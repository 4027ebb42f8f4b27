"""Score a trained generator: `python -m enhance_jax.evaluate --workdir W [--checkpoint best|latest|STEP]
[--data folder:PATH]`.

Restores the checkpoint, degrades each held-out image as in training, enhances it whole, and writes
under W/eval/: metrics.json, metrics.md and one input | bicubic | model | target grid per image (input |
model | target for same-size tasks). Scores follow
the SR protocol (uint8-quantised outputs, RGB and Y channel, border crop of `scale` pixels) for the
model and for the baselines: bicubic and nearest-neighbour upscaling of the same input, or, at x1,
the degraded input itself. With data.hr_resize the held-out images are fitted first, as in training;
random degradations use a fixed seed per image.
"""

import argparse
import functools
import json
import pathlib
import sys

from absl import logging as absl_logging
import jax
import numpy as np

from enhance_jax import models
from enhance_jax import stops
from enhance_jax.data import datasets
from enhance_jax.data import degradations
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.eval import evaluators
from enhance_jax.eval import metrics as metrics_lib
from enhance_jax.eval import quality
from enhance_jax.infer import restoring
from enhance_jax.infer import scoring
from enhance_jax.io import reporting
from enhance_jax.training import train_steps

METRICS = evaluators.METRICS


def restore_generator(workdir, which='best'):
  """(config, task, generator variables, step) from WORKDIR's checkpoint WHICH (EMA weights if kept);
  a converted model directory, a weights file or a released model's name is scored as its
  architecture's classic x`scale` bicubic protocol (restoring.model_config)."""
  restored = restoring.restore(workdir, which=which)
  config = restored.config if restored.config is not None else restoring.model_config(restored)
  return config, train_steps.make_task(config), restored.variables, restored.step


def held_out_hr(image, config):
  """A held-out uint8 image as the float target that is scored: fitted to data.hr_resize when set
  (as in training), min-max normalised when training was, then cropped to the model's size multiple."""
  hr = input_pipeline.prepare_hr(image, config.data.hr_resize,
                                 config.data.hr_resize_mode)
  hr = input_pipeline.normalize(hr, config.data.normalize)
  return degradations.mod_crop(hr, models.hr_multiple(config))


class HeldOutPairs:
  """(input, target) for each image of SOURCE, made when asked (a test set need not fit in memory):
  the target as `held_out_hr`, the input degraded as in training with a fixed per-image seed."""

  def __init__(self, config, source, scale=None):
    self.config, self.source, self.scale = config, source, scale  # SCALE: a multi-scale model's

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    if not 0 <= i < len(self):
      raise IndexError(i)
    hr = held_out_hr(self.source[i], self.config)
    if min(hr.shape[:2]) < 8:
      raise UserError(f'image {list(self.source.names)[i]} is too small to evaluate this model; '
                      'remove it.')
    return input_pipeline.degrade_fixed([hr], self.config, seed_offset=i, scale=self.scale)[0], hr


def held_out_pairs(config, source):
  """[(input, target)] for every image of SOURCE (see HeldOutPairs), in memory."""
  return list(HeldOutPairs(config, source))


def markdown_table(result):
  """One row per image and a mean row; for each metric a column per kind (model, then baselines);
  the no-reference ones (NIMA, NIQE) also for the target."""
  kinds = result['kinds']
  metrics = list(result['mean'][kinds[0]])  # METRICS, then the --metrics extras
  nima = list(result['mean'].get('nima', {}))  # NIMA columns: model, baselines, target
  target = list(result['mean'].get('target', {}))  # no-reference metrics of the target
  header = '| image | ' + ' | '.join([f'{m} {k}' for m in metrics for k in kinds] +
                                      [f'{m} target' for m in target] +
                                      [f'nima {k}' for k in nima]) + ' |'
  rule = '|---' * (1 + len(kinds) * len(metrics) + len(target) + len(nima)) + '|'
  rows = [header, rule]
  for r in result['images'] + [{'name': '**mean**', **result['mean']}]:
    cells = [f'{r[k][m]:.{6 if m == "mse" else 4}f}' for m in metrics for k in kinds]
    cells += [f'{r["target"][m]:.4f}' for m in target]
    cells += [f'{r["nima"][k]:.3f}' for k in nima]
    rows.append(f'| {r["name"]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows) + '\n'


def epoch_seconds(workdir):
  """The mean epoch duration of the run in WORKDIR (mean step time x steps per epoch over its logged
  training windows, from metrics.jsonl; None without any)."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return None
  values = [r['epoch_seconds'] for r in map(json.loads, filter(str.strip, path.open()))
            if r.get('split') == 'train' and 'epoch_seconds' in r]
  return float(np.mean(values)) if values else None


def scale_results(config, task, g_vars, source, result, out):
  """A multi-scale model's (task.scales, MDSR) scores at every scale: {S: {'mean', 'images', 'kinds'}}
  on the held-out images degraded at S (data.scale_degradations), grids saved as NAME_xS.png; the
  model.scale entry is RESULT's (already scored)."""
  scales = {}
  for s in task.scales:
    if s == config.model.scale:
      scales[s] = {k: result[k] for k in ('mean', 'images', 'kinds')}
      continue
    evaluator = evaluators.Evaluator(jax.jit(functools.partial(train_steps.predict, task, scale=s)),
                                     HeldOutPairs(config, source, scale=s), s, chunk=1,
                                     names=source.names)
    kinds, records = ('model', *evaluator.kinds), []
    for record, sr in evaluator.records(g_vars):
      records.append(record)
      lr, hr = evaluator.pairs[len(records) - 1]
      row = [reporting.nearest_up(lr, hr.shape[:2]), evaluators.baselines(lr, hr.shape)['bicubic'],
             sr, hr]
      reporting.save_png(out / f'{record["name"]}_x{s}.png', reporting.image_grid([row]))
      print(f'{record["name"]} x{s}: ' + ' / '.join(f'{k} {record[k]["psnr"]:.3f} dB' for k in kinds),
            flush=True)
    scales[s] = {'mean': evaluators.mean_scores(records, kinds), 'images': records,
                 'kinds': list(kinds)}
  return scales


def _write(out, result, markdown):
  for name, text in (('metrics.json', json.dumps(result, indent=2)), ('metrics.md', markdown)):
    tmp = out / f'.{name}.tmp'
    try:  # whole or absent, also when a stop lands mid-write
      tmp.write_text(text)
      tmp.replace(out / name)
    finally:
      tmp.unlink(missing_ok=True)


def rating_run(config, task, g_vars, step, source, out, checkpoint, data):
  """A rating model's (NIMA's) evaluation: every held-out image fitted and centre-cropped as in
  validation, its predicted histogram against its ratings (synthetic for unrated photos): EMD per
  image; mean EMD, LCC, SRCC and mean-score error over all; scores.png plots predicted vs true."""
  predict = jax.jit(functools.partial(train_steps.predict, task))
  names, preds, trues = list(source.names), [], []
  records = []
  for i in range(len(source)):
    batch = input_pipeline.rated_batch([source[i]], config)
    pred = np.asarray(predict(g_vars, batch['image']))[0]
    preds.append(pred)
    trues.append(batch['histogram'][0])
    mean, std = (float(v) for v in metrics_lib.histogram_mean_std(pred))
    records.append({'name': names[i], 'mean': mean, 'std': std,
                    'true_mean': float(metrics_lib.histogram_mean_std(trues[-1])[0]),
                    'emd': float(metrics_lib.emd(pred, trues[-1]))})
  pred_mean = np.asarray([r['mean'] for r in records])
  true_mean = np.asarray([r['true_mean'] for r in records])
  metrics = {'emd': float(np.mean([r['emd'] for r in records])),
             'lcc': metrics_lib.lcc(pred_mean, true_mean),
             'srcc': metrics_lib.srcc(pred_mean, true_mean),
             'score_mae': float(np.mean(np.abs(pred_mean - true_mean)))}
  result = {'mean': metrics, 'images': records, 'n': len(records), 'experiment': config.name,
            'checkpoint': {'which': str(checkpoint), 'step': step},
            'data': data or f'held-out split of {config.data.source}'}
  reporting.save_png(out / 'scores.png', reporting.score_scatter(
      pred_mean, true_mean, f'{result["experiment"]} step {step}: predicted vs true mean score'))
  rows = ['| image | mean | std | true mean | emd |', '|---|---|---|---|---|']
  rows += [f'| {r["name"]} | {r["mean"]:.3f} | {r["std"]:.3f} | {r["true_mean"]:.3f} | {r["emd"]:.4f} |'
           for r in records]
  _write(out, result, f'# {result["experiment"]} at step {step} ({checkpoint})\n\n'
         + ' '.join(f'{k} {v:.4f}' for k, v in metrics.items()) + '\n\n' + '\n'.join(rows) + '\n')
  return result


def run(workdir, checkpoint='best', data=None, out=None, nima=None, metrics=()):
  """Evaluates and writes WORKDIR/eval/{metrics.json, metrics.md, NAME.png}; returns the result dict.
  With NIMA (a NIMA model directory or weights file) each image's record and the mean also hold
  'nima': the NIMA mean score of the model's output, of each baseline and of the target.
  METRICS names perceptual metrics to add (quality.BUILDERS: lpips, dists, ms_ssim, niqe) for the model
  and the baselines, and the no-reference ones (niqe) for the target too (record['target']).
  A rating model (a `nima` run) is scored by `rating_run` instead."""
  config, task, g_vars, step = restore_generator(workdir, checkpoint)
  if task.output != 'image' and nima:
    raise UserError(f'{workdir} is a NIMA run: evaluate scores it by EMD and correlations itself; '
                    'drop --nima (it scores the images an enhancement model makes).')
  scorer = scoring.Scorer(nima) if nima else None  # any size: the images as made
  source = (datasets.open_source(data) if data
            else datasets.train_val_sources(config.data)[1])
  if out is None:
    workdir = pathlib.Path(workdir)
    out = workdir / 'eval' if workdir.is_dir() else workdir.with_name(f'{workdir.stem}_eval')
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  if task.output != 'image':
    return rating_run(config, task, g_vars, step, source, out, checkpoint, data)
  scale = config.model.scale
  extra = {m: quality.BUILDERS[m](config) for m in metrics if m in quality.BUILDERS}
  evaluator = evaluators.Evaluator(jax.jit(functools.partial(train_steps.predict, task)),
                                   HeldOutPairs(config, source), scale, chunk=1,
                                   names=source.names, extra=extra)  # chunk 1: the source's order
  no_reference = [m for m in extra if m in quality.NO_REFERENCE]
  kinds = ('model', *evaluator.kinds)
  records = []
  for record, sr in evaluator.records(g_vars):
    records.append(record)
    lr, hr = evaluator.pairs[len(records) - 1]
    if scale == 1:  # input | model | target
      row = [lr, sr, hr]
    else:  # input (nearest-upscaled) | bicubic | model | target
      row = [reporting.nearest_up(lr, hr.shape[:2]), evaluators.baselines(lr, hr.shape)['bicubic'],
             sr, hr]
    if no_reference:
      record['target'] = {m: (float(extra[m](hr[None], hr[None])[0])
                              if min(hr.shape[:2]) >= quality.MIN_SIDE.get(m, 0) else float('nan'))
                          for m in no_reference}
    if scorer:
      outputs = {'model': sr, 'target': hr, **({'input': lr} if scale == 1 else
                                                evaluators.baselines(lr, hr.shape))}
      record['nima'] = {k: scorer(v)[0] for k, v in outputs.items()
                        if k in (*kinds, 'target')}
    reporting.save_png(out / f'{record["name"]}.png', reporting.image_grid([row]))
    print(f'{record["name"]}: ' + ' / '.join(f'{k} {record[k]["psnr"]:.3f} dB' for k in kinds),
          flush=True)
  mean = evaluators.mean_scores(records, kinds)
  if no_reference:
    mean['target'] = {m: float(np.nanmean([r['target'][m] for r in records])) for m in no_reference}
  if scorer:
    mean['nima'] = {k: float(np.mean([r['nima'][k] for r in records])) for k in records[0]['nima']}
  result = {'mean': mean, 'images': records, 'kinds': list(kinds),
            'checkpoint': {'which': str(checkpoint), 'step': step}, 'scale': scale,
            'experiment': config.name, 'epoch_seconds': epoch_seconds(workdir),
            'data': data or f'held-out split of {config.data.source}'}
  if task.scales:  # multi-scale (MDSR): every scale scored; the top level stays model.scale's
    result['scales'] = scale_results(config, task, g_vars, source, result, out)
  _write(out, result,
      f'# {result["experiment"]} x{scale} at step {step} ({checkpoint})\n\n' + markdown_table(result)
      + ''.join(f'\n## x{s}\n\n' + markdown_table(r) for s, r in result.get('scales', {}).items())
      + (f'\nmean epoch duration: {result["epoch_seconds"]:.2f} s\n' if result['epoch_seconds'] else ''))
  return result


def main(argv=None):
  stops.begin()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', help='a training run, a converted model directory or a weights file')
  parser.add_argument('--model', help='a released model by name (python -m enhance_jax.enhance '
                      '--list-models); scored on the x-scale bicubic protocol')
  parser.add_argument('--checkpoint', default='best', help='best | latest | STEP')
  parser.add_argument('--data', default=None, help='folder:PATH, tfds:NAME or embedded (default: '
                      'the held-out split of the training data)')
  parser.add_argument('--out', default=None, help='output directory (default WORKDIR/eval)')
  parser.add_argument('--nima', default=None, help='a NIMA model directory or weights file: adds '
                      'NIMA mean-score columns (model, baselines, target)')
  parser.add_argument('--metrics', default='psnr,ssim',
                      help='comma-separated: psnr, ssim (always) and any of lpips, dists, ms_ssim, niqe '
                           '(weights as the loss terms of their names: loss.lpips_*, loss.dists_*)')
  args = parser.parse_args(argv)
  metrics = [m.strip() for m in args.metrics.split(',') if m.strip()]
  unknown = [m for m in metrics if m not in (*METRICS, *quality.BUILDERS)]
  if unknown:
    print(f'error: --metrics {",".join(unknown)}: use psnr, ssim, psnr_y, ssim_y, mse, '
          f'{", ".join(quality.BUILDERS)}.', file=sys.stderr)
    return 2
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's notes are not for users
  if bool(args.workdir) == bool(args.model):
    print('error: give one of --workdir (a run, converted model or weights file) and --model NAME.',
          file=sys.stderr)
    return 2
  try:
    result = run(args.workdir or args.model, args.checkpoint, args.data, args.out, args.nima, metrics)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except stops.Stopped as stop:
    print(stops.stop_sentence(stop, 'metrics.json and metrics.md are written only once every image is '
                                    'scored, so none was written (an earlier one is as it was) and the '
                                    'comparison images written are whole; rerun to evaluate'),
          file=sys.stderr, flush=True)
    return stop.exit_code
  mean = result['mean']
  if 'emd' in mean:  # a NIMA run
    print(f'{result["n"]} images: ' + ', '.join(f'{k} {v:.4f}' for k, v in mean.items()))
    return 0
  for metric, unit in (('psnr', ' dB'), ('ssim', ''), ('psnr_y', ' dB'), ('mse', '')):
    others = ', '.join(f'{k} {mean[k][metric]:.4g}' for k in result['kinds'][1:])
    print(f'mean {metric} {mean["model"][metric]:.4g}{unit} ({others})')
  for metric in (m for m in metrics if m in quality.BUILDERS):
    others = ', '.join(f'{k} {mean[k][metric]:.4g}' for k in result['kinds'][1:])
    target = f', target {mean["target"][metric]:.4g}' if metric in mean.get('target', {}) else ''
    print(f'mean {metric} {mean["model"][metric]:.4g} ({others}{target})')
  if 'nima' in mean:
    print('mean NIMA score ' + ', '.join(f'{k} {v:.3f}' for k, v in mean['nima'].items()))
  return 0


if __name__ == '__main__':
  stops.finish(main())
