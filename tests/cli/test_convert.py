"""enhance_jax.convert: released PyTorch weights -> model directories (architecture and sizes inferred),
parity with the torch twins through the CLI entry, containers, model directories and the errors."""

import json
import os
import pathlib
import sys

import jax
import ml_collections
import numpy as np
import pytest
import safetensors.torch
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.torch_reference import models as tm
from conftest import fast_jit
from enhance_jax import convert
from enhance_jax import models
from enhance_jax.errors import UserError
from enhance_jax.io import weights
from enhance_jax.io.weights import backbones

SIDE = 12  # LR side: a multiple of 4 for RRDBNet x1's pixel-unshuffle


def _rrdbnet(scale, names='basicsr'):
  net = tm.RRDBNet(num_feat=8, num_block=2, num_grow_ch=4, scale=scale)
  return net, (tm.esrgan_state_dict if names == 'esrgan' else dict)


def _edsr_pt(scale):
  """EDSR-PyTorch's model works on [0, 255] images: the twin is wrapped to take and give [0, 1]."""
  net = tm.EDSR_PT(n_feats=8, n_resblocks=2, scale=scale)
  return net, dict, lambda x: net(x * 255) / 255


# case: (torch twin factory, the model section convert must infer)
CASES = {
    'rrdbnet_x4': (lambda: _rrdbnet(4), {'name': 'rrdbnet', 'num_blocks': 2, 'num_features': 8,
                                         'growth_channels': 4, 'scale': 4}),
    'rrdbnet_x2': (lambda: _rrdbnet(2), {'name': 'rrdbnet', 'num_blocks': 2, 'num_features': 8,
                                         'growth_channels': 4, 'scale': 2}),
    'rrdbnet_x1': (lambda: _rrdbnet(1), {'name': 'rrdbnet', 'num_blocks': 2, 'num_features': 8,
                                         'growth_channels': 4, 'scale': 1}),
    'esrgan_x4': (lambda: _rrdbnet(4, 'esrgan'), {'name': 'rrdbnet', 'num_blocks': 2,
                                                  'num_features': 8, 'growth_channels': 4,
                                                  'scale': 4}),
    'srvgg_x4': (lambda: (tm.SRVGGNetCompact(num_feat=8, num_conv=3, upscale=4), dict),
                 {'name': 'srvgg_compact', 'num_features': 8, 'num_convs': 3, 'scale': 4}),
    'srvgg_x2': (lambda: (tm.SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2), dict),
                 {'name': 'srvgg_compact', 'num_features': 8, 'num_convs': 2, 'scale': 2}),
    'msrresnet_x4': (lambda: (tm.MSRResNet(num_feat=8, num_block=2, upscale=4), dict),
                     {'name': 'msrresnet', 'num_blocks': 2, 'num_features': 8, 'scale': 4}),
    'msrresnet_x3': (lambda: (tm.MSRResNet(num_feat=8, num_block=2, upscale=3), dict),
                     {'name': 'msrresnet', 'num_blocks': 2, 'num_features': 8, 'scale': 3}),
    'msrresnet_x2': (lambda: (tm.MSRResNet(num_feat=8, num_block=1, upscale=2), dict),
                     {'name': 'msrresnet', 'num_blocks': 1, 'num_features': 8, 'scale': 2}),
    'edsr_x4': (lambda: (tm.EDSR(num_feat=8, num_block=2, upscale=4), dict),
                {'name': 'edsr', 'num_blocks': 2, 'num_features': 8, 'scale': 4, 'res_scale': 1.0}),
    'edsr_x3': (lambda: (tm.EDSR(num_feat=8, num_block=1, upscale=3), dict),
                {'name': 'edsr', 'num_blocks': 1, 'num_features': 8, 'scale': 3, 'res_scale': 1.0}),
    'edsr_pytorch_x2': (lambda: _edsr_pt(2), {'name': 'edsr', 'num_blocks': 2, 'num_features': 8,
                                              'scale': 2, 'res_scale': 1.0}),
    'edsr_pytorch_x4': (lambda: _edsr_pt(4), {'name': 'edsr', 'num_blocks': 2, 'num_features': 8,
                                              'scale': 4, 'res_scale': 1.0}),
}


