"""The research questions over results: Q1 `words` (do single neurons encode words?), Q2 `encode` (how many
neurons does a word need?) and `probe` (Q2 on real text: sparse linear probes over neurons and dictionary features,
solved by `linear`), their statistics (`stats`) and the figures they draw (`plots`, also used by the atlas)."""
