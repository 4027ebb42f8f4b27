"""Pure array operations every layer above may use: the convolution (oneDNN on a CPU, XLA's
elsewhere), JPEG on the device, resize and blur matrices.
"""
