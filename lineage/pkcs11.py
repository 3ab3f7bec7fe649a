"""Ed25519 keys in a PKCS#11 token (HSM, SoftHSM2), addressed by RFC 7512 ``pkcs11:`` URIs.

The optional dependency ``python-pkcs11`` (extra ``hsm``) is imported only when a token is
opened, so the core imports without it. A token key signs through ``CKM_EDDSA`` inside the
token; the private key is created there (``CKM_EC_EDWARDS_KEY_PAIR_GEN``) as sensitive and
non-extractable and never leaves it. What a token key looks like to the rest of the code is an
:class:`~lineage.keys.ExternalEd25519Key`, wrapped by an ordinary :class:`~lineage.keys.Signer`.

URI (RFC 7512): path attributes ``token``, ``manufacturer``, ``model``, ``serial``, ``slot-id``
select the token, ``object`` (the key label) and optionally ``id`` and ``type=private`` the key;
query attributes ``module-path`` (the PKCS#11 library) and ``pin-source`` (a file holding the
PIN). A ``pin-value`` is refused: a PIN on a command line ends up in shell histories and
process listings. The PIN comes from ``pin-source``, else ``LINEAGE_PKCS11_PIN_FILE``, else
``LINEAGE_PKCS11_PIN`` (read by ``Settings`` at the entry point and passed in as
:class:`TokenConfig`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from lineage.errors import ConfigError
from lineage.keys import (
    CUSTODY_PKCS11,
    ExternalEd25519Key,
    KeyRecord,
    Role,
    key_id_for,
)
from lineage.keys.registry import _now_us

if TYPE_CHECKING:
    from lineage.config import Settings
    from lineage.keys import Signer

ED25519_OID_DER = bytes.fromhex("06032b6570")  # OID 1.3.101.112 (RFC 8410), DER
_PATH_ATTRS = ("token", "manufacturer", "model", "serial", "slot-id", "object", "id", "type")
_QUERY_ATTRS = ("module-path", "module-name", "pin-source")
_KNOWN_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True, slots=True)
class Pkcs11Uri:
    """A parsed ``pkcs11:`` URI; ``text`` is the URI as given (it holds no secret)."""

    text: str
    path: dict[str, bytes] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def attr(self, name: str) -> str | None:
        value = self.path.get(name)
        return None if value is None else value.decode("utf-8")

    @property
    def label(self) -> str:
        label = self.attr("object")
        if not label:
            raise ConfigError(f"{self.text}: needs an 'object' attribute (the key label)")
        return label


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse an RFC 7512 PKCS#11 URI; unknown or repeated attributes are errors."""
    if not text.startswith("pkcs11:"):
        raise ConfigError(f"expected a PKCS#11 URI starting with 'pkcs11:', found {text!r}")
    rest = text[len("pkcs11:") :]
    path_part, _, query_part = rest.partition("?")
    path: dict[str, bytes] = {}
    for item in filter(None, path_part.split(";")):
        name, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"{text}: path attribute {item!r} has no '='")
        if name not in _PATH_ATTRS:
            raise ConfigError(
                f"{text}: unknown path attribute {name!r}, expected one of {', '.join(_PATH_ATTRS)}"
            )
        if name in path:
            raise ConfigError(f"{text}: attribute {name!r} given twice")
        path[name] = unquote_to_bytes(value)
    query: dict[str, str] = {}
    for item in filter(None, query_part.split("&")):
        name, eq, value = item.partition("=")
        if name == "pin-value":
            raise ConfigError(
                f"{text.split('?')[0]}?...: a PIN in the URI is refused (it would show up in "
                "shell histories and process listings); use pin-source=FILE, "
                "LINEAGE_PKCS11_PIN_FILE or LINEAGE_PKCS11_PIN"
            )
        if not eq or name not in _QUERY_ATTRS:
            raise ConfigError(
                f"{text}: unknown query attribute {item!r}, expected one of "
                f"{', '.join(_QUERY_ATTRS)}"
            )
        if name in query:
            raise ConfigError(f"{text}: attribute {name!r} given twice")
        query[name] = unquote_to_bytes(value).decode("utf-8")
    kind = path.get("type")
    if kind is not None and kind not in (b"private", b"public"):
        raise ConfigError(f"{text}: type must be 'private' or 'public', found {kind.decode()!r}")
    return Pkcs11Uri(text, path, query)


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """Where the PKCS#11 library is and how to get the PIN (from settings; never argv)."""

    module: str | None = None
    pin: str | None = field(default=None, repr=False)
    pin_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenConfig:
        pin = settings.pkcs11_pin
        return cls(
            module=settings.pkcs11_module,
            pin=None if pin is None else pin.get_secret_value(),
            pin_file=settings.pkcs11_pin_file,
        )

    def module_for(self, uri: Pkcs11Uri) -> str:
        module = uri.query.get("module-path") or self.module
        if module:
            return module
        for candidate in _KNOWN_MODULES:
            if Path(candidate).exists():
                return candidate
        raise ConfigError(
            f"{uri.text}: no PKCS#11 library: set LINEAGE_PKCS11_MODULE or add "
            "?module-path=/path/to/library.so to the URI"
        )

    def pin_for(self, uri: Pkcs11Uri) -> str:
        source = uri.query.get("pin-source")
        if source is not None:
            return _read_pin(Path(source.removeprefix("file:")), f"{uri.text}: pin-source")
        if self.pin_file is not None:
            return _read_pin(self.pin_file, "LINEAGE_PKCS11_PIN_FILE")
        if self.pin is not None:
            return self.pin
        raise ConfigError(
            f"{uri.text}: no PIN: set LINEAGE_PKCS11_PIN_FILE (a file holding the user PIN), "
            "LINEAGE_PKCS11_PIN, or pin-source=FILE in the URI"
        )


