"""`python -m enhance_jax.convert` for NIMA: torchvision-layout twins (.pth, .safetensors) -> model
directories that `nima_restore.restore` reads and that score as torch does; ImageNet backbones and non-NIMA
files are refused in one sentence, with nothing written."""

import functools
import pathlib
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

# pylint: disable=g-import-not-at-top,wrong-import-position
from enhance_jax import convert
from enhance_jax.io import nima_restore
from enhance_jax.io import weights
from enhance_jax.io.weights import backbones
from enhance_jax.models import nima as nima_model

torch = pytest.importorskip('torch')
safetensors_torch = pytest.importorskip('safetensors.torch')
from benchmarks.torch_reference.nima import TorchMnasNetNIMA, TorchMobileNetV2NIMA, randomised

SECTION = {'name': 'nima', 'dropout': nima_model.NIMA_DROPOUT}
TWINS = {'mobilenet_v2': TorchMobileNetV2NIMA, 'mnasnet': TorchMnasNetNIMA}


@functools.cache
def _twin(backbone):
  """A random-weight torch NIMA on BACKBONE (eval mode) and its state_dict as numpy."""
  torch.manual_seed(0)
  net = randomised(TWINS[backbone]())
  return net, {k: v.numpy() for k, v in net.state_dict().items()}


@functools.cache
def _apply(backbone):
  """NIMA(backbone).apply, jitted once per backbone (compiling dominates these tests)."""
  return jax.jit(nima_model.NIMA(backbone=backbone).apply)


def _save(sd, path):
  """Writes SD (numpy) as .pth, .safetensors or .npz by PATH's extension."""
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
  if path.suffix == '.pth':
    torch.save(tensors, path)
  elif path.suffix == '.safetensors':
    safetensors_torch.save_file(tensors, str(path))
  else:
    np.savez(path, **sd)
  return path


def _fails(capsys, *argv):
  """Runs convert with ARGV, expects exit 2 and returns the one-line error."""
  assert convert.main([str(a) for a in argv]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: ') and len(err.splitlines()) == 1
  return err


@pytest.mark.slow
@pytest.mark.parametrize('backbone, ext, prefix', [
    ('mobilenet_v2', '.pth', ''),
    ('mobilenet_v2', '.safetensors', 'backbone.'),
    ('mnasnet', '.safetensors', ''),
])
def test_nima_through_the_cli(backbone, ext, prefix, tmp_path, capsys):
  net, sd = _twin(backbone)
  stored = {(k if k.startswith('classifier.') else prefix + k): v for k, v in sd.items()}
  path = _save(stored, tmp_path / f'nima{ext}')
  assert convert.main([str(path), '--out', str(tmp_path / 'model')]) == 0
  assert 'architecture: nima' in capsys.readouterr().out
  model, variables, section = nima_restore.restore(tmp_path / 'model')
  assert section == dict(SECTION, backbone=backbone)
  assert model.backbone == backbone and model.dropout == nima_model.NIMA_DROPOUT
  want = weights.nima_params_from_state_dict(sd)
  assert jax.tree.structure(variables) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  x = torch.rand((2, 3, 64, 48), generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    probs = net(x)[1].numpy()
  ours = np.asarray(_apply(backbone)(variables, x.numpy().transpose(0, 2, 3, 1)))
  np.testing.assert_allclose(ours, probs, atol=1e-4)
  assert float(np.abs(ours[0] - ours[1]).max()) > 1e-3  # not flat outputs that ignore the image


def test_detection_order():
  """NIMA is claimed by 'nima' only, and no other architecture's keys look like NIMA."""
  for backbone in TWINS:
    sd = _twin(backbone)[1]
    assert [n for n, a in weights.ARCHS.items() if a.detect(sd)] == ['nima']
    assert weights.infer_arch(sd) == 'nima'
  for table in (backbones.resnet18_table(), backbones.vgg16_table()):
    sd = {key: np.zeros(shape, np.float32) for key, shape in table.values()}
    assert not weights.ARCHS['nima'].detect(sd)


@pytest.mark.parametrize('head', ['imagenet', 'none'])
def test_imagenet_backbone_is_refused(head, tmp_path, capsys):
  sd = {k: v for k, v in _twin('mobilenet_v2')[1].items() if not k.startswith('classifier.')}
  if head == 'imagenet':
    sd.update({'classifier.1.weight': np.zeros((1000, 1280), np.float32),
               'classifier.1.bias': np.zeros((1000,), np.float32)})
  path = _save(sd, tmp_path / 'mobilenet_v2-b0353104.npz')
  err = _fails(capsys, path, '--out', tmp_path / 'model')
  assert 'mobilenet_v2 ImageNet backbone' in err and 'model.backbone_weights=FILE' in err
  assert 'nima experiment' in err and not (tmp_path / 'model').exists()


def test_arch_nima_on_rrdbnet_names_a_key_and_writes_nothing(tmp_path, capsys):
  from benchmarks.torch_reference import models as tm
  net = tm.RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=4)
  path = tmp_path / 'rrdb.pth'
  torch.save(net.state_dict(), path)
  err = _fails(capsys, path, '--out', tmp_path / 'model', '--arch', 'nima')
  assert "first mismatched key: missing 'layers.0.weight'" in err
  assert 'look like rrdbnet weights' in err and not (tmp_path / 'model').exists()


def test_wrong_head_shape_is_named(tmp_path, capsys):
  sd = dict(_twin('mobilenet_v2')[1], **{'classifier.1.weight': np.zeros((5, 1280), np.float32)})
  path = _save(sd, tmp_path / 'nima.npz')
  err = _fails(capsys, path, '--out', tmp_path / 'model')
  assert "'classifier.1.weight' has shape (5, 1280), want (10, 1280)" in err
  assert not (tmp_path / 'model').exists()
