"""DKIM signatures (dkimpy), RSA-SHA256 or Ed25519-SHA256, relaxed/relaxed.

dkimpy does the canonicalisation, hashing and header; only its pure-Python RSA primitive
(~8 ms a signature) is replaced by the one of ``cryptography`` (~0.4 ms). PKCS#1 v1.5
signatures are deterministic, so both give the same bytes; the tests check that, and
verify every signature with ``dkim.verify``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

#: Headers covered by the signature (DESIGN.md section 4), plus the usual ones.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"list-id",
    b"mime-version",
    b"content-type",
)

_pure_rsa_sign = dkim.RSASSA_PKCS1_v1_5_sign
_keys: dict[int, rsa.RSAPrivateKey] = {}
_lock = threading.Lock()


def _rsa_private_key(pk: dict[str, int]) -> rsa.RSAPrivateKey:
    key = _keys.get(pk["modulus"])
    if key is None:
        public = rsa.RSAPublicNumbers(pk["publicExponent"], pk["modulus"])
        numbers = rsa.RSAPrivateNumbers(
            p=pk["prime1"],
            q=pk["prime2"],
            d=pk["privateExponent"],
            dmp1=pk["exponent1"],
            dmq1=pk["exponent2"],
            iqmp=pk["coefficient"],
            public_numbers=public,
        )
        key = numbers.private_key()
        with _lock:
            _keys[pk["modulus"]] = key
    return key


def _fast_rsa_sign(hash_obj: Any, pk: dict[str, int]) -> bytes:
    name = getattr(hash_obj, "name", "sha256").lower()
    if name != "sha256":
        return bytes(_pure_rsa_sign(hash_obj, pk))
    digest = hash_obj.digest()
    return _rsa_private_key(pk).sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


dkim.RSASSA_PKCS1_v1_5_sign = _fast_rsa_sign


@dataclass(frozen=True, slots=True)
class DkimSigner:
    selector: bytes
    domain: bytes
    private_key: bytes
    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256"

    @classmethod
    def from_file(cls, path: str | Path, *, selector: str, domain: str) -> DkimSigner:
        data = Path(path).read_bytes()
        key = serialization.load_pem_private_key(data, password=None)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            raw = key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            import base64

            return cls(selector.encode(), domain.encode(), base64.b64encode(raw), b"ed25519-sha256")
        if isinstance(key, rsa.RSAPrivateKey):
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            return cls(selector.encode(), domain.encode(), pem, b"rsa-sha256")
        raise ValueError("DKIM keys must be RSA or Ed25519")

    def sign(self, message: bytes) -> bytes:
        """Return the message with its DKIM-Signature header prepended."""
        signature = dkim.sign(
            message,
            self.selector,
            self.domain,
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=self.algorithm,
            include_headers=list(SIGNED_HEADERS),
        )
        return bytes(signature) + message
