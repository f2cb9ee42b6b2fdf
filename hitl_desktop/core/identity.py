"""Users, roles, passwords, lockout, permissions, four-eyes and electronic signatures.

Headless: no prompts, no Qt. A front end (the CLI or the window) obtains the password its own way and calls
`authenticate`, `authorize` and `signer` here; the core (`batches`) calls `authorize` itself, so every front end
gets the same rules.

Passwords are stored only as a salted scrypt hash. One scrypt run yields 64 bytes: the first 32 are the stored
verifier, the last 32 are the key (AES-GCM) that encrypts the user's Ed25519 private key. So a signature costs one
KDF run (tuned to ~150 ms on a desktop) plus microseconds of signing.

Every user's public key is recorded in the audit chain when it is created; signatures are verified against the key
the chain says the signer held at that moment, never against an unchecked column. Each signature covers the
canonical bytes of the decision (batch content hash, action, meaning, time, signer, full name, project id) and the
audit chain head at signing, so rewriting earlier history — even with recomputed chain hashes — breaks it.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import functools
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, Callable, ContextManager, Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from . import audit, db
from .errors import HitlError, NotFound, PermissionRefused
from .util import canonical_json, utc_now



class ProjectHandle(Protocol):
    """What identity needs of a `project.Project` (identity sits below project: it does not import it)."""

    read_only: bool

    def read(self) -> ContextManager[Connection]: ...

    def write(self) -> ContextManager[Connection]: ...

    def set_meta(self, conn: Connection, key: str, value: str) -> None: ...

ROLES = ("reviewer", "approver", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}

#: The least role each permission needs. Other areas add their permissions here (one line each).
PERMISSIONS: dict[str, str] = {
    "import": "reviewer",
    "edit": "reviewer",
    "claim": "reviewer",
    "dismiss_flag": "reviewer",
    "run": "reviewer",
    "train": "reviewer",
    "export": "reviewer",
    "approve": "approver",
    "reject": "approver",
    "reopen": "approver",
    "approve_model": "approver",
    "reject_model": "approver",
    "release": "approver",
    "users": "admin",
    "policy": "admin",
}
_VERB = {
    "import": "importing data", "edit": "editing cells", "claim": "claiming a batch",
    "dismiss_flag": "dismissing flags", "run": "running pipelines", "train": "training models",
    "export": "exporting data", "approve": "approving a batch", "reject": "rejecting a batch",
    "reopen": "reopening a batch", "approve_model": "approving a model",
    "reject_model": "rejecting a model", "release": "releasing a model",
    "users": "managing users", "policy": "changing project policy",
}
#: Decisions that are electronic signatures (need the signer's password at that moment).
SIGNED_ACTIONS = frozenset({"approve", "reject", "reopen", "approve_model", "reject_model", "release"})
POLICIES = {"four_eyes": "policy.four_eyes"}

MAX_FAILURES = 5
LOCKOUT_SECONDS = 60
MIN_PASSWORD_LENGTH = 8
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
KEY_ACTIONS = ("user.add", "user.password")  # audit entries that record a public key


# --- KDF -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KdfParams:
    """scrypt cost. n=2**16, r=8 (64 MiB) takes ~140 ms on a 2020s desktop: the bulk of a signature's cost."""

    n: int = 2**16
    r: int = 8
    p: int = 1


PRODUCTION_KDF = KdfParams()


def default_kdf() -> KdfParams:
    """KDF for newly set passwords. `HITL_SCRYPT_N` (a power of two) lowers it for test suites only."""
    env = os.environ.get("HITL_SCRYPT_N")
    if env:
        n = int(env)
        if n < 2 or n & (n - 1):
            raise HitlError(f"HITL_SCRYPT_N must be a power of two, got {env}")
        return KdfParams(n=n)
    return PRODUCTION_KDF


