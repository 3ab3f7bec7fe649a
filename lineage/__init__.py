"""Evidence-grade execution lineage: the shared core (model, codec, hashing, Merkle, keys, verify)."""
