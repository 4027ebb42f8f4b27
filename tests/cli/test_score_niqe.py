"""`score --metric niqe`: BasicSR's NIQE of image files with no reference (real photos written as PNG
and JPEG), as the metric computes it, with small images skipped in one line and a missing --nima for
the default metric refused with the fix."""

import json

import numpy as np
import skimage.data
from PIL import Image

from benchmarks.torch_reference import metric_references
from enhance_jax import score
from enhance_jax.eval import niqe
from enhance_jax.io import metric_weights


def test_niqe_scores_files_as_basicsr_and_skips_small_ones(tmp_path, capsys):
  params = str(metric_references.pristine_params_path())
  photo = skimage.data.coffee()
  Image.fromarray(photo).save(tmp_path / 'coffee.png')
  Image.fromarray(photo[:, :, 0]).save(tmp_path / 'grey.png')  # grey: repeated to RGB
  Image.fromarray(photo[:64, :64]).save(tmp_path / 'small.png')
  rc = score.main(['--metric', 'niqe', '--niqe-params', params, '--json', str(tmp_path)])
  out, err = capsys.readouterr()
  assert rc == 1 and 'skipped' in err and 'small.png' in err and 'NIQE needs two whole 96x96 blocks' in err
  rows = {pathlib_name(r['image']): r for r in json.loads(out)}
  assert set(rows) == {'coffee.png', 'grey.png'} and set(rows['coffee.png']) == {'image', 'niqe'}
  want = metric_references.niqe_module().calculate_niqe(photo[..., ::-1].astype(np.float64), crop_border=0)
  np.testing.assert_allclose(rows['coffee.png']['niqe'], want, rtol=1e-3)
  grey = np.repeat(photo[:, :, :1], 3, axis=-1) / 255.0
  np.testing.assert_allclose(rows['grey.png']['niqe'],
                             niqe.niqe(grey[None], metric_weights.load_niqe_params(params))[0], atol=1e-4)


def test_niqe_table_and_the_nima_default_needs_its_weights(tmp_path, capsys):
  Image.fromarray(skimage.data.chelsea()).save(tmp_path / 'chelsea.jpg', quality=90)
  params = str(metric_references.pristine_params_path())
  assert score.main(['--metric', 'niqe', '--niqe-params', params, str(tmp_path / 'chelsea.jpg')]) == 0
  header, row = capsys.readouterr().out.strip().splitlines()
  assert header.split() == ['image', 'niqe'] and float(row.split()[-1]) > 0
  assert score.main([str(tmp_path / 'chelsea.jpg')]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'needs --nima' in err[0] and '--metric niqe' in err[0]
  assert score.main(['--metric', 'niqe', '--niqe-params', str(tmp_path / 'none.npz'),
                     str(tmp_path / 'chelsea.jpg')]) == 2
  assert 'do not exist' in capsys.readouterr().err


def pathlib_name(shown):
  return shown.rsplit('/', 1)[-1]