def _derive(password: str, salt: bytes, params: KdfParams) -> tuple[bytes, bytes]:
    out = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=params.n, r=params.r, p=params.p,
                         maxmem=256 * params.n * params.r + 2**20, dklen=64)
    return out[:32], out[32:]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"))


def key_fingerprint(public_key_b64: str) -> str:
    return hashlib.sha256(_unb64(public_key_b64)).hexdigest()[:16]


def check_password_quality(password: str) -> None:
    if password is None or len(password) < MIN_PASSWORD_LENGTH:
        raise HitlError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def credential_columns(user: str, password: str, private_key: Ed25519PrivateKey | None = None,
                       params: KdfParams | None = None) -> dict[str, Any]:
    """Column values for `users` holding a password hash and the (new or given) key pair encrypted under it."""
    check_password_quality(password)
    params = params or default_kdf()
    salt = os.urandom(16)
    verifier, kek = _derive(password, salt, params)
    key = private_key or Ed25519PrivateKey.generate()
    pub = _b64(key.public_key().public_bytes_raw())
    nonce = os.urandom(12)
    ct = AESGCM(kek).encrypt(nonce, key.private_bytes_raw(), _key_ad(user, pub))
    return {
        "pw_hash": verifier.hex(),
        "kdf": canonical_json({"alg": "scrypt", "n": params.n, "r": params.r, "p": params.p, "salt": _b64(salt)}),
        "public_key": pub,
        "private_key_enc": canonical_json({"v": 1, "nonce": _b64(nonce), "ct": _b64(ct)}),
    }


def _key_ad(user: str, pub: str) -> bytes:
    return f"hitl-key:{user}:{pub}".encode("utf-8")


# --- users -----------------------------------------------------------------------------------------------------


@dataclass
class User:
    name: str
    full_name: str
    role: str
    disabled: bool
    has_password: bool
    public_key: str | None
    failed_logins: int
    locked_until: str | None
    created_at: str
    created_by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "full_name": self.full_name, "role": self.role, "disabled": self.disabled,
            "has_password": self.has_password,
            "key": key_fingerprint(self.public_key) if self.public_key else None,
            "failed_logins": self.failed_logins, "locked_until": self.locked_until,
            "created_at": self.created_at, "created_by": self.created_by,
        }


def _user_from_row(r: Any) -> User:
    return User(r.name, r.full_name, r.role, bool(r.disabled), r.pw_hash is not None, r.public_key,
                r.failed_logins, r.locked_until, r.created_at, r.created_by)


def _row(conn: Connection, name: str) -> Any:
    return conn.execute(select(db.users).where(db.users.c.name == name)).first()


def get_user(conn: Connection, name: str) -> User:
    r = _row(conn, name)
    if r is None:
        raise NotFound(f"no user '{name}' in this project (see `hitl users DIR list`; pass --as NAME)")
    return _user_from_row(r)


def list_users(project: ProjectHandle) -> list[User]:
    with project.read() as conn:
        return [_user_from_row(r) for r in conn.execute(select(db.users).order_by(db.users.c.id))]


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name or ""):
        raise HitlError(f"'{name}' is not a valid user name (letters, digits and . _ @ + -, up to 64 characters)")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise HitlError(f"unknown role '{role}': choose one of {', '.join(ROLES)}")


def add_user(project: ProjectHandle, admin: str, name: str, role: str, password: str,
             full_name: str | None = None) -> User:
    """Create a user with their initial password and key pair (admin only; recorded)."""
    _check_name(name)
    _check_role(role)
    check_password_quality(password)
    authorize(project, admin, "users")
    cols = credential_columns(name, password)  # the KDF runs outside the write lock
    with project.write() as conn:
        if _row(conn, name) is not None:
            raise HitlError(f"user '{name}' already exists (disabled users keep their name; choose another)")
        now = utc_now()
        conn.execute(db.users.insert().values(
            name=name, full_name=full_name or name, role=role, disabled=False, failed_logins=0, created_at=now,
            created_by=admin, **cols))
        audit.append(conn, admin, "user.add", f"user:{name}", {
            "user": name, "full_name": full_name or name, "role": role, "public_key": cols["public_key"]}, ts=now)
        return get_user(conn, name)


