"""Data: turn a text source into a fixed, fingerprinted token cache, and read it back.

Owns the sources (stdlib, TFDS, local files), the SentencePiece tokenizer and its
token-byte table, the document splits, `autoresearch prepare`, the cache on disk and
the packed batch loader. Imports numpy and sentencepiece, never JAX, so the loop and
the report may read a manifest; TFDS and pyarrow are imported only by the source
that needs them.
"""
