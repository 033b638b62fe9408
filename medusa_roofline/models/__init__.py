"""Model loading: what a model is (config.json of a preset or a local checkpoint), and building it."""