def set_disabled(project: ProjectHandle, admin: str, name: str, disabled: bool = True) -> User:
    """Disable (or re-enable) a user. History stays; a disabled user can no longer log in or sign."""
    authorize(project, admin, "users")
    with project.write() as conn:
        u = get_user(conn, name)
        if u.disabled == disabled:
            raise HitlError(f"user '{name}' is already {'disabled' if disabled else 'enabled'}")
        if disabled and u.role == "admin":
            admins = conn.execute(select(db.users.c.name).where(and_(
                db.users.c.role == "admin", db.users.c.disabled.is_(False)))).scalars().all()
            if admins == [name]:
                raise HitlError(f"'{name}' is the last active admin: add another admin before disabling them")
        conn.execute(db.users.update().where(db.users.c.name == name).values(disabled=disabled))
        audit.append(conn, admin, "user.disable" if disabled else "user.enable", f"user:{name}", {"user": name})
        return get_user(conn, name)


def set_password(project: ProjectHandle, user: str, new_password: str, old_password: str | None = None) -> User:
    """Change one's own password (the old one is required if set). The key pair stays, re-encrypted.

    A user created without a password (`Project.init(path, user)` in tests) sets their first one here.
    """
    check_password_quality(new_password)
    with project.read() as conn:
        u = get_user(conn, user)
    key = None
    if u.has_password:
        if old_password is None:
            raise PermissionRefused(f"changing the password of '{user}' needs their current password")
        key = authenticate(project, user, old_password).private_key
    cols = credential_columns(user, new_password, private_key=key)
    with project.write() as conn:
        conn.execute(db.users.update().where(db.users.c.name == user).values(
            failed_logins=0, locked_until=None, **cols))
        audit.append(conn, user, "user.password", f"user:{user}",
                     {"user": user, "public_key": cols["public_key"], "new_key": key is None})
        return get_user(conn, user)


def set_policy(project: ProjectHandle, admin: str, policy: str, on: bool) -> None:
    """Switch a project policy (admin only; recorded with before/after)."""
    if policy not in POLICIES:
        raise HitlError(f"unknown policy '{policy}': known policies are {', '.join(POLICIES)}")
    authorize(project, admin, "policy")
    with project.write() as conn:
        old = policy_value(conn, policy)
        if old == on:
            raise HitlError(f"policy {policy} is already {'on' if on else 'off'}")
        project.set_meta(conn, POLICIES[policy], "on" if on else "off")
        audit.append(conn, admin, "policy.set", f"policy:{policy}",
                     {"policy": policy, "old": "on" if old else "off", "new": "on" if on else "off"})


def policy_value(conn: Connection, policy: str) -> bool:
    v = conn.execute(select(db.meta.c.value).where(db.meta.c.key == POLICIES[policy])).scalar()
    return (v or "on") == "on"


# --- authentication --------------------------------------------------------------------------------------------


def _now() -> datetime:  # tests move the clock
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Session:
    """An authenticated user with their unlocked private key (held in memory only)."""

    user: str
    full_name: str
    role: str
    public_key: str
    private_key: Ed25519PrivateKey


def record_event(project: ProjectHandle, user: str, action: str, target: str | None, payload: dict[str, Any],
            **user_values: Any) -> None:
    """A small separate transaction for refusals and failed logins (so they persist although the action fails)."""
    if project.read_only:
        return
    with project.write() as conn:
        if user_values:
            conn.execute(db.users.update().where(db.users.c.name == user).values(**user_values))
        audit.append(conn, user, action, target, payload)


