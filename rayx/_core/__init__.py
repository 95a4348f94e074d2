"""rayx's compiled core: one Cython extension module per subsystem (ids, codec, store)."""
