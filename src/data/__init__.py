"""Data: download and export, tokenizers, token files and the windows training reads."""
