"""pwbench: benchmark and autotune pointwise, depthwise and full convolutions across hardware."""

__version__ = "0.1.0"
