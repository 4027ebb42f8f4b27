"""The `nima` experiment: NIMA trained through the one trainer on AVA-format data (EMD loss, EMD/LCC/
SRCC validation, best by EMD), and its workdir read back by evaluate, score and loss.nima_from."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import quick_compile
from enhance_jax import evaluate
from enhance_jax import score
from enhance_jax import train
from enhance_jax.data import ava
from enhance_jax.data import input_pipeline
from enhance_jax.errors import UserError
from enhance_jax.eval import metrics
from enhance_jax.io import nima_restore
from enhance_jax.io import weights
from enhance_jax.training import config as config_lib
from enhance_jax.training import frozen
from enhance_jax.training import train_steps

pytestmark = pytest.mark.slow  # NIMA trainings

N_IMAGES = 24
TINY_NIMA = ('model.backbone=mobilenet', 'data.hr_resize=64', 'data.patch_size=48',
             'train.batch_size=8', 'train.num_steps=24', 'train.pretrain_steps=24',
             'train.eval_every_steps=6', 'train.checkpoint_every_steps=6', 'train.steps_per_epoch=6',
             'train.lr_decay_steps=6', 'train.pretrain_lr=3e-3', 'train.progress=False',
             'model.dropout=0.0')


def _write_ava(root, rng):
  """N_IMAGES photos of varied exposure and contrast, rated (200 votes) by the synthetic rating of
  the image, so ratings follow the pixels; one more line whose image is missing."""
  (root / 'images').mkdir(parents=True)
  lines = []
  for i in range(N_IMAGES):
    level, spread = rng.uniform(0.1, 0.9), rng.uniform(0.0, 0.35)
    ramp = np.linspace(-1, 1, 80)[None, :, None] * spread
    image = np.clip(level + ramp + rng.normal(0, 0.03, (80, 80, 3)), 0, 1)
    image = (image * 255).round().astype(np.uint8)
    Image.fromarray(image).save(root / 'images' / f'{1000 + i}.jpg', quality=95)
    votes = np.maximum(np.round(ava.synthetic_histogram(image) * 200), 0).astype(int)
    votes[int(np.argmax(votes))] += 1
    lines.append(' '.join(map(str, [i + 1, 1000 + i, *votes, 0, 0, 7])))
  lines.append(' '.join(map(str, [N_IMAGES + 1, 9999, *([10] * 10), 0, 0, 7])))  # no image file
  (root / 'AVA.txt').write_text('\n'.join(lines) + '\n')


@pytest.fixture(scope='module')
def nima_run(tmp_path_factory):
  """A tiny `nima` run on an AVA-format folder: (config, workdir, val records)."""
  root = tmp_path_factory.mktemp('ava')
  _write_ava(root, np.random.default_rng(0))
  config = config_lib.get_config('nima', [*TINY_NIMA, f'data.source=ava:{root}'])
  workdir = root / 'run'
  with quick_compile():
    train.train_and_evaluate(config, str(workdir))
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return config, workdir, [r for r in records if r['split'] == 'val']


def test_a_tiny_nima_run_on_ava_lowers_validation_emd(nima_run):
  _, workdir, val = nima_run
  assert [r['step'] for r in val] == [6, 12, 18, 24]
  assert all(np.isfinite(r[k]) for r in val for k in ('emd', 'lcc', 'srcc', 'score_mae'))
  assert val[-1]['emd'] < 0.8 * val[0]['emd'], [r['emd'] for r in val]
  assert (workdir / 'samples.png').is_file() and (workdir / 'loss_curves.png').is_file()


def test_the_best_checkpoint_is_the_lowest_validation_emd(nima_run):
  _, workdir, val = nima_run
  from enhance_jax.io import checkpoints# pylint: disable=g-import-not-at-top
  ckpts = checkpoints.Checkpoints(workdir, read_only=True)
  best_step = min(val, key=lambda r: r['emd'])['step']
  assert ckpts.best.latest_step() == best_step
  assert ckpts.read_meta('best')['best'] == pytest.approx(min(r['emd'] for r in val))
  ckpts.close()


def test_evaluate_scores_a_nima_run_by_emd_and_correlations(nima_run):
  _, workdir, val = nima_run
  result = evaluate.run(str(workdir))
  assert result['n'] == 5  # 20 % of the 24 present images (the missing one skipped)
  assert set(result['mean']) == {'emd', 'lcc', 'srcc', 'score_mae'}
  best = min(val, key=lambda r: r['emd'])
  assert result['mean']['emd'] == pytest.approx(best['emd'], rel=1e-4)  # the same held-out crops
  assert (workdir / 'eval' / 'scores.png').is_file()
  assert json.loads((workdir / 'eval' / 'metrics.json').read_text())['mean']['emd'] == result['mean']['emd']
  with pytest.raises(UserError, match='drop --nima'):
    evaluate.run(str(workdir), nima=str(workdir))


def test_score_and_the_hybrid_loss_read_a_nima_workdir(nima_run, tmp_path, capsys):
  _, workdir, _ = nima_run
  module, variables, section = nima_restore.restore(workdir)
  assert section['backbone'] == 'mobilenet' and module.backbone == 'mobilenet'
  photo = (np.random.default_rng(1).random((50, 70, 3)) * 255).astype(np.uint8)
  Image.fromarray(photo).save(tmp_path / 'a.png')
  assert score.main([str(tmp_path / 'a.png'), '--nima', str(workdir), '--json', '--size', '0']) == 0
  (row,) = json.loads(capsys.readouterr().out)
  want = metrics.histogram_mean_std(module.apply(variables, photo[None].astype(np.float32) / 255))
  assert row['mean'] == pytest.approx(float(want[0][0]), abs=1e-3)
  hybrid = config_lib.get_config('edsr_nima', [f'loss.nima_from={workdir}',
                                               'loss.nima_backbone=mobilenet'])
  _, loaded = frozen.nima(hybrid)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), loaded, variables))
  with pytest.raises(UserError, match='loss.nima_backbone=mobilenet'):
    frozen.nima(config_lib.get_config('edsr_nima', [f'loss.nima_from={workdir}']))


def test_unrated_photos_get_the_synthetic_rating_of_each_crop():
  config = config_lib.get_config('nima', ['data.hr_resize=64', 'data.patch_size=48'])
  photo = (np.random.default_rng(2).random((90, 120, 3)) * 255).astype(np.uint8)
  item = input_pipeline.make_rated(photo, np.random.default_rng(0), patch_size=(48, 48), resize=64,
                                   resize_mode='stretch', augment=False)
  assert item['image'].shape == (48, 48, 3)
  np.testing.assert_allclose(item['histogram'], ava.synthetic_histogram(item['image']), atol=1e-6)
  rated = input_pipeline.make_rated((photo, np.eye(10, dtype=np.float32)[3]), np.random.default_rng(0),
                                    patch_size=(48, 48), resize=64, resize_mode='stretch', augment=True)
  np.testing.assert_array_equal(rated['histogram'], np.eye(10)[3])
  batch = input_pipeline.rated_batch([photo, photo], config)
  assert batch['image'].shape == (2, 48, 48, 3) and batch['histogram'].shape == (2, 10)


def test_the_embedded_default_gives_rated_batches_offline():
  config = config_lib.get_config('nima', ['data.hr_resize=64', 'data.patch_size=48',
                                          'train.batch_size=4'])
  from enhance_jax.data import datasets# pylint: disable=g-import-not-at-top
  train_src, val_src = datasets.train_val_sources(config.data)
  batch = next(iter(input_pipeline.train_dataset(train_src, config).to_iter_dataset()))
  assert set(batch) == {'image', 'histogram'} and batch['image'].shape == (4, 48, 48, 3)
  np.testing.assert_allclose(batch['histogram'].sum(-1), 1.0, atol=1e-5)
  val = input_pipeline.validation_batch(val_src, config)
  assert val['image'].shape[1:] == (48, 48, 3)


@pytest.mark.parametrize('overrides,match', [
    (('model.scale=2',), 'set model.scale=1'),
    (('train.best_metric=psnr',), 'valid: emd'),
    (('train.lr_decay_steps=0',), 'lr_decay_steps >= 1'),
    (('train.lr_schedule=cosine',), 'unknown train.lr_schedule'),
    (('model.backbone=resnet',), "Unknown NIMA backbone 'resnet'; use one of mobilenet_v2"),
])
def test_bad_nima_configs_are_one_sentence(overrides, match):
  with pytest.raises(UserError, match=match):
    config_lib.get_config('nima', list(overrides))


def test_an_image_loss_on_nima_is_refused():
  config = config_lib.load_experiment('nima')
  with config.unlocked():
    config.loss.pretrain.pixel = 1.0
  with pytest.raises(UserError, match=r"loss terms \['pixel'\] do not fit model nima"):
    config_lib.validate(config)


def test_emd_on_an_image_model_is_refused():
  config = config_lib.load_experiment('edsr')
  with config.unlocked():
    config.loss.pretrain.emd = 1.0
  with pytest.raises(UserError, match="emd is NIMA's loss"):
    config_lib.validate(config)


def test_the_exponential_schedule_decays_smoothly_per_epoch():
  config = config_lib.get_config('nima')
  sched = train_steps._schedule(1e-4, (), config.train)  # pylint: disable=protected-access
  n = config.train.lr_decay_steps
  assert float(sched(0)) == pytest.approx(1e-4)
  assert float(sched(n)) == pytest.approx(0.95e-4)
  assert float(sched(n // 2)) == pytest.approx(1e-4 * 0.95 ** ((n // 2) / n), rel=1e-5)


def test_enhance_refuses_a_nima_run_and_names_score(nima_run, tmp_path, capsys):
  from enhance_jax import enhance# pylint: disable=g-import-not-at-top
  _, workdir, _ = nima_run
  photo = tmp_path / 'p.png'
  Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(photo)
  assert enhance.main([str(photo), '-o', str(tmp_path / 'out'), '--workdir', str(workdir)]) == 2
  err = capsys.readouterr().err
  assert 'rates images rather than enhancing them' in err and 'enhance_jax.score' in err
  assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_imagenet_backbone_weights_start_the_nima_run(tmp_path):
  """model.backbone_weights (a torchvision mobilenet_v2 state_dict, here random in an .npz) becomes
  the backbone's parameters and BatchNorm statistics of the train state; the head stays random."""
  from enhance_jax.models import nima as nima_model  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  table = nima_model.torch_table('mobilenet_v2')
  sd = {key: rng.standard_normal(shape).astype(np.float32) for key, shape in table.values()}
  sd['classifier.1.weight'] = rng.standard_normal((1000, 1280)).astype(np.float32)  # ImageNet's
  sd['classifier.1.bias'] = np.zeros(1000, np.float32)
  np.savez(tmp_path / 'mobilenet_v2.npz', **sd)
  config = config_lib.get_config('nima', ['model.backbone=mobilenet_v2', 'data.hr_resize=64',
                                          'data.patch_size=48', 'train.batch_size=2',
                                          f'model.backbone_weights={tmp_path / "mobilenet_v2.npz"}'])
  task = train_steps.make_task(config)
  state = jax.jit(lambda r: train_steps.init_state(task, r, (2, 48, 48, 3), (2, 48, 48, 3)))(
      jax.random.key(0))
  loaded = weights.with_backbone_weights(state, config)
  (collection, path), (key, _) = next(iter(table.items()))
  assert collection == 'params'
  got = loaded.g_params['backbone']
  for part in path.split('/'):
    got = got[part]
  np.testing.assert_allclose(np.asarray(got), np.transpose(sd[key], (2, 3, 1, 0)), atol=0)
  mean_key = next(k for (c, _), (k, _) in table.items() if c == 'batch_stats')
  assert any(np.allclose(np.asarray(v['mean']), sd[mean_key])
             for v in loaded.g_stats['backbone'].values())
  np.testing.assert_array_equal(np.asarray(loaded.g_params['head']['kernel']),
                                np.asarray(state.g_params['head']['kernel']))
  with pytest.raises(UserError, match='no importable ImageNet layout'):
    weights.with_backbone_weights(state, config_lib.get_config(
        'nima', ['model.backbone=mobilenet', f'model.backbone_weights={tmp_path / "x.npz"}']))
