"""ggtool: a GGUF-native local model manager."""

__version__ = "0.1.0"
