"""Training: the config (experiments, overrides, validation by each owner), the train state and
pure steps, what each kind of model output needs, the loss registry and the frozen networks.
"""