def authenticate(project: ProjectHandle, user: str, password: str) -> Session:
    """Check the password and unlock the user's key. Failures are counted and recorded; 5 in a row lock a minute."""
    with project.read() as conn:
        r = _row(conn, user)
    if r is None:
        record_event(project, user, "auth.failed", f"user:{user}", {"user": user, "reason": "unknown user"})
        raise PermissionRefused(f"'{user}' is not a user of this project (pass --as NAME; an admin adds users "
                                f"with `hitl users DIR add`)")
    if r.disabled:
        record_event(project, user, "auth.failed", f"user:{user}", {"user": user, "reason": "disabled"})
        raise PermissionRefused(f"user '{user}' is disabled")
    now = _now()
    if r.locked_until and r.locked_until > _iso(now):
        record_event(project, user, "auth.failed", f"user:{user}", {"user": user, "reason": "locked"})
        raise PermissionRefused(f"user '{user}' is locked after {MAX_FAILURES} wrong passwords until "
                                f"{r.locked_until[:19]} UTC; try again later")
    if r.pw_hash is None or r.kdf is None:
        raise PermissionRefused(f"user '{user}' has no password yet: set one first")
    kdf = json.loads(r.kdf)
    verifier, kek = _derive(password or "", _unb64(kdf["salt"]), KdfParams(kdf["n"], kdf["r"], kdf["p"]))
    if not hmac.compare_digest(verifier.hex(), r.pw_hash):
        failures = (r.failed_logins or 0) + 1
        values: dict[str, Any] = {"failed_logins": failures}
        locked = None
        if failures >= MAX_FAILURES:
            locked = _iso(now + timedelta(seconds=LOCKOUT_SECONDS))
            values = {"failed_logins": 0, "locked_until": locked}
        record_event(project, user, "auth.failed", f"user:{user}",
                {"user": user, "reason": "wrong password", "failures": failures, "locked_until": locked}, **values)
        if locked:
            raise PermissionRefused(f"wrong password for '{user}' ({failures} in a row): locked for "
                                    f"{LOCKOUT_SECONDS} seconds")
        raise PermissionRefused(f"wrong password for '{user}' ({failures} of {MAX_FAILURES} before a "
                                f"{LOCKOUT_SECONDS} s lockout)")
    try:
        enc = json.loads(r.private_key_enc)
        raw = AESGCM(kek).decrypt(_unb64(enc["nonce"]), _unb64(enc["ct"]), _key_ad(user, r.public_key))
        key = Ed25519PrivateKey.from_private_bytes(raw)
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise PermissionRefused(f"the signing key of '{user}' does not match their password or public key "
                                f"(the users table was altered); run `hitl audit DIR verify`") from None
    if _b64(key.public_key().public_bytes_raw()) != r.public_key:
        raise PermissionRefused(f"the signing key of '{user}' does not match their public key; run `hitl audit DIR verify`")
    if (r.failed_logins or 0) or r.locked_until:
        if not project.read_only:
            with project.write() as conn:
                conn.execute(db.users.update().where(db.users.c.name == user).values(failed_logins=0,
                                                                                     locked_until=None))
    return Session(user, r.full_name, r.role, r.public_key, key)


# --- authorization ---------------------------------------------------------------------------------------------


def role_needed(permission: str) -> str:
    try:
        return PERMISSIONS[permission]
    except KeyError:
        raise ValueError(f"unknown permission {permission!r}: add it to identity.PERMISSIONS") from None


def check(conn: Connection, user: str, permission: str, batch_id: int | None = None) -> str | None:
    """Why `user` may not do `permission` (on `batch_id`), or None if allowed. Reads only."""
    needed = role_needed(permission)
    r = _row(conn, user)
    if r is None:
        return f"'{user}' is not a user of this project (pass --as NAME; an admin adds users with `hitl users DIR add`)"
    if r.disabled:
        return f"user '{user}' is disabled"
    if _RANK.get(r.role, -1) < _RANK[needed]:
        return f"{_VERB.get(permission, permission)} needs the {needed} role; {user} is {_article(r.role)} {r.role}"
    if permission == "approve" and batch_id is not None and policy_value(conn, "four_eyes"):
        n = conn.execute(select(db.edits.c.id).where(and_(
            db.edits.c.batch_id == batch_id, db.edits.c.user == user)).limit(1)).first()
        if n is not None:
            return (f"four-eyes policy: {user} edited batch {batch_id} and may not approve it; "
                    f"another approver must")
    return None


