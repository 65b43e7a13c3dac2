"""Encryption at rest of sensitive preferences (``UserPreference.is_sensitive``).

A sensitive preference's value is stored as ``{"ltst_encrypted": "fernet-v1", "token": "<Fernet token>"}``
instead of the plain JSON value. Fernet (from the ``cryptography`` package) is authenticated
encryption: AES-128-CBC + HMAC-SHA256; a token altered by one bit, or read with the wrong key,
fails to decrypt. The encrypted plaintext also names the row's ``user_id`` and ``preference_key``,
so a token copied into another user's row (or another key) is refused on reading.

Keys come from the environment, read at each use:

``LTST_ENCRYPTION_KEYS``
    comma-separated Fernet keys, newest first (``MultiFernet``): new values are encrypted with the
    first key, values are decrypted with any of them. Generate one with :func:`generate_key`
    (or ``python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"``).
``LTST_ENCRYPTION_KEY``
    a single key (used when ``LTST_ENCRYPTION_KEYS`` is unset).

Rotation: put the new key first (``LTST_ENCRYPTION_KEYS=new,old``), run :func:`rotate_encryption_keys`
(``storage.rotate_encryption_keys()``) which re-encrypts every sensitive value with the new key, then
drop the old key. Without a key, storing a sensitive preference raises :class:`EncryptionKeyError`
and nothing is written; reading returns the other preferences and leaves the sensitive ones out.
An archive import encrypts a plain sensitive value, and re-encrypts an exported one for the user it
is imported for (:func:`import_preference_value`). Key material and decrypted values never appear in errors or logs.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import TYPE_CHECKING, Any

from ._kernel import EVERY_SESSION, MORE, Query, operation
from .errors import ConfigurationError, LTSTError

if TYPE_CHECKING:
    from ._kernel import Core, Op

__all__ = [
    "ENCRYPTED_MARKER",
    "EncryptionError",
    "EncryptionKeyError",
    "Keyring",
    "generate_key",
    "import_preference_value",
    "open_preferences",
    "rotate_encryption_keys",
]

logger = logging.getLogger(__name__)

ENCRYPTED_MARKER = "ltst_encrypted"
SCHEME = "fernet-v1"
KEYS_VARIABLE = "LTST_ENCRYPTION_KEYS"
KEY_VARIABLE = "LTST_ENCRYPTION_KEY"


class EncryptionError(LTSTError):
    """A sensitive value could not be decrypted (wrong key, tampered or misplaced ciphertext)."""


class EncryptionKeyError(EncryptionError, ConfigurationError):
    """No usable encryption key is configured (``LTST_ENCRYPTION_KEYS``)."""


def generate_key() -> str:
    """A new random Fernet key (url-safe base64 text) for ``LTST_ENCRYPTION_KEYS``."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode("ascii")


