"""Files of architectures the importer does not convert are refused as what they are, naming the keys
that gave them away, not as misfits of a known architecture (a Swin2SR or DITN file shares EDSR's
`conv_after_body`); real spandrel 0.4.2 modules make the state dicts."""

import pathlib
import sys

import numpy as np
import pytest

from enhance_jax.errors import UserError
from enhance_jax.io import weights
from enhance_jax.io.weights import archs
from enhance_jax.io.weights import foreign

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest
from benchmarks.torch_reference import spandrel_models  # pylint: disable=wrong-import-position

spandrel_models.load()
from spandrel.architectures.DITN import DITN  # noqa: E402  pylint: disable=wrong-import-position
from spandrel.architectures.SAFMN import SAFMN  # noqa: E402  pylint: disable=wrong-import-position
from spandrel.architectures.Swin2SR import Swin2SR  # noqa: E402  pylint: disable=wrong-import-position


def _modules():
  return {
      'Swin2SR': Swin2SR(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4,
                         upscale=2, upsampler='pixelshuffle'),
      'DITN': DITN(dim=12, ITL_blocks=1, SAL_blocks=1, UFONE_blocks=1, upscale=2),
      'SAFMN': SAFMN(dim=8, n_blocks=1, upscaling_factor=2),
  }


@pytest.mark.parametrize('family', ['Swin2SR', 'DITN', 'SAFMN'])
def test_a_foreign_file_is_refused_by_name_with_the_keys_that_gave_it_away(family):
  module = _modules()[family]
  assert spandrel_models.describe(module)[0] == family  # spandrel agrees on what the file is
  sd = spandrel_models.state_dict_of(module)
  with pytest.raises(UserError) as err:
    weights.import_weights(sd)
  msg = str(err.value)
  assert msg.startswith(f'These weights look like {family} (keys ')
  assert 'does not import' in msg and 'edsr' in msg  # the list of what it does import
  family_seen, keys = foreign.identify(sd)
  assert family_seen == family and keys and all(k in sd for k in keys)
  assert all(k in msg for k in keys[:3])


def test_a_foreign_file_named_as_a_known_arch_says_what_it_looks_like():
  sd = spandrel_models.state_dict_of(_modules()['DITN'])
  assert 'conv_after_body.weight' in sd and archs.ARCHS['edsr'].detect(sd)  # what fooled it before
  with pytest.raises(UserError, match=r'look like DITN \(not imported by enhance_jax\) weights'):
    weights.import_weights(sd, 'edsr')


def test_an_unknown_file_names_its_top_level_modules():
  sd = {'to_feat.weight': np.zeros((4, 3, 3, 3), np.float32), 'feats.0.x': np.zeros(2, np.float32),
        'module.head.bias': np.zeros(2, np.float32)}
  with pytest.raises(UserError) as err:
    weights.import_weights(sd)
  msg = str(err.value)
  assert 'Unknown architecture' in msg and 'top-level modules to_feat, feats, head' in msg
