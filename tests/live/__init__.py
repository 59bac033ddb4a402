"""Live-server tests: bridge under uvicorn, hypercorn, daphne and granian."""