def _twin(case):
  """(torch module in eval mode, its forward on [0,1] NCHW, its state_dict as numpy-able tensors)."""
  torch.manual_seed(0)
  made = CASES[case][0]()
  net, rename = made[:2]
  forward = made[2] if len(made) > 2 else net
  with torch.no_grad():  # random PReLU slopes, so that every imported tensor matters
    for m in net.modules():
      if isinstance(m, torch.nn.PReLU):
        m.weight.uniform_(0.0, 0.5)
  return net.eval(), forward, rename(net.state_dict())


def _save_both(sd, tmp_path, wrap='params_ema'):
  """SD saved as a BasicSR-wrapped .pth and a bare .safetensors; returns both paths."""
  pth, st = tmp_path / 'w.pth', tmp_path / 'w.safetensors'
  torch.save({wrap: sd} if wrap else sd, pth)
  safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
  return pth, st


def _build(section):
  config = ml_collections.ConfigDict({'model': dict(section), 'train': {'precision': 'fp32'}})
  return models.build_generator(config)


def _main_ok(*argv):
  assert convert.main([str(a) for a in argv]) == 0


@pytest.mark.parametrize('case', list(CASES))
def test_parity_through_the_cli(case, tmp_path, capsys):
  net, forward, sd = _twin(case)
  pth, st = _save_both(sd, tmp_path)
  _main_ok(pth, '--out', tmp_path / 'from_pth')
  _main_ok(st, '--out', tmp_path / 'from_st')
  printed = capsys.readouterr().out
  assert f"architecture: {weights.describe(CASES[case][1])}" in printed
  section, variables, meta = weights.read_model_dir(tmp_path / 'from_pth')
  section_st, variables_st, meta_st = weights.read_model_dir(tmp_path / 'from_st')
  assert section == section_st == CASES[case][1]
  assert meta['arch'] == section['name'] and meta['num_keys'] == len(sd) == meta_st['num_keys']
  assert meta['source'] == 'w.pth' and len(meta['source_sha256']) == 64
  assert jax.tree.structure(variables) == jax.tree.structure(variables_st)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(variables_st)):
    np.testing.assert_array_equal(a, b)
  mean_shift = ('sub_mean.weight', 'sub_mean.bias', 'add_mean.weight', 'add_mean.bias')  # constants
  assert sum(v.size for v in jax.tree.leaves(variables)) == sum(
      v.numel() for k, v in sd.items() if k not in mean_shift)

  x = np.random.default_rng(0).uniform(size=(2, SIDE, SIDE, 3)).astype(np.float32)
  model = _build(section)
  y = np.asarray(fast_jit(model.apply, variables, x)(variables, x))
  with torch.no_grad():
    want = forward(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  scale = section['scale']
  assert y.dtype == np.float32 and y.shape == want.shape == (2, SIDE * scale, SIDE * scale, 3)
  assert np.abs(want).max() > 0.05  # not vanishing: 1e-4 is a real tolerance
  assert np.abs(y - want).max() <= 1e-4


@pytest.mark.parametrize('case', ['srvgg_x4', 'msrresnet_x3', 'edsr_x3'])
def test_bfloat16_compute_gives_float32(case):
  model = _build(CASES[case][1]).clone(dtype=jax.numpy.bfloat16)
  x = jax.ShapeDtypeStruct((1, SIDE, SIDE, 3), np.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out = jax.eval_shape(model.apply, variables, x)
  side = SIDE * CASES[case][1]['scale']
  assert out.dtype == np.float32 and out.shape == (1, side, side, 3)
  assert all(v.dtype == np.float32 for v in jax.tree.leaves(variables))


def test_edsr_large_gets_res_scale_0_1():
  nf = weights.EDSR_LARGE_FEATURES
  conv = lambda c_out, c_in: np.zeros((c_out, c_in, 3, 3), np.float32)
  sd = {'conv_first.weight': conv(nf, 3), 'body.0.conv1.weight': conv(nf, nf),
        'body.0.conv2.weight': conv(nf, nf), 'conv_after_body.weight': conv(nf, nf),
        'upsample.0.weight': conv(4 * nf, nf), 'upsample.2.weight': conv(4 * nf, nf),
        'conv_last.weight': conv(3, nf)}
  sd.update({k.replace('weight', 'bias'): np.zeros(v.shape[0], np.float32) for k, v in list(sd.items())})
  section, _ = weights.import_weights(sd)
  assert section == {'name': 'edsr', 'num_blocks': 1, 'num_features': 256, 'scale': 4,
                     'res_scale': 0.1}


# ---------------------------------------------------------------- vgg19, resnet18, vgg16


def _random_sd(table, extra=()):
  rng = np.random.default_rng(0)
  sd = {key: rng.standard_normal(shape).astype(np.float32) for key, shape in table.values()}
  sd.update({k: np.zeros((4, 4), np.float32) for k in extra})
  return sd


def test_vgg19_through_the_cli(tmp_path, capsys):
  torch.manual_seed(0)
  sd = dict(tm.VGG19Features('conv5_4').state_dict())  # keys features.{i}
  sd['classifier.0.weight'] = torch.zeros(4, 4)  # ignored
  pth = tmp_path / 'vgg19.pth'
  torch.save(sd, pth)
  _main_ok(pth, '--out', tmp_path / 'vgg19')
  assert 'architecture: vgg19' in capsys.readouterr().out
  section, variables, _ = weights.read_model_dir(tmp_path / 'vgg19')
  assert section == {'name': 'vgg19'} and set(variables) == {'params'}
  want = weights.load_vgg19(pth, 'conv5_4')  # the loader whose torch parity test_vgg19_weights checks
  for name in want:
    np.testing.assert_array_equal(variables['params'][name]['kernel'], want[name]['kernel'])
    np.testing.assert_array_equal(variables['params'][name]['bias'], want[name]['bias'])


@pytest.mark.parametrize('name, table, extra, prefix', [
    ('resnet18', backbones.resnet18_table, ('fc.weight',), ''),
    ('vgg16', backbones.vgg16_table, ('classifier.0.weight',), 'backbone.'),
])
def test_backbones_through_the_cli(name, table, extra, prefix, tmp_path):
  sd = {prefix + k: v for k, v in _random_sd(table(), extra).items()}
  path = tmp_path / f'{name}.safetensors'
  safetensors.torch.save_file({k: torch.from_numpy(v) for k, v in sd.items()}, str(path))
  _main_ok(path, '--out', tmp_path / name)
  section, variables, meta = weights.read_model_dir(tmp_path / name)
  assert section == {'name': name} and meta['arch'] == name
  want = weights.load_backbone(name, path)  # the loader whose torch parity test_restoration_baselines checks
  assert jax.tree.structure(variables) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- containers


def test_params_ema_is_preferred_and_state_dict_unwrapped(tmp_path):
  _, _, sd = _twin('srvgg_x4')
  other = {k: torch.zeros_like(v) for k, v in sd.items()}
  torch.save({'params': other, 'params_ema': sd}, tmp_path / 'both.pth')
  torch.save({'state_dict': sd, 'epoch': 3}, tmp_path / 'lightning.pth')
  for file in ('both.pth', 'lightning.pth'):
    _main_ok(tmp_path / file, '--out', tmp_path / file.replace('.', '_'))
    _, variables, _ = weights.read_model_dir(tmp_path / file.replace('.', '_'))
    np.testing.assert_array_equal(variables['params']['body_1']['negative_slope'],
                                  sd['body.1.weight'].numpy())
    np.testing.assert_array_equal(variables['params']['body_8']['kernel'],
                                  sd['body.8.weight'].numpy().transpose(2, 3, 1, 0))


# ---------------------------------------------------------------- errors


@pytest.fixture(name='rrdb_sd')
def rrdb_sd_fixture():
  return {k: v.numpy() for k, v in _twin('rrdbnet_x4')[2].items()}


def _save(sd, path):
  safetensors.torch.save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
                              str(path))
  return path


def _fails(capsys, *argv):
  """Runs the CLI expecting exit code 2; returns its one-line message."""
  assert convert.main([str(a) for a in argv]) == 2
  captured = capsys.readouterr()
  assert captured.out == ''
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), captured.err
  return lines[0]


