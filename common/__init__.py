"""Code both questions share: metrics, plots, checkpoints and run plumbing."""
