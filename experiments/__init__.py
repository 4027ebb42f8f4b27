"""The experiments: NAME.py files whose get_config() returns an ml_collections.ConfigDict.

Installed as the package enhance_jax.experiments (see setup.cfg). Load them with
enhance_jax.training.config.load_experiment('NAME'), also from one another; never import them by module name.
"""
