"""Score a trained generator: `python -m enhance_jax.evaluate --workdir W [--checkpoint best|latest|STEP]
[--data folder:PATH]`.

Restores the checkpoint, degrades each held-out image as in training, enhances it whole, and writes
under W/eval/: metrics.json, metrics.md and one LR | bicubic | model | HR grid per image. Scores follow
the SR protocol (uint8-quantised outputs, RGB and Y channel, border crop of `scale` pixels) for the
model and for the BASELINES, bicubic and nearest-neighbour upscaling of the same input. With
data.hr_resize the held-out images are square-resized first, as in training.
"""

import argparse
import functools
import json
import pathlib
import sys

from absl import logging as absl_logging
import jax
import ml_collections
import numpy as np

from enhance_jax import checkpoints as ckpt_lib
from enhance_jax import datasets
from enhance_jax import degradations
from enhance_jax import input_pipeline
from enhance_jax import metrics as metrics_lib
from enhance_jax import reporting
from enhance_jax import trainer
from enhance_jax.errors import UserError

METRICS = ('psnr', 'ssim', 'psnr_y', 'ssim_y', 'mse')
BASELINES = ('bicubic', 'nearest')
KINDS = ('model', *BASELINES)


def restore_generator(workdir, which='best'):
  """(config, task, generator variables, step) from WORKDIR's checkpoint WHICH (EMA weights if kept)."""
  workdir = pathlib.Path(workdir)
  if not (workdir / 'checkpoints').is_dir():
    raise UserError(f'{workdir} holds no checkpoints; train first '
                    f'(python -m enhance_jax.train --workdir {workdir}).')
  ckpts = ckpt_lib.Checkpoints(workdir, read_only=True)
  if which == 'best' and ckpts.best.latest_step() is None:
    which = 'latest'
  meta = ckpts.read_meta(which)
  config = ml_collections.ConfigDict(meta['config'])
  task = trainer.make_task(config)
  lr_side = config.data.patch_size // config.model.scale
  abstract = jax.eval_shape(
      lambda rng: trainer.init_state(task, rng, (1, lr_side, lr_side, 3),
                                     (1, config.data.patch_size, config.data.patch_size, 3)),
      jax.random.key(0))
  state, _, _ = ckpts.restore(abstract, which)
  ckpts.close()
  return config, task, trainer.eval_variables(state), int(state.step)


def score(sr, hr, scale):
  """SR-protocol metrics of one image pair (both HWC float in [0, 1]) as plain floats."""
  out = _sr_metrics(metrics_lib.quantize(sr)[None], hr[None], scale)
  return {k: float(out[k][0]) for k in METRICS}


@functools.partial(jax.jit, static_argnums=2)
def _sr_metrics(sr, hr, scale):
  return metrics_lib.sr_metrics(sr, hr, scale)


def baselines(lr, hr_shape):
  """{name: LR upscaled to HR_SHAPE's height and width} for each of BASELINES, float32 in [0, 1]."""
  hw = tuple(hr_shape[:2])
  return {'bicubic': np.clip(degradations.resize(lr, hw), 0.0, 1.0),
          'nearest': np.asarray(degradations.resize(lr, hw, 'nearest'), np.float32)}


