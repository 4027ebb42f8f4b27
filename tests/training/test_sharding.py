"""Data parallelism on 8 fake CPU devices: the jitted steps from `train_steps.jit_steps` on an 8-device
mesh give the 1-device results, with the batch really split and the state replicated, and
`train_and_evaluate` runs there.

XLA reads `--xla_force_host_platform_device_count` once per process and the rest of the suite runs
on one device (8 for the whole session slows the long training tests ~1.5x), so the 8-device work
runs once in a child process (`_child`) that writes what it measured to JSON; the tests assert on it.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # children with 8 fake devices and trainings on them

TESTS = pathlib.Path(__file__).resolve().parent
XLA_FLAGS = '--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0'
STEPS = {'pretrain': 2, 'gan': 2}


@pytest.fixture(scope='module')
def child(tmp_path_factory):
  out = tmp_path_factory.mktemp('sharding')
  path = os.pathsep.join([str(TESTS), str(TESTS.parent), str(TESTS.parents[1]),
                         os.environ.get('PYTHONPATH', '')])
  env = {**os.environ, 'XLA_FLAGS': XLA_FLAGS, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': path}
  code = f'import test_sharding; test_sharding._child({str(out)!r})'
  proc = subprocess.run([sys.executable, '-c', code], env=env, cwd=out, capture_output=True,
                        text=True, timeout=600, check=False)
  assert proc.returncode == 0, f'8-device child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
  return json.loads((out / 'result.json').read_text())


@pytest.mark.slow
def test_child_has_8_devices(child):
  assert child['devices'] == 8


def test_batch_is_split_over_the_8_devices(child):
  split = child['mesh8']['batch']
  assert split['devices'] == 8 and not split['replicated']
  assert split['shard_shapes'] == [[1, 32, 32, 3]] * 8  # one image of the global 8 per device
  assert child['mesh1']['batch']['shard_shapes'] == [[8, 32, 32, 3]]


def test_state_is_replicated(child):
  assert child['mesh8']['state_replicated_on'] == 8
  assert child['mesh1']['state_replicated_on'] == 1


def test_8_devices_give_the_1_device_params_and_metrics(child):
  """Pretrain and GAN steps (BatchNorm in D: its batch statistics span the split batch) agree."""
  one, eight = child['mesh1'], child['mesh8']
  assert len(eight['metrics']) == len(one['metrics']) == sum(STEPS.values())
  for i, (m8, m1) in enumerate(zip(eight['metrics'], one['metrics'])):
    assert set(m8) == set(m1)
    for k in m1:
      assert m8[k] == pytest.approx(m1[k], rel=1e-5, abs=1e-6), (i, k)
  assert set(child['params_rel_diff']) == {'g_params', 'g_opt', 'd_params', 'd_opt', 'd_stats'}
  for name, diff in child['params_rel_diff'].items():
    assert diff < 1e-5, name
  assert child['params_moved'] > 1e-5  # the steps did change the params (not a vacuous match)
  assert child['eval_rel_diff'] < 1e-5
  assert one['step'] == eight['step'] == sum(STEPS.values())


def test_train_and_evaluate_on_8_devices(child):
  """The whole loop (VGG19 content loss, the switch to the GAN stage under the transfer guard,
  validation over the split batch, checkpoints) on the 8-device mesh, with LR made on the devices."""
  e2e = child['train_and_evaluate']
  assert e2e['error'] is None, e2e['error']
  assert e2e['step'] == 4 and e2e['state_replicated_on'] == 8


def _child(out):
  """Runs in the 8-device process: steps on 8- and 1-device meshes, then train_and_evaluate."""
  import tempfile  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from conftest import photo_batch  # pylint: disable=g-import-not-at-top
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from enhance_jax.data import input_pipeline# pylint: disable=g-import-not-at-top
  from enhance_jax import parallel# pylint: disable=g-import-not-at-top
  from enhance_jax import train# pylint: disable=g-import-not-at-top
  from enhance_jax.training import train_steps# pylint: disable=g-import-not-at-top
  from enhance_jax.io import weights# pylint: disable=g-import-not-at-top

  def replicated_on(tree):
    """How many devices every leaf of TREE is fully replicated on (-1: not so)."""
    leaves = jax.tree.leaves(tree)
    counts = {len(x.sharding.device_set) for x in leaves}
    replicated = all(x.sharding.is_fully_replicated for x in leaves)
    return counts.pop() if len(counts) == 1 and replicated else -1

  def rel_diff(a, b):
    a, b = jax.device_get(a), jax.device_get(b)
    num = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return num / max(max(float(np.max(np.abs(y))) for y in jax.tree.leaves(b)), 1e-12)

  # Vanilla GAN loss here: the relativistic one is invariant to a shift of all of D's logits, so
  # some of D's parameters (the output bias; dense1's biases where a unit has one sign over the
  # batch) get a zero gradient made of rounding noise alone, which Adam scales up to steps of
  # about +-lr: their values after a step depend on summation order, on one device as on eight.
  config = tiny_config('loss.gan_type=vanilla')
  assert config.discriminator.norm == 'batch'
  task = train_steps.make_task(config)
  host_batch = photo_batch(config)
  host_vgg = {'vgg19': {'params': weights.load_vgg19(None, (config.loss.content_layer,))}}  # frozen
  shapes = host_batch['lr'].shape, host_batch['hr'].shape
  result = {'devices': len(jax.devices())}
  states, evals = {}, {}
  # Initialised as train.py does (the same lambda: its program comes from the cache there), on 8
  # devices; the 1-device run starts from a copy.
  init = jax.jit(lambda rng: train_steps.init_state(task, rng, *shapes),
                 out_shardings=parallel.replicated(parallel.make_mesh(8)))
  initial = init(jax.random.key(config.seed))
  initial = jax.device_get(initial.replace(rng=jax.random.key_data(initial.rng)))
  for n in (8, 1):
    mesh = parallel.make_mesh(n)
    rep = parallel.replicated(mesh)
    steps = train_steps.jit_steps(task, mesh)
    state = jax.device_put(initial, rep)
    state = state.replace(rng=jax.random.wrap_key_data(state.rng))
    batch = input_pipeline.to_global(host_batch, parallel.batch_sharding(mesh))
    vgg = jax.device_put(host_vgg, rep)
    metrics = []
    for stage in ('pretrain', 'gan'):
      if stage == 'gan':
        state = train_steps.start_gan_stage(task, state)  # outside the guard, as in train.py
      with jax.transfer_guard('disallow'):
        for _ in range(STEPS[stage]):
          state, m = steps[stage](state, batch, vgg)
          metrics.append(m)
    with jax.transfer_guard('disallow'):
      evals[n] = steps['predict'](train_steps.eval_variables(state), batch['lr'])
    states[n] = state
    result[f'mesh{n}'] = {
        'batch': {'devices': len(batch['hr'].sharding.device_set),
                  'replicated': batch['hr'].sharding.is_fully_replicated,
                  'shard_shapes': [list(s.data.shape) for s in batch['hr'].addressable_shards]},
        'state_replicated_on': replicated_on(state),
        'metrics': [{k: float(v) for k, v in m.items()} for m in jax.device_get(metrics)],
        'step': int(state.step)}
    if n == 1:
      result['params_moved'] = rel_diff(state.g_params, initial.g_params)
  result['params_rel_diff'] = {
      name: rel_diff(getattr(states[8], name), getattr(states[1], name))
      for name in ('g_params', 'g_opt', 'd_params', 'd_opt', 'd_stats')}
  result['eval_rel_diff'] = rel_diff(evals[8], evals[1])

  try:  # the config above (its programs come from the compilation cache), 2 epochs of 2 steps
    e2e_config = tiny_config('loss.gan_type=vanilla', 'train.num_steps=4',
                             'data.degrade_on_device=true')  # HR-only batches split over 8
    state = train.train_and_evaluate(e2e_config, tempfile.mkdtemp(dir=out))
    result['train_and_evaluate'] = {'error': None, 'step': int(state.step),
                                    'state_replicated_on': replicated_on(state)}
  except Exception as e:  # pylint: disable=broad-except
    result['train_and_evaluate'] = {'error': f'{type(e).__name__}: {str(e)[:300]}'}
  pathlib.Path(out, 'result.json').write_text(json.dumps(result))
