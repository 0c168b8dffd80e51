"""Code both questions share: settings, folders, checkpoints, training, prediction, metrics, plots."""
__version__ = "4.0.0"  # pyproject.toml reads it from here
