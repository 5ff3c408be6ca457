"""Closed loops: strategy -> verifier -> data set -> trainer -> adapter -> generator, per round."""
