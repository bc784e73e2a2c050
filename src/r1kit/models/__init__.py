"""Models: presets for new models, loading of local Hugging Face folders, tokenizer training."""
