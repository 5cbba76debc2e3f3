"""AES-128 of the platform protocol and the id_validate MD5: pure functions, settings decide the details."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from edge_agent.config.settings import PlatformCipher

__all__ = ["CipherError", "auth_md5", "check_key", "decrypt", "encrypt"]


class CipherError(ValueError):
    """A key or ciphertext that cannot be this city's cipher."""


def check_key(key: bytes) -> bytes:
    if len(key) != 16:
        raise CipherError(f"the platform key must be 16 bytes, this one has {len(key)}")
    return key


def _iv(key: bytes, c: PlatformCipher) -> bytes:
    if c.iv == "key":
        return key
    if c.iv == "zero":
        return bytes(16)
    try:
        iv = bytes.fromhex(c.iv)
    except ValueError:
        raise CipherError(f"cipher.iv {c.iv!r} is not `key`, `zero` or 32 hex digits") from None
    if len(iv) != 16:
        raise CipherError(f"cipher.iv has {len(iv)} bytes, not 16")
    return iv


def _cipher(key: bytes, c: PlatformCipher) -> Cipher[modes.CBC] | Cipher[modes.ECB]:
    if c.mode == "cbc":
        return Cipher(algorithms.AES(check_key(key)), modes.CBC(_iv(key, c)))
    return Cipher(algorithms.AES(check_key(key)), modes.ECB())


def encrypt(plain: bytes, key: bytes, c: PlatformCipher) -> bytes:
    if c.mode == "none":
        return plain
    if c.padding == "pkcs7":
        n = 16 - len(plain) % 16
        padded = plain + bytes([n]) * n
    else:
        padded = plain + bytes(-len(plain) % 16 or (16 if not plain else 0))
    enc = _cipher(key, c).encryptor()
    return enc.update(padded) + enc.finalize()


def decrypt(data: bytes, key: bytes, c: PlatformCipher) -> bytes:
    if c.mode == "none":
        return data
    if not data or len(data) % 16:
        raise CipherError(f"ciphertext of {len(data)} bytes is not whole AES blocks")
    dec = _cipher(key, c).decryptor()
    plain = dec.update(data) + dec.finalize()
    if c.padding == "zero":
        return plain.rstrip(b"\x00")
    n = plain[-1]
    if not 1 <= n <= 16 or plain[-n:] != bytes([n]) * n:
        raise CipherError("bad PKCS#7 padding: wrong key or cipher settings?")
    return plain[:-n]


def auth_md5(sequence: str, key: bytes, order: str) -> str:
    """The id_validate answer: lower-case hex MD5 of the challenge and the key, in the city's order."""
    s = sequence.encode("utf-8")
    data = s + key if order == "sequence_key" else key + s
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