def test_wrong_arch_names_a_key_and_writes_nothing(rrdb_sd, tmp_path, capsys):
  path = _save(rrdb_sd, tmp_path / 'rrdb.safetensors')
  out = tmp_path / 'new' / 'edsr'
  msg = _fails(capsys, path, '--out', out, '--arch', 'edsr')
  assert "the first mismatched key: missing 'body.0.conv1.weight'" in msg
  assert str(path) in msg and 'look like rrdbnet' in msg
  assert not (tmp_path / 'new').exists()
  with pytest.raises(UserError, match="missing 'body.0.conv1.weight'"):
    weights.import_weights(rrdb_sd, 'edsr')
  with pytest.raises(UserError, match=r"Unknown architecture 'edsr2'; use one of swinir, .*edsr, "):
    weights.import_weights(rrdb_sd, 'edsr2')


@pytest.mark.parametrize('change, named', [
    ('remove', "missing 'body.1.rdb2.conv3.bias'"),
    ('extra', "unexpected 'body.0.rdb1.conv6.weight'"),
    ('shape', "'conv_hr.weight' has shape (8, 8, 1, 1), want (8, 8, 3, 3)"),
])
def test_one_bad_key_is_named(rrdb_sd, change, named, tmp_path, capsys):
  if change == 'remove':
    del rrdb_sd['body.1.rdb2.conv3.bias']
  elif change == 'extra':
    rrdb_sd['body.0.rdb1.conv6.weight'] = np.zeros((4, 8, 3, 3), np.float32)
  else:
    rrdb_sd['conv_hr.weight'] = np.zeros((8, 8, 1, 1), np.float32)
  rrdb_sd['body.0.rdb1.bn.num_batches_tracked'] = np.zeros((), np.int64)  # ignored
  msg = _fails(capsys, _save(rrdb_sd, tmp_path / 'bad.safetensors'), '--out', tmp_path / 'out')
  assert f'the first mismatched key: {named}' in msg and 'more mismatched' not in msg
  assert 'rrdbnet (num_blocks=2, num_features=8, growth_channels=4, scale=4)' in msg
  assert not (tmp_path / 'out').exists()


