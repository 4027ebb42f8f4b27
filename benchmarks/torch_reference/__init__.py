"""PyTorch twins of enhance_jax's ESRGAN (models.py: RRDBNet, VGG-style D, VGG19, losses) and of its
train steps (train_step.py: make_trainer, weight exchange), for the JAX-vs-PyTorch benchmark."""
