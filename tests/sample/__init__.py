"""The sample legacy application served for real: the entrypoint swap and a browser."""
