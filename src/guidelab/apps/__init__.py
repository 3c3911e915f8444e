"""Hydra entry points. Each is thin: compose the config, build the parts, run."""
