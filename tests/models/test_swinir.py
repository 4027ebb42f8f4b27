"""SwinIR against spandrel 0.4.2's PyTorch SwinIR: outputs on inputs that are not window multiples
(classical x2 and real-world x4 '3conv' at another window and depth), sizes inferred from the state
dict of every variant (classical, lightweight, real-world, JPEG), parameter count at the paper's size,
remat, bf16 / training traces, and strict imports."""

import functools
import importlib
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from enhance_jax.errors import UserError
from enhance_jax.io.weights import archs
from enhance_jax.io.weights import swinir as swinir_weights
from enhance_jax.models import swinir

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

torch = pytest.importorskip('torch')
from conftest import fast_jit  # noqa: E402
from benchmarks.torch_reference import spandrel_models  # noqa: E402

spandrel_models.load()
from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402

# Tiny SwinIRs as spandrel builds them: keyword arguments of its constructor -> our section's sizes.
CONFIGS = {
    'classical_x2': dict(embed_dim=12, depths=[2, 2], num_heads=[2, 3], window_size=8, mlp_ratio=2.0,
                         upscale=2, upsampler='pixelshuffle', resi_connection='1conv', img_size=16),
    'real_x4_3conv': dict(embed_dim=16, depths=[3], num_heads=[4], window_size=4, mlp_ratio=1.5,
                          upscale=4, upsampler='nearest+conv', resi_connection='3conv', img_size=12),
    'light_x3': dict(embed_dim=12, depths=[2], num_heads=[3], window_size=8, mlp_ratio=2.0, upscale=3,
                     upsampler='pixelshuffledirect', resi_connection='1conv', img_size=16),
    'jpeg_x1': dict(embed_dim=8, depths=[2], num_heads=[2], window_size=7, mlp_ratio=2.0, upscale=1,
                    upsampler='', resi_connection='1conv', img_size=14, img_range=255.0),
    'real_x8': dict(embed_dim=8, depths=[2, 1], num_heads=[2, 2], window_size=4, mlp_ratio=2.0,
                    upscale=8, upsampler='nearest+conv', resi_connection='1conv', img_size=8),
}
X = np.random.default_rng(0).uniform(size=(1, 13, 19, 3)).astype(np.float32)  # not window multiples


def _section(kw):
  return {'name': 'swinir', 'embed_dim': kw['embed_dim'], 'depths': tuple(kw['depths']),
          'num_heads': tuple(kw['num_heads']), 'window_size': kw['window_size'],
          'mlp_ratio': kw['mlp_ratio'], 'upsampler': kw['upsampler'],
          'resi_connection': kw['resi_connection'], 'img_range': kw.get('img_range', 1.0),
          'img_size': kw['img_size'], 'scale': kw['upscale']}


@functools.lru_cache(maxsize=None)
def _imported(name):
  """(torch module, its state dict, the section and variables import_weights infers, unnamed)."""
  module = spandrel_models.randomize(TorchSwinIR(**CONFIGS[name]))
  sd = spandrel_models.state_dict_of(module)
  section, variables = archs.import_weights(sd)
  return module, sd, section, variables


@functools.lru_cache(maxsize=None)
def _outputs(name):
  """(spandrel's output, ours) on X for config NAME."""
  module, _, section, variables = _imported(name)
  generator = archs._generator(section)
  return spandrel_models.run(module, X), np.asarray(fast_jit(generator.apply, variables, X)(variables, X))


@pytest.mark.parametrize('name', ['classical_x2', 'real_x4_3conv'])
def test_matches_spandrel_on_sides_that_are_not_window_multiples(name):
  _, _, section, _ = _imported(name)
  assert section == _section(CONFIGS[name])
  ref, out = _outputs(name)
  scale = CONFIGS[name]['upscale']
  assert out.shape == ref.shape == (1, 13 * scale, 19 * scale, 3) and out.dtype == np.float32
  assert np.abs(out - ref).max() <= 1e-4, np.abs(out - ref).max()


