"""Vision models built on jetson-mamba's kernels (torch is imported by the model modules)."""
