"""The universal spectral tokenizer: config, network, batching and the Tokenizer API."""

from .config import PRESETS, ModelConfig
from .tokenizer import Tokenizer, TokenSet

__all__ = ["PRESETS", "ModelConfig", "TokenSet", "Tokenizer"]
