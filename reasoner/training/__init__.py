"""Trainer stages (LoRA SFT, DPO, zeroth-order) and the closed loops built on them."""
