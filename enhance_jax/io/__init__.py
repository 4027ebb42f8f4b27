"""Files in and out: images, checkpoints, released weights (state_dicts, ncnn, the model zoo),
converted model directories, NIMA restore, logs and sample images.
"""