def held_out_hr(image, config):
  """A held-out uint8 image as the float HR that is scored: square-resized to data.hr_resize when set
  (as in training), then mod-cropped to what the model's scale accepts."""
  scale, side = config.model.scale, config.data.get('hr_resize', 0)
  hr = degradations.square_resize(image, side) if side else image.astype(np.float32) / 255.0
  return degradations.mod_crop(hr, scale * (4 // scale if scale < 4 else 1))


def evaluate_images(config, task, g_vars, source, names):
  """Per-image records and the LR/bicubic/SR/HR arrays, one image at a time, whole."""
  scale = config.model.scale
  degrade = input_pipeline.degrade_fn(config)
  predict = jax.jit(functools.partial(trainer.predict, task))
  for i, name in enumerate(names):
    hr = held_out_hr(source[i], config)
    if min(hr.shape[:2]) < 4 * scale:
      raise UserError(f'image {name} is too small to evaluate at x{scale}; remove it.')
    lr = np.asarray(degrade(hr), np.float32)
    sr = np.asarray(jax.device_get(predict(g_vars, lr[None])))[0]
    base = baselines(lr, hr.shape)
    record = {'name': name, 'height': hr.shape[0], 'width': hr.shape[1], 'model': score(sr, hr, scale),
              **{k: score(v, hr, scale) for k, v in base.items()}}
    yield record, (lr, base['bicubic'], sr, hr)


def markdown_table(result):
  """One row per image and a mean row; for each metric a column per KINDS (model, then baselines)."""
  header = '| image | ' + ' | '.join(f'{m} {k}' for m in METRICS for k in KINDS) + ' |'
  rule = '|---' * (1 + len(KINDS) * len(METRICS)) + '|'
  rows = [header, rule]
  for r in result['images'] + [{'name': '**mean**', **result['mean']}]:
    cells = [f'{r[k][m]:.{6 if m == "mse" else 4}f}' for m in METRICS for k in KINDS]
    rows.append(f'| {r["name"]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(rows) + '\n'


def run(workdir, checkpoint='best', data=None, out=None):
  """Evaluates and writes WORKDIR/eval/{metrics.json, metrics.md, NAME.png}; returns the result dict."""
  config, task, g_vars, step = restore_generator(workdir, checkpoint)
  source = (datasets.open_source(data) if data
            else datasets.train_val_sources(config.data)[1])
  names = list(source.names)
  out = pathlib.Path(out or pathlib.Path(workdir) / 'eval')
  out.mkdir(parents=True, exist_ok=True)
  records = []
  for record, (lr, bicubic, sr, hr) in evaluate_images(config, task, g_vars, source, names):
    records.append(record)
    grid = reporting.image_grid([[reporting.nearest_up(lr, hr.shape[:2]), bicubic, sr, hr]])
    reporting.save_png(out / f'{record["name"]}.png', grid)
    print(f'{record["name"]}: model {record["model"]["psnr"]:.3f} dB / bicubic '
          f'{record["bicubic"]["psnr"]:.3f} dB / nearest {record["nearest"]["psnr"]:.3f} dB', flush=True)
  mean = {kind: {m: float(np.mean([r[kind][m] for r in records])) for m in METRICS} for kind in KINDS}
  result = {'mean': mean, 'images': records,
            'checkpoint': {'which': str(checkpoint), 'step': step}, 'scale': config.model.scale,
            'experiment': config.get('name', ''), 'data': data or f'held-out split of {config.data.source}'}
  tmp = out / 'metrics.json.tmp'
  tmp.write_text(json.dumps(result, indent=2))
  tmp.replace(out / 'metrics.json')
  (out / 'metrics.md').write_text(
      f'# {result["experiment"]} x{result["scale"]} at step {step} ({checkpoint})\n\n'
      + markdown_table(result))
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--checkpoint', default='best', help='best | latest | STEP')
  parser.add_argument('--data', default=None, help='folder:PATH, tfds:NAME or embedded (default: '
                      'the held-out split of the training data)')
  parser.add_argument('--out', default=None, help='output directory (default WORKDIR/eval)')
  args = parser.parse_args(argv)
  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax's notes are not for users
  try:
    result = run(args.workdir, args.checkpoint, args.data, args.out)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  m, b, n = (result['mean'][k] for k in KINDS)
  print(f'mean PSNR {m["psnr"]:.3f} dB (bicubic {b["psnr"]:.3f}, nearest {n["psnr"]:.3f}), '
        f'SSIM {m["ssim"]:.4f} (bicubic {b["ssim"]:.4f}, nearest {n["ssim"]:.4f}), '
        f'PSNR-Y {m["psnr_y"]:.3f} (bicubic {b["psnr_y"]:.3f}, nearest {n["psnr_y"]:.3f})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
