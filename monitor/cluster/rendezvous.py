"""Rendezvous (highest-random-weight) hashing: every replica computes the same owner of a key from the
same member list, and a member that joins or leaves moves only the keys it wins or held (1/N of them).

Pure and deterministic: the weight of (member, key) is the first 8 bytes of BLAKE2b over both, so it is
the same in every process, on every machine and in every Python version (``hash()`` is salted per
process and would not be).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence


def weight(member: str, key: str) -> int:
    """The member's random but fixed weight for ``key``; the highest weight owns the key."""
    digest = hashlib.blake2b(b"%s\0%s" % (member.encode(), key.encode()), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, members: Sequence[str]) -> str | None:
    """The member that owns ``key`` (None when there are no members). Ties (astronomically rare) go to
    the greater member id, so they too are decided the same way everywhere."""
    best: tuple[int, str] | None = None
    for member in members:
        candidate = (weight(member, key), member)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best is not None else None


def owners(keys: Iterable[str], members: Sequence[str]) -> dict[str, str]:
    """key → owner for many keys at once (empty when there are no members): ``owner`` of each, a third cheaper
    (the members' bytes made once; a digest compared as bytes, which orders big-endian digests of one length as
    their integers, the weights)."""
    if not members:
        return {}
    blake2b = hashlib.blake2b
    prefixes = [(b"%s\0" % member.encode(), member) for member in members]
    found = {}
    for key in keys:
        encoded = key.encode()
        best: tuple[bytes, str] | None = None
        for prefix, member in prefixes:
            candidate = (blake2b(prefix + encoded, digest_size=8).digest(), member)
            if best is None or candidate > best:
                best = candidate
        found[key] = best[1] if best is not None else ""
    return found
