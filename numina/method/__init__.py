"""The NUMINA method: identify, layout, correct, modulate, and the generation loop."""
