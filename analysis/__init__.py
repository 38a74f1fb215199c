"""Analysis over stored runs: attention statistics tables, separability, head rankings, figures.

Reads what `numina.capture` wrote through `numina.store`; may import numina, never the reverse.
"""
