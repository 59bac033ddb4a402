"""Differential tests: the same requests to gunicorn and to bridge on uvicorn, compared."""
