"""Attention with a bias shared across the batch (relative position tables, shifted-window masks).

`jax.nn.dot_product_attention` broadcasts a [1 or nW, heads, T, S] bias over the B*nW windows, and its
gradient is then a reduction over that leading axis, which XLA:CPU's YNNPACK fusion ran at under
1 GB/s (20-30 ms a block for DAT, a quarter of its step). `dot_product_attention` here repeats the bias
explicitly and sums its gradient by halving (elementwise adds, 50x faster there, fine on a GPU).
"""

import jax
import jax.numpy as jnp


def leading_sum(x):
  """x.sum(0) as log2(n) halvings: each adds the second half of the rows onto the first."""
  while x.shape[0] > 1:
    half = x.shape[0] // 2
    y = x[:half] + x[half:2 * half]
    x = y.at[0].add(x[2 * half]) if x.shape[0] % 2 else y
  return x[0]


@jax.custom_vjp
def repeat_leading(bias, copies):
  """[n, ...] -> [copies * n, ...]: BIAS tiled COPIES times along its first axis (copy-major)."""
  return jnp.broadcast_to(bias, (copies.shape[0], *bias.shape)).reshape(-1, *bias.shape[1:])


def _repeat_fwd(bias, copies):
  return repeat_leading(bias, copies), (bias.shape, copies)


def _repeat_bwd(res, g):
  shape, copies = res
  return leading_sum(g.reshape(-1, *shape)), jnp.zeros_like(copies)


repeat_leading.defvjp(_repeat_fwd, _repeat_bwd)


def dot_product_attention(q, k, v, bias=None, scale=None):
  """`jax.nn.dot_product_attention` on q [B, T, heads, d], k and v [B, S, heads, d], with BIAS
  [n, heads, T, S] shared by every (B / n)-th window (n = 1: by all), repeated before the call."""
  if bias is not None and bias.shape[0] != q.shape[0]:
    copies = q.shape[0] // bias.shape[0]
    if copies * bias.shape[0] != q.shape[0]:
      raise ValueError(f'a bias of {bias.shape[0]} windows does not divide a batch of {q.shape[0]}.')
    bias = repeat_leading(bias, jnp.zeros((copies,), bias.dtype))
  return jax.nn.dot_product_attention(q, k, v, bias=bias, scale=scale)
