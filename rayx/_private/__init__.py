"""Internals shared by the driver, the workers and the node services."""
