"""w2s-harness: a reproducibility harness for weak-to-strong generalization."""

__version__ = "0.1.0"
