"""SSH key pairs (Ed25519, OpenSSH format) for clusters and local nodes' host keys."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def generate_keypair(comment: str) -> tuple[bytes, str]:
    """Return (private key PEM in OpenSSH format, public key line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {comment}"


def write_keypair(path: Path, comment: str) -> str:
    """Write ``path`` (0600) and ``path.pub`` unless they exist; return the public key line."""
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        return pub.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private, public = generate_keypair(comment)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    pub.write_text(public + "\n")
    return public
