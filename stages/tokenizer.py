"""DVC stage ``tokenizer``: train the BPE (or load the pretrained tokenizer) every dataset is encoded with."""

from src.cli import run_stage
from src.data.tokenize_stages import make_tokenizer

if __name__ == "__main__":
    run_stage(make_tokenizer)
