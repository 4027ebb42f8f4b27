"""HAT against spandrel 0.4.2's PyTorch HAT: outputs on inputs that are not window multiples (x4 at
window 8, and x3 at window 4 with two groups and 'identity' residuals), sizes inferred from the state
dict (HAT-S's ratios, overlap_ratio 1), parameter count at the paper's size, remat, bf16 / training
traces, strict imports, and detection apart from SwinIR."""

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
from enhance_jax.io.weights import hat as hat_weights
from enhance_jax.io.weights import swinir as swinir_weights
from enhance_jax.models import hat

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # `benchmarks` for bare pytest

torch = pytest.importorskip('torch')
from conftest import fast_jit  # noqa: E402
from benchmarks.torch_reference import spandrel_models  # noqa: E402

spandrel_models.load()
from spandrel.architectures.HAT import HAT as TorchHAT  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR as TorchSwinIR  # noqa: E402

# Tiny HATs as spandrel builds them: keyword arguments of its constructor.
CONFIGS = {
    'x4_window8': dict(embed_dim=12, depths=[2], num_heads=[2], window_size=8, compress_ratio=3,
                       squeeze_factor=4, overlap_ratio=0.5, mlp_ratio=2.0, upscale=4, num_feat=16,
                       resi_connection='1conv'),
    'x3_window4_identity': dict(embed_dim=16, depths=[1, 2], num_heads=[2, 4], window_size=4,
                                compress_ratio=4, squeeze_factor=8, overlap_ratio=0.5, mlp_ratio=2.0,
                                upscale=3, num_feat=8, resi_connection='identity'),
    'small_ratios_x2': dict(embed_dim=48, depths=[2], num_heads=[3], window_size=4, compress_ratio=24,
                            squeeze_factor=24, overlap_ratio=1, mlp_ratio=1.5, upscale=2, num_feat=8,
                            resi_connection='1conv'),
}
X = np.random.default_rng(0).uniform(size=(1, 13, 19, 3)).astype(np.float32)  # not window multiples
SIZES = ('embed_dim', 'depths', 'num_heads', 'window_size', 'compress_ratio', 'squeeze_factor',
         'overlap_ratio', 'mlp_ratio', 'resi_connection', 'num_feat')


def _section(kw):
  sizes = {k: tuple(kw[k]) if isinstance(kw[k], list) else kw[k] for k in SIZES}
  return {'name': 'hat', **sizes, 'scale': kw['upscale']}


@functools.lru_cache(maxsize=None)
def _imported(name):
  """(torch module, its state dict, the section and variables import_weights infers, unnamed)."""
  module = spandrel_models.randomize(TorchHAT(**CONFIGS[name]))
  sd = spandrel_models.state_dict_of(module)
  section, variables = archs.import_weights(sd)
  return module, sd, section, variables


@functools.lru_cache(maxsize=None)
def _outputs(name):
  """(spandrel's output, ours) on X for config NAME."""
  module, _, section, variables = _imported(name)
  generator = archs._generator(section)
  return spandrel_models.run(module, X), np.asarray(fast_jit(generator.apply, variables, X)(variables, X))


@pytest.mark.parametrize('name', ['x4_window8', 'x3_window4_identity'])
def test_matches_spandrel_on_sides_that_are_not_window_multiples(name):
  _, _, section, _ = _imported(name)
  assert section == _section(CONFIGS[name])
  ref, out = _outputs(name)
  scale = CONFIGS[name]['upscale']
  assert out.shape == ref.shape == (1, 13 * scale, 19 * scale, 3) and out.dtype == np.float32
  assert np.abs(out - ref).max() <= 1e-4, np.abs(out - ref).max()


def test_hat_s_ratios_and_overlap_1_are_inferred_and_the_table_is_the_modules():
  _, sd, section, variables = _imported('small_ratios_x2')
  assert section == _section(CONFIGS['small_ratios_x2'])
  want = jax.eval_shape(archs._generator(section).init, jax.random.key(0), X)
  assert jax.tree.structure(want) == jax.tree.structure(variables)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, want, variables)))
  assert archs.infer_arch(sd) == 'hat'


