"""Files on disk and where they come from: config.json, checkpoints (safetensors, pytorch_model.bin,
shards), tokenizers, sentence-transformers directories, and the HuggingFace Hub. Nothing here
knows a model family; the models layer above gives what a reader needs (a tokenizer class name,
the positions a max_length must fit)."""
