"""The optimization engine: composable objectives, the batched feature-textualization optimizer, and the
exhaustive vocabulary scans. It knows the model adapter, nothing above it."""