class Keyring:
    """The configured keys: encrypts with the newest, decrypts with any."""

    def __init__(self, keys: list[str]) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError:  # pragma: no cover - a core dependency
            raise EncryptionKeyError("the 'cryptography' package is needed for sensitive preferences") from None
        if not keys:
            raise EncryptionKeyError(
                "sensitive preferences need an encryption key to be stored or read: set LTST_ENCRYPTION_KEYS to "
                "one or more comma-separated Fernet keys (newest first); generate one with "
                "ltst_memory.crypto.generate_key()"
            )
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                # never echo the key itself
                raise EncryptionKeyError(
                    f"encryption key #{position} in {KEYS_VARIABLE} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from None
        self._multi = MultiFernet(fernets)
        self.size = len(fernets)

    @classmethod
    def from_env(cls) -> Keyring:
        """The keys of ``LTST_ENCRYPTION_KEYS`` (or ``LTST_ENCRYPTION_KEY``); raises EncryptionKeyError if none."""
        return _keyring(_raw_keys())

    @classmethod
    def configured(cls) -> Keyring | None:
        """The configured keys, or ``None`` when no key is set at all (an invalid key still raises)."""
        raw = _raw_keys()
        return _keyring(raw) if raw.strip(" ,") else None

    def encrypt(self, user_id: str, preference_key: str, value: Any) -> dict[str, str]:
        """The stored (JSON) form of ``value``, bound to ``user_id`` and ``preference_key``."""
        plaintext = json.dumps({"u": user_id, "k": preference_key, "v": value}, ensure_ascii=False, allow_nan=False)
        token = self._multi.encrypt(plaintext.encode("utf-8"))
        return {ENCRYPTED_MARKER: SCHEME, "token": token.decode("ascii")}

    def decrypt(self, user_id: str, preference_key: str, stored: Any) -> Any:
        """The plain value of a stored encrypted value; raises EncryptionError if it cannot be trusted."""
        from cryptography.fernet import InvalidToken

        token = stored.get("token") if isinstance(stored, dict) else None
        if not isinstance(token, str):
            raise EncryptionError(f"sensitive preference {preference_key!r} of {user_id!r} has no valid ciphertext")
        try:
            payload = json.loads(self._multi.decrypt(token.encode("ascii")).decode("utf-8"))
        except (InvalidToken, UnicodeError, ValueError):
            raise EncryptionError(
                f"cannot decrypt sensitive preference {preference_key!r} of {user_id!r}: wrong key (is the key "
                f"that encrypted it still in {KEYS_VARIABLE}?) or altered ciphertext"
            ) from None
        if payload.get("u") != user_id or payload.get("k") != preference_key:
            raise EncryptionError(
                f"sensitive preference {preference_key!r} of {user_id!r} holds a value encrypted for another "
                "row; refusing it"
            )
        return payload.get("v")

    def rotate(self, stored: dict[str, str]) -> dict[str, str]:
        """``stored`` re-encrypted with the newest key (same plaintext)."""
        from cryptography.fernet import InvalidToken

        try:
            token = self._multi.rotate(stored["token"].encode("ascii"))
        except (InvalidToken, KeyError, AttributeError, UnicodeError):
            raise EncryptionError("cannot re-encrypt a sensitive preference: no configured key opens it") from None
        return {ENCRYPTED_MARKER: SCHEME, "token": token.decode("ascii")}


def _raw_keys() -> str:
    return os.environ.get(KEYS_VARIABLE) or os.environ.get(KEY_VARIABLE) or ""


@functools.lru_cache(maxsize=8)
def _keyring(raw: str) -> Keyring:
    return Keyring([k.strip() for k in raw.split(",") if k.strip()])


def is_encrypted(value: Any) -> bool:
    """Whether a stored preference value is in the encrypted form."""
    return isinstance(value, dict) and value.get(ENCRYPTED_MARKER) == SCHEME and isinstance(value.get("token"), str)


# --------------------------------------------------------------------------- operations

SELECT_SENSITIVE = """
SELECT user_id, preference_key, preference_value FROM user_preferences
WHERE is_sensitive ORDER BY user_id, preference_key FOR UPDATE
"""
# On a Citus cluster (docs/citus.md) a row lock needs a statement answered by one shard: the users with
# sensitive preferences first (no lock), then each user's preferences are locked in turn.
SENSITIVE_USERS = "SELECT DISTINCT user_id FROM user_preferences WHERE is_sensitive ORDER BY user_id"
SELECT_SENSITIVE_OF_USER = """
SELECT user_id, preference_key, preference_value FROM user_preferences
WHERE user_id = %(user_id)s AND is_sensitive ORDER BY preference_key FOR UPDATE
"""
UPDATE_VALUE = """
UPDATE user_preferences SET preference_value = %(value)s::jsonb
WHERE user_id = %(user_id)s AND preference_key = %(preference_key)s
"""


@operation(group=MORE, invalidates=EVERY_SESSION, per_user=False)
def rotate_encryption_keys(core: Core) -> Op[dict[str, int]]:
    """Re-encrypt every sensitive preference with the newest key of ``LTST_ENCRYPTION_KEYS``.

    Values stored in plain text while marked sensitive (by a version without encryption) are
    encrypted too. A value no configured key opens, or one encrypted for another row, is left as it
    is and counted in ``"unreadable"`` (its user and key are logged as a warning) instead of stopping
    the rotation. Returns ``{"rotated": n, "encrypted": m, "unreadable": k}``. One transaction.
    """
    from ._ops import is_distributed  # (_ops imports this module)

    keyring = Keyring.from_env()
    if (yield from is_distributed(core)):
        rows = []
        for user in (yield Query(SENSITIVE_USERS)):
            rows += yield Query(SELECT_SENSITIVE_OF_USER, {"user_id": user["user_id"]})
    else:
        rows = yield Query(SELECT_SENSITIVE)
    updates = []
    rotated = encrypted = 0
    unreadable: list[tuple[str, str]] = []
    for row in rows:
        value = row["preference_value"]
        if is_encrypted(value):
            try:
                keyring.decrypt(row["user_id"], row["preference_key"], value)  # refuse misplaced tokens
                new = keyring.rotate(value)
            except EncryptionError:
                unreadable.append((row["user_id"], row["preference_key"]))
                continue
            rotated += 1
        else:
            new = keyring.encrypt(row["user_id"], row["preference_key"], value)
            encrypted += 1
        updates.append({"value": json.dumps(new), "user_id": row["user_id"], "preference_key": row["preference_key"]})
    if updates:
        yield Query(UPDATE_VALUE, many=updates, fetch="none")
    logger.info("re-encrypted %d sensitive preferences (%d were plain text)", rotated + encrypted, encrypted)
    if unreadable:
        logger.warning(
            "%d sensitive preferences could not be opened with the configured keys and were left as they are "
            "(wrong key, altered, or encrypted for another row): %s",
            len(unreadable),
            ", ".join(f"{user!r}/{key!r}" for user, key in unreadable[:20]),
        )
    return {"rotated": rotated, "encrypted": encrypted, "unreadable": len(unreadable)}


# --------------------------------------------------------------------------- hooks of store/get_preferences


def seal_preference_value(user_id: str, preference_key: str, value: Any) -> str:
    """The JSON text stored for a sensitive preference (raises EncryptionKeyError without a key)."""
    return json.dumps(Keyring.from_env().encrypt(user_id, preference_key, value), ensure_ascii=False)


def open_preferences(preferences: list[Any]) -> list[Any]:
    """``preferences`` (read from the database) with sensitive values decrypted.

    Without any configured key, sensitive preferences are left out (logged once per call) and the
    others returned: reading the plain preferences never needs the key. A configured key that does
    not open a value still raises :class:`EncryptionError`.
    """
    if not any(p.is_sensitive and is_encrypted(p.preference_value) for p in preferences):
        return [open_preference(p) for p in preferences]
    if Keyring.configured() is None:
        kept = [p for p in preferences if not (p.is_sensitive and is_encrypted(p.preference_value))]
        logger.warning(
            "%d sensitive preferences left out: no encryption key is set (%s)",
            len(preferences) - len(kept),
            KEYS_VARIABLE,
        )
        return [open_preference(p) for p in kept]
    return [open_preference(p) for p in preferences]


def import_preference_value(source_user_id: Any, user_id: str, preference_key: str, value: Any) -> str:
    """The JSON text to store for a sensitive preference read from an archive.

    ``value`` is the archive's value: an encrypted envelope (as exported) or a plain value. A plain
    value is encrypted for ``user_id``; an envelope imported for the user it was encrypted for is
    kept as it is; one imported for another user (a re-homed import) is decrypted and encrypted
    again for ``user_id``, never copied. Raises EncryptionKeyError when that needs a key and none is
    set, EncryptionError when the key does not open it.
    """
    if not is_encrypted(value):
        return seal_preference_value(user_id, preference_key, value)
    keyring = Keyring.configured()
    if source_user_id == user_id:
        if keyring is not None:
            keyring.decrypt(user_id, preference_key, value)  # a token of another row is refused here
        return json.dumps(value)
    if keyring is None:
        raise EncryptionKeyError(
            f"sensitive preference {preference_key!r} was encrypted for {source_user_id!r}; importing it for "
            f"{user_id!r} re-encrypts it and needs the key that encrypted it in {KEYS_VARIABLE}"
        )
    plain = keyring.decrypt(str(source_user_id), preference_key, value)
    return json.dumps(keyring.encrypt(user_id, preference_key, plain), ensure_ascii=False)


def open_preference(preference: Any) -> Any:
    """``preference`` (a UserPreference read from the database) with its sensitive value decrypted."""
    if preference.is_sensitive and is_encrypted(preference.preference_value):
        preference.preference_value = Keyring.from_env().decrypt(
            preference.user_id, preference.preference_key, preference.preference_value
        )
    elif preference.is_sensitive:
        logger.warning(
            "sensitive preference %r of a user is stored in plain text; run rotate_encryption_keys() to encrypt it",
            preference.preference_key,
        )
    return preference
