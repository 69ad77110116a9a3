"""The text path shared by publishing, training, evaluation and serving: cleaning, tokenizers, padding.

Imports nothing else of cybulde, so every consumer applies the same code to a text. A dataset version's
tokenizer folder is found by `cybulde.registry.manifest.tokenizer_dir`.
"""
