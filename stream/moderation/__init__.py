"""Moderation: what fans send and what she says is checked before it can reach the overlay.

Pure policy, no I/O: the word filter (`text_filter`), the guard models' prompts and output
parsers (`guard`), and the verdicts they produce. The tiers call them; the model calls run
through the model seam like every other model.
"""