def _read_pin(path: Path, what: str) -> str:
    try:
        pin = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read PIN file {path}: {exc.strerror or exc}") from None
    if not pin:
        raise ConfigError(f"{what}: PIN file {path} is empty")
    return pin


_libs: dict[str, Any] = {}
_libs_lock = threading.Lock()
_call_locks: dict[str, threading.RLock] = {}


def _library_lock(module: str) -> threading.RLock:
    """The lock every call into ``module`` holds.

    python-pkcs11 initialises the library with ``C_Initialize(NULL)``, which tells it that
    the application never calls it from two threads at once, and it releases the GIL during
    each call. SoftHSM2 then does no locking of its own: two emitters signing at the same time
    through their own sessions corrupted its session table and crashed the process in
    ``C_Sign``. One signature costs about 200 µs and there is one per seal, so serialising is
    cheap.
    """
    with _libs_lock:
        return _call_locks.setdefault(module, threading.RLock())


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise ConfigError(
            "keys in a PKCS#11 token need python-pkcs11: pip install 'execution-lineage[hsm]'"
        ) from None
    return pkcs11


def _lib(module: str) -> Any:
    pkcs11 = _pkcs11()
    with _libs_lock:
        lib = _libs.get(module)
        if lib is None:
            try:
                lib = pkcs11.lib(module)
            except (RuntimeError, OSError, pkcs11.PKCS11Error) as exc:
                raise ConfigError(f"cannot load PKCS#11 library {module}: {exc}") from None
            _libs[module] = lib
        return lib


def reinitialize() -> None:
    """Finalize and re-initialize every loaded PKCS#11 library (it then re-reads its config,
    e.g. ``SOFTHSM2_CONF``); open sessions become invalid. For tests and token changes."""
    with _libs_lock:
        for lib in _libs.values():
            lib.reinitialize()


