"""gRPC stubs generated at build time from rayx.proto (see setup.py)."""
