"""The neuron atlas: a static HTML site built from a store (`report`, `pages`, `assets/`) and a local
server for it bound to 127.0.0.1 (`serve`)."""
