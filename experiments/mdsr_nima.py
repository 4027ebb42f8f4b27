"""Report 002's NIMA-guided MDSR: the `mdsr` experiment (x2, x3, x4 from one model, one batch per
scale in turn) with the hybrid loss L2(ref, G(x)) + gamma * (10 - NIMA mean score of G(x)), gamma 0.4
(the report's best for super-resolution), NIMA frozen inside each scale's jitted step.

The NIMA comes from loss.nima_from: a `nima` run's workdir, a converted NIMA model directory or a
weights file (torchvision layout); set loss.nima_backbone to its backbone. Without one the term
runs on a random NIMA, said once.
"""

from enhance_jax.training.config import load_experiment, with_nima_term

REPORT = '002'
GAMMA_SR = 0.4  # report 002: 0.4 for super-resolution, 0.1 for de-blurring


def get_config():
  c = load_experiment('mdsr')
  c.unlock()
  c.name = 'mdsr_nima'
  with_nima_term(c, GAMMA_SR)  # the hybrid loss
  return c.lock()