def _token(uri: Pkcs11Uri, config: TokenConfig) -> Any:
    pkcs11 = _pkcs11()
    module = config.module_for(uri)
    lib = _lib(module)
    wanted = {
        "token": "label",
        "manufacturer": "manufacturer_id",
        "model": "model",
        "serial": "serial",
    }
    found = []
    try:
        slots = lib.get_slots(token_present=True)
    except pkcs11.PKCS11Error as exc:
        raise ConfigError(f"{uri.text}: cannot list slots of {module}: {exc!r}") from None
    for slot in slots:
        if "slot-id" in uri.path and str(slot.slot_id) != uri.attr("slot-id"):
            continue
        token = slot.get_token()
        ok = True
        for attr, prop in wanted.items():
            want = uri.attr(attr)
            if want is None:
                continue
            have = getattr(token, prop)
            have = have.decode("utf-8", "replace") if isinstance(have, bytes) else str(have)
            if have.rstrip() != want:
                ok = False
        if ok:
            found.append(token)
    if not found:
        raise ConfigError(f"{uri.text}: no token in {module} matches")
    if len(found) > 1:
        labels = ", ".join(repr(t.label) for t in found)
        raise ConfigError(f"{uri.text}: {len(found)} tokens match ({labels}); name one")
    return found[0]


def _open_session(token: Any, uri: Pkcs11Uri, config: TokenConfig, *, rw: bool) -> Any:
    """A logged-in session; login is per process and token, so a second session joins it."""
    pkcs11 = _pkcs11()
    pin = config.pin_for(uri)
    try:
        try:
            return token.open(user_pin=pin, rw=rw)
        except pkcs11.UserAlreadyLoggedIn:
            return token.open(rw=rw)
    except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange) as exc:
        raise ConfigError(f"{uri.text}: the token refused the PIN ({exc!r})") from None
    except pkcs11.PKCS11Error as exc:
        raise ConfigError(f"{uri.text}: cannot open a session: {exc!r}") from None


def _raw_public(ec_point: bytes) -> bytes:
    """The 32 public key bytes from CKA_EC_POINT (a DER OCTET STRING, or raw as some tokens do)."""
    if len(ec_point) == 34 and ec_point[:2] == b"\x04\x20":
        return ec_point[2:]
    if len(ec_point) == 32:
        return ec_point
    raise ConfigError(f"CKA_EC_POINT is not an Ed25519 point: {ec_point.hex()}")


class TokenKey(ExternalEd25519Key):
    """A private Ed25519 key object inside a PKCS#11 token, used through one logged-in session.

    Signing is serialised with every other call into the same library (``_library_lock``)
    and reopens the session once if the token dropped it.
    """

    def __init__(self, uri: Pkcs11Uri, config: TokenConfig, expected_public: bytes | None) -> None:
        self._uri = uri
        self._config = config
        self._lock = _library_lock(config.module_for(uri))
        self._session: Any = None
        self._key: Any = None
        self._closed = False
        with self._lock:
            public = self._open()
        if expected_public is not None and public != expected_public:
            self._close()
            raise ConfigError(
                f"{uri.text}: the token key is {key_id_for(public)}, not the registered "
                f"{key_id_for(expected_public)}"
            )
        super().__init__(public, backend=CUSTODY_PKCS11, location=uri.text)

    def _open(self) -> bytes:
        pkcs11 = _pkcs11()
        from pkcs11 import Attribute, KeyType, ObjectClass

        token = _token(self._uri, self._config)
        session = _open_session(token, self._uri, self._config, rw=False)
        template: dict[Any, Any] = {
            Attribute.LABEL: self._uri.label,
            Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
        }
        if "id" in self._uri.path:
            template[Attribute.ID] = self._uri.path["id"]
        try:
            private = list(
                session.get_objects({**template, Attribute.CLASS: ObjectClass.PRIVATE_KEY})
            )
            public = list(
                session.get_objects({**template, Attribute.CLASS: ObjectClass.PUBLIC_KEY})
            )
        except pkcs11.PKCS11Error as exc:
            session.close()
            raise ConfigError(f"{self._uri.text}: cannot search the token: {exc!r}") from None
        if len(private) != 1 or len(public) != 1:
            session.close()
            raise ConfigError(
                f"{self._uri.text}: expected one Ed25519 key pair labelled "
                f"{self._uri.label!r}, found {len(private)} private and {len(public)} public"
            )
        self._session, self._key = session, private[0]
        return _raw_public(public[0][Attribute.EC_POINT])

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        pkcs11 = _pkcs11()
        from pkcs11 import Mechanism

        message = bytes(data)
        with self._lock:
            if self._closed:
                raise ConfigError(f"{self._uri.text}: the token key was closed")
            for attempt in (0, 1):
                try:
                    signature: bytes = self._key.sign(message, mechanism=Mechanism.EDDSA)
                    return signature
                except (pkcs11.SessionHandleInvalid, pkcs11.SessionClosed, pkcs11.DeviceRemoved):
                    if attempt:
                        raise
                    self._close()
                    if self._open() != self._raw_public_key():
                        raise ConfigError(
                            f"{self._uri.text}: after reconnecting, the token holds another key"
                        ) from None
        raise AssertionError("unreachable")

    def _raw_public_key(self) -> bytes:
        return self._public_raw

    def _close(self) -> None:
        if self._session is not None:
            try:
                self._session.close()
            except _pkcs11().PKCS11Error:
                pass
            self._session = self._key = None

    def close(self) -> None:
        """Log out and close the session (signing afterwards is an error)."""
        with self._lock:
            self._closed = True
            self._close()