def _article(role: str) -> str:
    return "an" if role[:1] in "aeiou" else "a"


def authorize(project: ProjectHandle, user: str, permission: str, batch_id: int | None = None,
              target: str | None = None) -> None:
    """Raise PermissionRefused (naming the role needed) unless allowed; a refusal is recorded in the audit trail."""
    with project.read() as conn:
        reason = check(conn, user, permission, batch_id)
    if reason is None:
        return
    target = target or (f"batch:{batch_id}" if batch_id is not None else None)
    record_event(project, user, "auth.refused", target, {
        "user": user, "permission": permission, "needs": role_needed(permission), "batch": batch_id,
        "reason": reason})
    raise PermissionRefused(reason + "; nothing was changed")


def check_four_eyes_model(conn: Connection, user: str, trained_by: str) -> str | None:
    """For model approval: why `user` may not approve a model trained by `trained_by`, or None."""
    if policy_value(conn, "four_eyes") and user == trained_by:
        return f"four-eyes policy: {user} trained this model and may not approve it; another approver must"
    return None


# --- signatures ------------------------------------------------------------------------------------------------

Signer = Callable[[Connection, dict[str, Any]], tuple[str, str, str]]


def signer(project: ProjectHandle, user: str, password: str) -> Signer:
    """Authenticate now and return a one-shot signer for `batches.decide(..., signer=...)`.

    The returned callable runs inside the decision's transaction: it binds the payload to the current audit chain
    head, signs the canonical bytes with the user's private key and returns (full_name, signed_payload, signature).
    """
    session = authenticate(project, user, password)
    return session_signer(session)


def session_signer(session: Session) -> Signer:
    used = []

    def sign(conn: Connection, payload: dict[str, Any]) -> tuple[str, str, str]:
        if used:
            raise PermissionRefused("a signature needs the password each time; this one was already used")
        if payload.get("user") != session.user:
            raise PermissionRefused(f"{session.user} cannot sign for {payload.get('user')}")
        r = _row(conn, session.user)
        if r is None or r.disabled or r.public_key != session.public_key:
            raise PermissionRefused(f"user '{session.user}' can no longer sign (disabled or key changed)")
        used.append(True)
        head_id, head_hash = audit.head(conn)
        body = {**payload, "signer": session.user, "full_name": r.full_name,
                "chain_head": {"id": head_id, "hash": head_hash}, "key": key_fingerprint(session.public_key),
                "v": 1}
        text = canonical_json(body)
        sig = _b64(session.private_key.sign(text.encode("utf-8")))
        return r.full_name, text, sig

    return sign


@functools.lru_cache(maxsize=4096)
def verify_signature(public_key_b64: str, signed_payload: str, signature_b64: str) -> bool:
    """Whether `signature_b64` is `public_key_b64`'s Ed25519 signature of `signed_payload`. Remembered per exact
    (key, text, signature): the answer for the same three strings never changes, and an operation that re-checks
    every approval (training, the approvals view) would otherwise verify the same signatures again each time."""
    try:
        Ed25519PublicKey.from_public_bytes(_unb64(public_key_b64)).verify(
            _unb64(signature_b64), signed_payload.encode("utf-8"))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def key_history(conn: Connection) -> dict[str, list[tuple[int, str]]]:
    """Public keys per user as recorded in the audit chain: user -> [(audit id, key)] in chain order."""
    out: dict[str, list[tuple[int, str]]] = {}
    for r in conn.execute(select(db.audit.c.id, db.audit.c.payload).where(db.audit.c.action.in_(KEY_ACTIONS))
                          .order_by(db.audit.c.id)):
        p = json.loads(r.payload)
        if p.get("public_key"):
            out.setdefault(p["user"], []).append((r.id, p["public_key"]))
    return out


