"""Model adapters: how a model family is built from a checkpoint, fed, and decoded into lanes."""
