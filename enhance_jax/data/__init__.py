"""Data: image sources (embedded photos, folders, records, TFDS, AVA), degradations and
augmentations written once for numpy and jnp, and the grain input pipeline.
"""
