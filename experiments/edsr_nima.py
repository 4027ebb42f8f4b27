"""Report 002's NIMA-guided EDSR: the hybrid loss L2(ref, G(x)) + gamma * (10 - NIMA mean score of
G(x)), gamma 0.4 for super-resolution (the report's best), NIMA frozen inside the jitted step.

The NIMA comes from loss.nima_from: a NIMA model directory (enhance_jax.convert, or a `nima` run
next) or weights file with torchvision MobileNetV2/MNASNet keys and a 10-way head; set
loss.nima_backbone to its backbone. Without one the term runs on a random NIMA, said once.
"""

from enhance_jax.training.config import load_experiment, with_nima_term

REPORT = '002'
GAMMA_SR = 0.4  # report 002: 0.4 for super-resolution, 0.1 for de-blurring


def get_config():
  c = load_experiment('edsr')
  c.unlock()
  c.name = 'edsr_nima'
  with_nima_term(c, GAMMA_SR)  # the hybrid loss
  return c.lock()