def open_token_key(
    uri: str, expected_public: bytes | None = None, config: TokenConfig | None = None
) -> TokenKey:
    """Open the key pair ``uri`` names; with ``expected_public`` it must be that key."""
    return TokenKey(parse_uri(uri), config or TokenConfig(), expected_public)


def generate_token_key(
    uri: str,
    subject: str,
    role: Role,
    *,
    config: TokenConfig | None = None,
    valid_days: int | None = None,
    not_before_us: int | None = None,
) -> KeyRecord:
    """Create an Ed25519 key pair on the token and return its registry record.

    The private key is generated inside the token (``CKM_EC_EDWARDS_KEY_PAIR_GEN``) as a
    token object that is private, sensitive and never extractable, usable only to sign. An
    existing object with the same label is never replaced. The record's ``key_uri`` is the
    given URI without its query (no module path or PIN source is recorded).
    """
    if not subject:
        raise ConfigError("subject must be a non-empty string")
    if valid_days is not None and valid_days < 1:
        raise ConfigError(f"valid_days must be at least 1, found {valid_days}")
    parsed = parse_uri(uri)
    config = config or TokenConfig()
    label = parsed.label
    key_id_attr = parsed.path.get("id") or label.encode("utf-8")
    with _library_lock(config.module_for(parsed)):
        raw = _generate_pair(uri, parsed, config, label, key_id_attr)
    now = _now_us() if not_before_us is None else not_before_us
    return KeyRecord(
        key_id=key_id_for(raw),
        public_key=raw,
        role=role,
        subject=subject,
        not_before_us=now,
        not_after_us=None if valid_days is None else now + valid_days * 86_400_000_000,
        custody=CUSTODY_PKCS11,
        key_uri=uri.split("?", 1)[0],
    )