def test_edsr_pytorch_mean_shift_is_checked():
  _, _, sd = _twin('edsr_pytorch_x2')
  sd = {k: v.numpy() for k, v in sd.items()}
  sd['sub_mean.bias'] = sd['sub_mean.bias'] * 0.5
  with pytest.raises(UserError, match=r"first mismatched key: 'sub_mean\.bias' is \[-57\.22"):
    weights.import_weights(sd)
  mean = sd['add_mean.bias'] / 255
  sd['sub_mean.bias'], sd['add_mean.bias'] = -mean, mean
  section, _ = weights.import_weights(sd)  # EDSR-PyTorch trained with --rgb_range 1
  assert section['img_range'] == 1.0


def test_unknown_keys(tmp_path, capsys):
  msg = _fails(capsys, _save({'foo.weight': np.zeros(3, np.float32)}, tmp_path / 'x.safetensors'),
               '--out', tmp_path / 'out')
  assert 'Unknown architecture: the keys (foo.weight; top-level modules foo)' in msg and '--arch' in msg
  msg = _fails(capsys, tmp_path / 'missing.pth', '--out', tmp_path / 'out')
  assert 'does not exist' in msg


def test_existing_out_needs_overwrite(tmp_path, capsys):
  _, _, sd = _twin('srvgg_x2')
  pth, _ = _save_both(sd, tmp_path)
  out = tmp_path / 'model'
  out.mkdir()
  (out / 'keep.txt').write_text('old')
  msg = _fails(capsys, pth, '--out', out)
  assert 'is not empty' in msg and '--overwrite' in msg
  assert (out / 'keep.txt').read_text() == 'old' and len(list(out.iterdir())) == 1
  # --overwrite never replaces a folder that is not a model directory...
  msg = _fails(capsys, pth, '--out', out, '--overwrite')
  assert 'not a model directory' in msg and (out / 'keep.txt').read_text() == 'old'
  # ...but does replace a model directory, atomically.
  (out / 'keep.txt').unlink()
  _main_ok(pth, '--out', out)
  capsys.readouterr()
  _fails(capsys, pth, '--out', out)
  _main_ok(pth, '--out', out, '--overwrite')
  assert sorted(p.name for p in out.iterdir()) == ['model.json', 'variables.npz']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['model', 'w.pth', 'w.safetensors']