@pytest.mark.parametrize('name', ['light_x3', 'jpeg_x1', 'real_x8'])
def test_every_variant_is_detected_and_its_table_is_the_modules(name):
  """Lightweight, JPEG (window 7: img_range 255) and x8 real-world files: the sizes spandrel infers,
  and the converted variables have exactly the Flax module's tree and shapes."""
  _, sd, section, variables = _imported(name)
  assert archs.infer_arch(sd) == 'swinir' and section == _section(CONFIGS[name])
  generator = archs._generator(section)
  want = jax.eval_shape(generator.init, jax.random.key(0), X)
  assert jax.tree.structure(want) == jax.tree.structure(variables)
  assert jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, want, variables)) == \
      [True] * len(jax.tree.leaves(want))


def test_remat_gives_the_same_output():
  _, _, section, variables = _imported('real_x4_3conv')
  remat = archs._generator({**section, 'remat': True})
  out = fast_jit(remat.apply, variables, X)(variables, X)
  np.testing.assert_allclose(np.asarray(out), _outputs('real_x4_3conv')[1], atol=1e-6)


def test_parameter_count_at_the_papers_size_equals_spandrels(monkeypatch):
  """Classical SwinIR x4 (embed 180, 6 RSTB x 6 blocks, 6 heads, window 8): 11.9M in the paper."""
  arch = importlib.import_module('spandrel.architectures.SwinIR.__arch.SwinIR')
  monkeypatch.setattr(arch, 'trunc_normal_', lambda tensor, **kwargs: tensor)  # counting only
  torch_module = TorchSwinIR(upscale=4, img_size=64, window_size=8, depths=[6] * 6, embed_dim=180,
                             num_heads=[6] * 6, mlp_ratio=2.0, upsampler='pixelshuffle',
                             resi_connection='1conv')
  want = sum(p.numel() for p in torch_module.parameters())
  shapes = jax.eval_shape(swinir.SwinIR(scale=4).init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes['params']))
  assert count == want and abs(count - 11.9e6) < 0.05e6, (count, want)


def test_bf16_and_training_trace_to_float32_images():
  """Compute in bf16 (parameters float32) and the training path (stochastic depth) keep the contract."""
  model = swinir.SwinIR(embed_dim=8, depths=(2,), num_heads=(2,), window_size=4, scale=2,
                        dtype=jnp.bfloat16, remat=True)
  assert model.input_multiple == 4
  x = jnp.zeros((2, 6, 9, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert {s.dtype for s in jax.tree.leaves(variables)} == {np.dtype('float32')}
  out = jax.eval_shape(functools.partial(model.apply, train=True), variables, x,
                       rngs={'dropout': jax.random.key(1)})
  assert out.shape == (2, 12, 18, 3) and out.dtype == jnp.float32


def test_a_truncated_or_mismatched_file_names_the_key():
  _, sd, _, _ = _imported('classical_x2')
  key = 'layers.1.residual_group.blocks.1.attn.proj.weight'
  truncated = {k: v for k, v in sd.items() if k != key}
  with pytest.raises(UserError, match=f"missing '{key}'"):
    archs.import_weights(truncated)
  key = 'layers.0.residual_group.blocks.1.attn_mask'
  with pytest.raises(UserError, match=f"'{key}' has shape"):
    archs.import_weights({**sd, key: sd[key][:2]})
  with pytest.raises(UserError, match="unexpected 'extra.weight'"):
    archs.import_weights({**sd, 'extra.weight': sd['conv_first.weight']})


def test_detection_leaves_swin2sr_and_hat_alone():
  _, sd, _, _ = _imported('classical_x2')
  assert archs.infer_arch(sd) == 'swinir'
  assert not swinir_weights.detect({**sd, 'patch_embed.proj.weight': np.zeros((12, 12, 1, 1))})
  assert not swinir_weights.detect({**sd, 'relative_position_index_SA': np.zeros((64, 64))})
