"""Inference: one restore for every source of a generator, and the window engine that gives the
whole-image output for images of any size.
"""
