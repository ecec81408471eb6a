"""Interoperability: OpenAI's released models and their tokenizer files (SPEC section 10)."""

from .bpe import export_bpe, load_bpe  # noqa: F401
from .openai import export_openai, import_openai  # noqa: F401
