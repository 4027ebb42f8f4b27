"""Evaluation: image-quality metrics (PSNR, SSIM, NIMA's EMD/LCC/SRCC) and the evaluators shared
by in-training validation and the evaluate command.
"""
