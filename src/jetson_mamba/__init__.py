"""jetson-mamba: a verified, fast, working Mamba stack on Jetson and other CUDA platforms."""

__version__ = "0.1.0"
