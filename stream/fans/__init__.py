"""The fans' side: who they are, what they liked, what she owes them. Pure.

    profiles   a fan's memory (first and last seen, counts, what they last sent and what she said)
    feedback   likes and reports tallied per reply and per model and persona version
    digests    shed fans thanked by name, one line per room and window

The faust-streaming app (`idolstream serve fans`) keeps these in its tables; the tiers
read the profiles into a bounded map to greet a regular as one.
"""