def test_overlapping_windows_are_torch_unfold():
  """OCAB's key/value windows: reshapes and slices equal nn.Unfold(size, stride, padding) + rearrange."""
  x = np.random.default_rng(1).normal(size=(2, 8, 12, 5)).astype(np.float32)
  for window, size in ((4, 6), (2, 4)):  # overlap_ratio 0.5 and 1
    unfold = torch.nn.Unfold(kernel_size=size, stride=window, padding=(size - window) // 2)
    cols = unfold(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()  # [b, c*size*size, nW]
    want = cols.reshape(2, 5, size * size, -1).transpose(0, 3, 2, 1)
    np.testing.assert_array_equal(np.asarray(hat.overlapping_windows(jnp.asarray(x), window, size)), want)


def test_remat_gives_the_same_output():
  _, _, section, variables = _imported('x3_window4_identity')
  remat = archs._generator({**section, 'remat': True})
  out = fast_jit(remat.apply, variables, X)(variables, X)
  np.testing.assert_allclose(np.asarray(out), _outputs('x3_window4_identity')[1], atol=1e-6)


def test_parameter_count_at_the_papers_size_equals_spandrels(monkeypatch):
  """HAT x4 (embed 180, 6 RHAG x 6 HAB, 6 heads, window 16, compress 3, squeeze 30): 20.8M."""
  arch = importlib.import_module('spandrel.architectures.HAT.__arch.HAT')
  monkeypatch.setattr(arch, 'trunc_normal_', lambda tensor, **kwargs: tensor)  # counting only
  torch_module = TorchHAT(upscale=4, window_size=16, depths=[6] * 6, embed_dim=180, num_heads=[6] * 6,
                          mlp_ratio=2.0, compress_ratio=3, squeeze_factor=30)
  want = sum(p.numel() for p in torch_module.parameters())
  shapes = jax.eval_shape(hat.HAT(scale=4).init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes['params']))
  assert count == want and abs(count - 20.8e6) < 0.05e6, (count, want)


def test_bf16_and_training_trace_to_float32_images():
  """Compute in bf16 (parameters float32) and the training path (stochastic depth) keep the contract."""
  model = hat.HAT(embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, compress_ratio=3,
                  squeeze_factor=4, num_feat=8, scale=2, dtype=jnp.bfloat16, remat=True)
  assert model.input_multiple == 4
  x = jnp.zeros((2, 6, 9, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert {s.dtype for s in jax.tree.leaves(variables)} == {np.dtype('float32')}
  out = jax.eval_shape(functools.partial(model.apply, train=True), variables, x,
                       rngs={'dropout': jax.random.key(1)})
  assert out.shape == (2, 12, 18, 3) and out.dtype == jnp.float32


def test_a_truncated_or_mismatched_file_names_the_key():
  _, sd, _, _ = _imported('x4_window8')
  key = 'layers.0.residual_group.overlap_attn.mlp.fc2.weight'
  with pytest.raises(UserError, match=f"missing '{key}'"):
    archs.import_weights({k: v for k, v in sd.items() if k != key})
  key = 'layers.0.residual_group.blocks.1.conv_block.cab.2.weight'
  with pytest.raises(UserError, match=f"'{key}' has shape"):
    archs.import_weights({**sd, key: sd[key][:, :2]})


def test_hat_and_swinir_files_are_told_apart():
  _, sd, _, _ = _imported('x4_window8')
  swin = spandrel_models.state_dict_of(TorchSwinIR(embed_dim=8, depths=[2], num_heads=[2], window_size=4,
                                                   upscale=2, upsampler='pixelshuffle', img_size=8))
  assert hat_weights.detect(sd) and not swinir_weights.detect(sd)
  assert swinir_weights.detect(swin) and not hat_weights.detect(swin)
  assert archs.infer_arch(sd) == 'hat' and archs.infer_arch(swin) == 'swinir'
