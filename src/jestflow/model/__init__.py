"""The models and what they need: the two-tower ViT/Transformer, its tokenizer, and activation reuse
(the training step replaying the scoring forward's linear layers).

May import: `jestflow.core`, `jestflow.config`, `jestflow.storage` (save and load).
"""
