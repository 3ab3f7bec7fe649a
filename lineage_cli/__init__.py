"""The `lineage` command: the composition root that wires the core, transport, store and web parts."""