def key_at(history: dict[str, list[tuple[int, str]]], user: str, audit_id: int) -> str | None:
    """The key `user` held just before audit entry `audit_id` (per the chain)."""
    key = None
    for aid, k in history.get(user, []):
        if aid < audit_id:
            key = k
        else:
            break
    return key


def check_signed_decision(d: Any, project_id: str, history: dict[str, list[tuple[int, str]]],
                          hash_of: Callable[[int], str | None]) -> str | None:
    """Why a decision row's signature is not valid, or None. `d` is a `decisions` row."""
    if not d.signature or not d.signed_payload:
        return "is not signed"
    try:
        body = json.loads(d.signed_payload)
    except ValueError:
        return "has an unreadable signed payload"
    expected = {
        "action": d.action, "user": d.user, "signer": d.user, "full_name": d.full_name, "ts": d.ts,
        "meaning": d.meaning, "content_hash": d.content_hash, "comment": d.comment, "project": project_id,
    }
    if d.batch_id is not None:
        expected["batch"] = d.batch_id
    if d.model_id is not None:
        expected["model"] = d.model_id
    for k, v in expected.items():
        if body.get(k) != v:
            return f"does not match what was signed ({k}: record says {v!r}, signature covers {body.get(k)!r})"
    head = body.get("chain_head") or {}
    if d.audit_id is None or head.get("id") != d.audit_id - 1:
        return "is not bound to the audit entry before it"
    if head.get("id", 0) > 0 and hash_of(head["id"]) != head.get("hash"):
        return f"was signed over a different audit history (entry {head['id']} changed since)"
    if head.get("id") == 0 and head.get("hash") != audit.GENESIS:
        return "was signed over a different audit history"
    key = key_at(history, d.user, d.audit_id)
    if key is None:
        return f"names {d.user}, who had no key recorded in the audit trail at that time"
    if body.get("key") != key_fingerprint(key):
        return f"was not made with the key recorded for {d.user}"
    if not verify_signature(key, d.signed_payload, d.signature):
        return f"has an invalid signature for {d.user}"
    return None


# --- decisions signed at home or away (in a review bundle) ---------------------------------------------------------


def check_merged_signature(d: Any, away: dict[str, Any], project_id: str,
                           history: dict[str, list[tuple[int, str]]]) -> str | None:
    """Why a decision signed away (and merged by `bundle.apply_import`) has no valid signature, or None.

    Its audit entry records the away audit id it had and the away chain head it was bound to (checked against the
    bundle's verified trail at import). The signature must match the decision and that head, and be made with the
    key the home trail says the signer held when the bundle was exported.
    """
    try:
        head = away["chain_head"]
        shim = SimpleNamespace(**{k: getattr(d, k) for k in d._fields})
        shim.audit_id = int(away["audit_id"])
        key = key_at(history, d.user, int(away["export_entry"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        return "was merged from a review bundle but its away record is incomplete"
    hist = {d.user: [(0, key)]} if key else {}
    return check_signed_decision(shim, project_id, hist,
                                 lambda i: head.get("hash") if i == head.get("id") else None)


def check_decision_signature(d: Any, entry_payload: dict[str, Any], project_id: str, history: dict,
                             hash_of: Any) -> str | None:
    """Why decision row `d`'s signature is not valid, or None. A decision signed away in a review bundle and merged
    by `hitl bundle import` carries an "away" record in its audit entry (see `check_merged_signature`)."""
    if isinstance(entry_payload.get("away"), dict):
        return check_merged_signature(d, entry_payload["away"], project_id, history)
    return check_signed_decision(d, project_id, history, hash_of)
