"""The research questions over results: Q1 `words` (do single neurons encode words?), Q2 `encode` (how many
neurons does a word need?), their statistics (`stats`) and the figures they draw (`plots`, also used by the atlas)."""
