"""The running service: the only package that does I/O."""
