"""The serve load benchmark (benchmarks/serve_load.py), run shorter: 16 clients for 15 s against two
small converted models on a real server on 127.0.0.1. It asserts correctness, not speed: no 5xx,
every good upload answered at the right size, every bad one refused with a 4xx, no upload left by the
clients that hung up mid-upload or before the answer, RSS within the stated margin of warm-up's,
and a server that ends with 143 on SIGTERM and removes its folder."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import serve_load
from enhance_jax.io import weights
from enhance_jax.models.srvgg import SRVGGNetCompact

pytestmark = pytest.mark.slow  # a server under load for 15 s


def _model(root, scale):
  net = SRVGGNetCompact(num_features=8, num_convs=2, scale=scale)
  variables = net.init(jax.random.key(scale), jnp.zeros((1, 8, 8, 3)))
  weights.write_model_dir(root / f'srvgg_x{scale}', {'name': 'srvgg_compact', 'num_features': 8,
                                                     'num_convs': 2, 'scale': scale}, variables, {})
  return str(root / f'srvgg_x{scale}')


def test_sixteen_clients_get_right_answers_and_the_server_stays_bounded(tmp_path):
  record = serve_load.run([_model(tmp_path, 2), _model(tmp_path, 4)], clients=16, seconds=15,
                          log_path=tmp_path / 'server.log', server_args=('--tile', '64'))
  assert record['problems'] == [], record['problems']
  stats = record['requests']
  assert stats['good'] >= 16 and stats['bad'] >= 1 and stats['hang_ups'] >= 1, stats
  assert stats['5xx'] == 0 and record['server_exit_on_sigterm'] == 143
  assert record['rss_after_run_mib'] <= serve_load.RSS_MARGIN * record['rss_after_warm_up_mib']
  assert 0 < record['latency_p50_s'] <= record['latency_p99_s']