def _generate_pair(
    uri: str, parsed: Pkcs11Uri, config: TokenConfig, label: str, key_id_attr: bytes
) -> bytes:
    """Generate the pair on the token; returns its raw public key."""
    pkcs11 = _pkcs11()
    from pkcs11 import Attribute, KeyType, Mechanism

    token = _token(parsed, config)
    session = _open_session(token, parsed, config, rw=True)
    try:
        existing = list(session.get_objects({Attribute.LABEL: label}))
        if existing:
            raise ConfigError(
                f"{uri}: the token already holds {len(existing)} object(s) labelled {label!r}; "
                "refusing to create another (choose a new object= label)"
            )
        try:
            public, _private = session.generate_keypair(
                KeyType.EC_EDWARDS,
                mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                store=True,
                label=label,
                id=key_id_attr,
                public_template={
                    Attribute.EC_PARAMS: ED25519_OID_DER,
                    Attribute.VERIFY: True,
                    Attribute.TOKEN: True,
                },
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                },
            )
        except pkcs11.PKCS11Error as exc:
            raise ConfigError(
                f"{uri}: the token cannot generate an Ed25519 key pair "
                f"(CKM_EC_EDWARDS_KEY_PAIR_GEN): {exc!r}"
            ) from None
        return _raw_public(public[Attribute.EC_POINT])
    finally:
        session.close()


def ensure_token_keys(
    token_label: str,
    registry_path: Path,
    subjects: list[tuple[str, Role]],
    config: TokenConfig,
) -> tuple[dict[str, Signer], list[KeyRecord]]:
    """The demo's keys in a token: create missing key pairs and registry entries, reuse others.

    Each subject's key is the token object ``<subject>.<role>`` (URI
    ``pkcs11:token=<label>;object=<subject>.<role>``). A key pair already on the token but not
    in the registry is registered (its public key is read from the token). Active file keys of
    the same subjects and roles are retired now, a rotation from files to the token; what they
    signed stays valid. Returns the signers by subject and the retired records.
    """
    from lineage.keys import KeyRegistry, KeyTrustError, Signer

    registry = KeyRegistry.load(registry_path) if registry_path.exists() else KeyRegistry()
    now = _now_us()
    signers: dict[str, Signer] = {}
    retired: list[KeyRecord] = []
    changed = False
    for subject, role in subjects:
        uri = f"pkcs11:token={_pct(token_label)};object={_pct(f'{subject}.{role.value}')}"
        record = next(
            (
                r
                for r in registry.records()
                if r.key_uri == uri and r.subject == subject and r.role == role
            ),
            None,
        )
        if record is None:
            try:
                key = open_token_key(uri, None, config)
            except ConfigError as exc:
                if "found 0 private and 0 public" not in str(exc):
                    raise
                record = generate_token_key(uri, subject, role, config=config, not_before_us=now)
            else:
                raw = key.public_key().public_bytes_raw()
                key.close()
                existing = registry.get(key_id_for(raw))
                if existing is not None:
                    raise ConfigError(
                        f"{uri}: the token key {existing.key_id} is registered with another "
                        f"custody or scope ({existing.custody}, {existing.subject}); fix the "
                        "registry or use another token"
                    )
                record = KeyRecord(
                    key_id=key_id_for(raw),
                    public_key=raw,
                    role=role,
                    subject=subject,
                    not_before_us=now,
                    not_after_us=None,
                    custody=CUSTODY_PKCS11,
                    key_uri=uri,
                )
            for old in registry.records():
                if (
                    old.subject == subject
                    and old.role == role
                    and old.custody != CUSTODY_PKCS11
                    and old.revoked_at_us is None
                    and (old.not_after_us is None or old.not_after_us > now)
                ):
                    retired.append(registry.retire(old.key_id, max(now, old.not_before_us)))
            registry.add(record)
            changed = True
        try:
            registry.check(record.key_id, role=role, subject=subject, at_us=now)
        except KeyTrustError as exc:
            raise ConfigError(f"token key {uri} cannot be used: {exc}") from None
        signers[subject] = Signer(
            record.key_id,
            open_token_key(uri, record.public_key, config),
            subject,
            role,
            backend=CUSTODY_PKCS11,
        )
    if changed or not registry_path.exists():
        registry.save(registry_path)
    return signers, retired


def _pct(text: str) -> str:
    """Percent-encode what RFC 7512 does not allow unescaped in a path attribute value."""
    from urllib.parse import quote

    return quote(text, safe="-._~!$&'()*+,=:@")
