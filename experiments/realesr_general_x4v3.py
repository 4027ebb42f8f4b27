"""Real-ESRGAN's compact general model (realesr-general-x4v3): SRVGGNetCompact, 64 features, 32 convs,
PReLU, x4, trained with realesrnet_x4plus's L1 stage on the second-order degradations.

xinntao/Real-ESRGAN publishes the weights (v0.2.5.0) but no option file for this model; its README
says the compact models are trained like Real-ESRNet/Real-ESRGAN. This experiment is realesrnet_x4plus
with the generator swapped. It is also the SRVGGNetCompact row of the GPU table
(benchmarks/device.sh).
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = '004'


def get_config():
  c = load_experiment('realesrnet_x4plus')
  c.unlock()
  c.name = 'realesr_general_x4v3'
  c.model = ml_collections.ConfigDict({
      'name': 'srvgg_compact',
      'num_features': 64,                # num_feat
      'num_convs': 32,                   # num_conv (realesr-animevideov3: 16)
      'act': 'prelu',
      'scale': 4,
      'init_from': ''})
  return c.lock()
