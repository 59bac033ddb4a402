"""Password hashing with PBKDF2-HMAC-SHA256 from the standard library.

A stored hash reads ``pbkdf2_sha256$<iterations>$<salt hex>$<digest hex>``; the
iteration count travels with the hash, so it can be raised later without
invalidating the passwords already stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALGORITHM = "pbkdf2_sha256"
# OWASP (2023) asks 600,000 for production. A sample application logs in from
# benchmarks and browser tests, so it takes a sixth of that: about 30 ms a login.
ITERATIONS = 100_000
SALT_BYTES = 16


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    """Return a salted hash of `password` in the stored format above."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Tell whether `password` matches `stored`; a malformed hash never matches."""
    try:
        algorithm, raw_iterations, salt_hex, digest_hex = stored.split("$")
        iterations = int(raw_iterations)
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if algorithm != ALGORITHM or iterations < 1:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)
