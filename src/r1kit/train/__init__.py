"""Training stages on TRL's trainers: SFT/LoRA/pretraining (sft.py), with r1kit's callbacks and checkpoints."""
