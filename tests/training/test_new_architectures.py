"""Issue 23: the architectures the field trains now go through the training core unchanged. Each new
experiment, shrunk, trains through `train.main`, validates and checkpoints; a transformer and a
convnet resume from their checkpoint and finish with the losses of an uninterrupted run; `evaluate`,
`enhance` and `serve` restore every run; tiles of a window model are window multiples. The bars (a tiny
SwinIR x2 and a tiny SPAN x2 trained minutes beat bicubic on held-out photos) are in test_new_bars.py.
"""

import shutil

import jax
import numpy as np
import pytest

from enhance_jax import enhance
from enhance_jax import evaluate
from enhance_jax import serve
from enhance_jax import train
from enhance_jax.infer import tiling
from enhance_jax.io import image_io
from enhance_jax.training import config as config_lib

from conftest import quick_compile

pytestmark = pytest.mark.slow

# Every run: 2 steps of batch 2, validated and checkpointed at step 2 on two held-out photos.
SHORT = ('data.val_patch_size=64', 'data.val_max_images=2', 'train.batch_size=2',
         'train.num_steps=2', 'train.pretrain_steps=2', 'train.eval_every_steps=2',
         'train.checkpoint_every_steps=2', 'train.steps_per_epoch=2', 'train.log_every_steps=1',
         'train.progress=False')
# The GAN experiments: 1 supervised step, then 1 GAN step against a narrow D (no VGG19 term: the
# ESRGAN tests hold the perceptual loss).
GAN = ('train.pretrain_steps=1', 'discriminator.num_features=8', 'loss.gan.content=0.0')
SWIN = ('model.embed_dim=8', 'model.depths=(2,)', 'model.num_heads=(2,)', 'model.window_size=4',
        'data.patch_size=32')
PLKSR = ('model.dim=8', 'model.n_blocks=1', 'model.kernel_size=5', 'data.patch_size=32')
TINY = {
    'swinir_classical_x4': SWIN,
    'swinir_light_x4': SWIN,
    'swinir_real_x4': SWIN + GAN,
    'hat_x4': ('model.embed_dim=12', 'model.depths=(1,)', 'model.num_heads=(2,)',
               'model.window_size=4', 'model.num_feat=8', 'model.compress_ratio=3',
               'model.squeeze_factor=4', 'model.remat=True', 'data.patch_size=32'),
    'dat_x4': ('model.embed_dim=32', 'model.depths=(2,)', 'model.num_heads=(2,)',
               'model.split_size=(4, 8)', 'model.remat=True', 'data.patch_size=32'),
    'span_x4': ('model.num_features=8', 'data.patch_size=32'),
    'realplksr_x4': PLKSR,
    'realplksr_gan_x4': PLKSR + GAN,
    'omnisr_x4': ('model.num_feat=8', 'model.window_size=4', 'model.res_num=1', 'data.patch_size=64'),
    'rcan_x4': ('model.num_groups=1', 'model.num_blocks=1', 'model.num_features=16',
                'model.reduction=4', 'data.patch_size=32'),
}


def test_every_new_experiment_is_covered():
  new = {n for n in config_lib.list_experiments()
         if config_lib.load_experiment(n).model.name in ('swinir', 'hat', 'dat', 'span', 'realplksr',
                                                    'omnisr', 'rcan')}
  assert new == set(TINY)


def _sets(*overrides):
  return [a for o in overrides for a in ('--set', o)]


def _train(name, workdir, *extra):
  with quick_compile():
    return train.main(['--exp', name, '--workdir', str(workdir), *_sets(*SHORT, *TINY[name], *extra)])


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Each new experiment trained 2 steps (validated, checkpointed at 2)."""
  out = {}
  for name in TINY:
    workdir = tmp_path_factory.mktemp(name)
    assert _train(name, workdir) == 0, name
    out[name] = workdir
  return out


# evaluate on the GAN experiments degrades the full-size photos by the Real-ESRGAN chain (a minute
# each here); enhance and serve restore those two below.
@pytest.mark.parametrize('name', sorted(n for n in TINY if 'real' not in n or n == 'realplksr_x4'))
def test_trains_checkpoints_and_evaluate_restores(name, runs):
  result = evaluate.run(runs[name], 'latest')
  assert result['checkpoint']['step'] == 2 and result['experiment'] == name
  model = result['mean']['model']
  assert np.isfinite(model['psnr']) and 0 < model['ssim'] <= 1


def test_enhance_and_serve_restore_every_run(runs, tmp_path):
  photo = tmp_path / 'in.png'
  image_io.write(photo, np.random.default_rng(0).uniform(size=(21, 27, 3)).astype(np.float32))
  for name, workdir in runs.items():
    out = tmp_path / f'{name}.png'
    assert enhance.main(['--workdir', str(workdir), str(photo), '--output', str(out)]) == 0
    assert image_io.read_image(out).shape == (84, 108, 3), name
  served = serve.load_models(list(runs.values()), precision='fp32')
  assert sorted(m.experiment for m in served) == sorted(TINY)
  assert all(m.scale == 4 and m.step == 2 for m in served)


@pytest.mark.parametrize('name', ['swinir_classical_x4', 'span_x4'])
def test_resume_ends_where_an_uninterrupted_run_ends(name, runs, tmp_path):
  """The module's 2-step run, copied and resumed to 4 steps, ends with the parameters of a 4-step
  run from scratch (a transformer with stochastic depth, and a convnet)."""
  resumed = tmp_path / 'resumed'
  shutil.copytree(runs[name], resumed)  # a copy: the module's run stays at step 2
  more = ('train.num_steps=4', 'train.pretrain_steps=4')
  config = config_lib.get_config(name, [*SHORT, *TINY[name], *more])
  with quick_compile():
    got = train.train_and_evaluate(config, resumed)
    want = train.train_and_evaluate(config, tmp_path / 'whole')
  assert int(got.step) == int(want.step) == 4
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               jax.device_get(got.g_params), jax.device_get(want.g_params))


def test_window_models_tile_in_window_multiples(runs):
  """enhance's windows for a window transformer are multiples of its window (4 here x scale 4)."""
  restored = serve.discover([runs['swinir_classical_x4']])[0][1]
  enhancer = tiling.enhancer_for(restored, 'fp32', tile=30, pad=6)
  assert enhancer.tile % 4 == 0 and enhancer.pad % 4 == 0
  image = np.random.default_rng(1).uniform(size=(50, 70, 3)).astype(np.float32)
  tiled = enhancer(image)
  whole = tiling.enhancer_for(restored, 'fp32', tile=0)(image)
  assert tiled.shape == whole.shape == (200, 280, 3)
