"""The causal language model: a LightningModule around a ``transformers`` model."""
