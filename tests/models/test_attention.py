"""models/attention.py: the batch-shared bias gives jax.nn.dot_product_attention's output and gradients,
and its gradient is summed without a reduce (XLA:CPU's YNNPACK reduce over a leading axis is slow)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from enhance_jax.models import attention


@pytest.mark.parametrize('rows', [1, 2, 5, 8, 13])
def test_leading_sum_is_the_sum_over_the_first_axis(rows):
  x = jax.random.normal(jax.random.key(0), (rows, 3, 4))
  np.testing.assert_allclose(attention.leading_sum(x), x.sum(0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('bias_windows, batch', [(1, 6), (3, 6), (6, 6)])
def test_shared_bias_matches_broadcasting_in_value_and_gradient(bias_windows, batch):
  kq, kk, kv, kb = jax.random.split(jax.random.key(1), 4)
  q = jax.random.normal(kq, (batch, 16, 2, 8))
  k, v = jax.random.normal(kk, (batch, 16, 2, 8)), jax.random.normal(kv, (batch, 16, 2, 8))
  bias = jax.random.normal(kb, (bias_windows, 2, 16, 16))

  def ours(q, bias):
    return jnp.sum(attention.dot_product_attention(q, k, v, bias=bias) ** 2)

  def ref(q, bias):
    full = jnp.broadcast_to(bias, (batch // bias_windows, *bias.shape)).reshape(batch, 2, 16, 16)
    return jnp.sum(jax.nn.dot_product_attention(q, k, v, bias=full) ** 2)

  np.testing.assert_allclose(ours(q, bias), ref(q, bias), rtol=1e-5)
  for got, want in zip(jax.grad(ours, argnums=(0, 1))(q, bias), jax.grad(ref, argnums=(0, 1))(q, bias)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  if bias_windows < batch:  # the bias gradient is adds, not a reduce to the bias's [.., T, S] shape
    text = jax.jit(jax.grad(ours, argnums=1)).lower(q, bias).as_text()
    reduces = [line for line in text.splitlines() if 'stablehlo.reduce' in line]
    assert reduces and not [line for line in reduces if re.search(r'-> tensor<[x\d]*16x16xf32>', line)]


def test_a_bias_that_does_not_divide_the_batch_is_refused():
  q = jnp.zeros((6, 4, 1, 2))
  with pytest.raises(ValueError, match='does not divide'):
    attention.dot_product_attention(q, q, q, bias=jnp.zeros((4, 1, 4, 4)))
