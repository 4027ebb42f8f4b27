"""Lightweight SwinIR x4 (SwinIR-S; Liang et al. 2021): embed 60, 4 RSTB x 6 blocks, 6 heads,
window 8, mlp ratio 2, one conv + pixel shuffle ('pixelshuffledirect'), about 0.9M parameters.

Recipe: KAIR options/swinir/train_swinir_sr_lightweight.json (written for x2; its embed_dim 180 is a
slip of the file: the released 002_lightweightSR_DIV2K_s64w8_SwinIR-S models are embed 60), i.e.
swinir_classical_x4's schedule (L1, Adam 2e-4 with KAIR's betas (0.9, 0.999), 500k iterations,
MultiStep [250k, 400k, 450k, 475k] x0.5, EMA 0.999) with batch 64 (8 x 8 GPUs) and LR patches of 64
(HR 256), on DIV2K. As for the classical model, the paper fine-tunes x3/x4 from x2 (see
swinir_classical_x4).
"""

import ml_collections

from enhance_jax.training.config import load_experiment

REPORT = 'new'


def get_config():
  c = load_experiment('swinir_classical_x4')
  c.unlock()
  c.name = 'swinir_light_x4'
  c.model.embed_dim = 60
  c.model.depths = (6, 6, 6, 6)
  c.model.num_heads = (6, 6, 6, 6)
  c.model.upsampler = 'pixelshuffledirect'
  c.discriminator = ml_collections.ConfigDict({'name': 'none'})
  c.train.batch_size = 64                # 8 per GPU x 8 GPUs
  return c.lock()
