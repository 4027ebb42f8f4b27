"""Report 000's RBF baseline: one hidden layer of RBF units with learnable centres and widths, a dense
map back to the image; MSE; Adam lr 1e-3, batch 32, 100 epochs, data as celeba_cnn.

A dense layer from a whole 218x178x3 image to K units and back would hold 2 x 116k x K weights, and
its centres another 116k x K: it does not fit memory for any useful K. So the network works on
patches: each image is cut into non-overlapping model.patch x model.patch tiles (8 x 8 x 3 = 192
values, padded at the edge and cropped back), every tile goes through the same model.num_units
(256) RBF units and dense map, and the tiles are put back. Both are chosen here (the report gives
neither); raise them with --set model.patch=16 --set model.num_units=1024.
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = '000'


def get_config():
  c = load_experiment('celeba_cnn')
  c.unlock()
  c.name = 'celeba_rbf'
  c.model = ml_collections.ConfigDict({'name': 'celeba_rbf', 'patch': 8, 'num_units': 256,
                                       'scale': 1})
  return c.lock()
