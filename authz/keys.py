"""The server's own signing key (ES256), kept in the data directory.

The server issues tokens itself (its patient login and the ``dmp-server token`` developer command),
so it needs one stable key pair: generated on first start, reused afterwards so that tokens issued
before a restart stay valid. The key is an EC P-256 key because ES256 signatures are short and the
key is cheap to generate; its ``kid`` is the RFC 7638 thumbprint, so it is derived from the key
itself and never goes out of sync with it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

from storage.secretfile import write_secret_file

KEY_DIR_NAME = "keys"
KEY_FILE_NAME = "server-signing-key.pem"
ALGORITHM = "ES256"
_COORDINATE_BYTES = 32  # P-256 coordinates are 256-bit numbers


def b64url(data: bytes) -> str:
    """Base64url without padding, the encoding JOSE uses for every binary value."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members only, sorted, without whitespace.

    Only the required members count so that the same key always gets the same ``kid`` whatever
    optional members (``use``, ``alg``) are published with it.
    """
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "oct": ("k", "kty")}
    members = required.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"no RFC 7638 thumbprint for key type {jwk.get('kty')!r}")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _ec_public_members(private_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = private_key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(_COORDINATE_BYTES, "big")),
        "y": b64url(numbers.y.to_bytes(_COORDINATE_BYTES, "big")),
    }


@dataclass(frozen=True)
class ServerKey:
    """The server's ES256 key pair; the private half never appears in ``repr`` (it may be logged)."""

    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    kid: str
    alg: str = ALGORITHM

    @classmethod
    def from_private_key(cls, private_key: ec.EllipticCurvePrivateKey) -> ServerKey:
        """Wrap a P-256 key, deriving its ``kid``; refuses other curves since ES256 means P-256."""
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError(f"the server signing key must be EC P-256, not {private_key.curve.name}")
        return cls(private_key=private_key, kid=jwk_thumbprint(_ec_public_members(private_key)))

    @classmethod
    def from_pem(cls, pem: bytes) -> ServerKey:
        """Load a PKCS#8 PEM private key, as written by :func:`load_or_create_server_key`."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the server signing key must be an EC P-256 private key")
        return cls.from_private_key(key)

    @classmethod
    def generate(cls) -> ServerKey:
        return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))

    @property
    def private_pem(self) -> str:
        """PKCS#8 PEM, unencrypted: the file's 0600 mode is what protects it."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")

    def public_jwk(self) -> dict[str, str]:
        """The public key as published in the server's JWKS."""
        return {**_ec_public_members(self.private_key), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS over ``claims``; the ``kid`` header lets verifiers pick the key after rotation."""
        token: str = jwt.encode(claims, self.private_pem, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})
        return token


def server_key_path(data_dir: Path) -> Path:
    return data_dir / KEY_DIR_NAME / KEY_FILE_NAME


def load_or_create_server_key(data_dir: Path) -> ServerKey:
    """Load the server key from ``data_dir/keys``, generating it on first start.

    Several processes (gunicorn workers) may start at once: the new key is written to a private
    temporary file and then linked into place, which fails rather than replace a key another
    process has just written; the loser then loads the winner's key so that all agree.
    """
    path = server_key_path(data_dir)
    if path.exists():
        return ServerKey.from_pem(path.read_bytes())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ServerKey.generate()
    if write_secret_file(path, key.private_pem.encode("ascii"), replace=False):
        return key
    return ServerKey.from_pem(path.read_bytes())