def test_write_model_dir_is_atomic(tmp_path, monkeypatch):
  variables = {'params': {'conv': {'kernel': np.ones((3, 3, 3, 4), np.float32)}}}
  out = tmp_path / 'a' / 'b' / 'model'
  weights.write_model_dir(out, {'name': 'x'}, variables, {'source': 's'})
  section, back, meta = weights.read_model_dir(out)
  assert section == {'name': 'x'} and meta == {'source': 's'}
  np.testing.assert_array_equal(back['params']['conv']['kernel'], variables['params']['conv']['kernel'])
  assert json.loads((out / 'model.json').read_text())['format'] == 1
  assert set(np.load(out / 'variables.npz').files) == {'params/conv/kernel'}
  assert weights.is_model_dir(out) and not weights.is_model_dir(tmp_path)

  def broken(*args, **kwargs):
    raise OSError('disk full')
  monkeypatch.setattr(np, 'savez', broken)
  with pytest.raises(OSError, match='disk full'):  # an overwrite that fails keeps the old model
    weights.write_model_dir(out, {'name': 'y'}, variables, {}, overwrite=True)
  assert weights.read_model_dir(out)[0] == {'name': 'x'}
  assert sorted(p.name for p in out.parent.iterdir()) == ['model']
  with pytest.raises(OSError, match='disk full'):  # a new one leaves no folder behind
    weights.write_model_dir(tmp_path / 'c' / 'd' / 'model', {'name': 'y'}, variables, {})
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a']
  monkeypatch.undo()
  replace = os.replace

  def replace_fails_for_the_new_dir(src, dst):
    if '.tmp-' in os.fspath(src):
      raise OSError('rename failed')
    return replace(src, dst)
  monkeypatch.setattr(os, 'replace', replace_fails_for_the_new_dir)
  with pytest.raises(OSError, match='rename failed'):  # after the old one was moved aside
    weights.write_model_dir(out, {'name': 'y'}, variables, {}, overwrite=True)
  assert weights.read_model_dir(out)[0] == {'name': 'x'}
  assert sorted(p.name for p in out.parent.iterdir()) == ['model']


def test_read_model_dir_errors(tmp_path):
  with pytest.raises(UserError, match='is not a model directory'):
    weights.read_model_dir(tmp_path)
  (tmp_path / 'model.json').write_text('{"format": 1, ')
  with pytest.raises(UserError, match='model.json.* is corrupt'):
    weights.read_model_dir(tmp_path)
  (tmp_path / 'model.json').write_text(json.dumps(
      {'format': 1, 'kind': 'enhance_jax.model', 'model': {'name': 'edsr'}, 'meta': {}}))
  with pytest.raises(UserError, match='has no variables.npz'):
    weights.read_model_dir(tmp_path)
  (tmp_path / 'variables.npz').write_bytes(b'not a zip')
  with pytest.raises(UserError, match='corrupt or truncated'):
    weights.read_model_dir(tmp_path)
