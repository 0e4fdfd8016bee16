"""Who may see the dashboard, and proof that an action came from its own pages.

- **Login**: with ``--auth user:password`` (or ``BACKSTAGE_DASHBOARD_TOKEN``)
  every page asks for credentials: HTTP basic (``curl -u``), a bearer
  token, or the login form, which sets a signed session cookie.
- **CSRF**: every form carries a token derived (HMAC) from a random
  per-browser cookie; a POST whose token does not match is refused, so
  another site cannot make a logged-in browser requeue or shut down.

The secret is random per dashboard process: restarting it logs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from .config import DashboardConfig

__all__ = ["SESSION_COOKIE", "CSRF_COOKIE", "Guard"]

SESSION_COOKIE = "backstage_session"
CSRF_COOKIE = "backstage_csrf"
SESSION_SECONDS = 12 * 3600


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """Credential checks, session cookies and CSRF tokens of one dashboard."""

    def __init__(self, cfg: DashboardConfig) -> None:
        self.cfg = cfg

    def _sign(self, text: str) -> str:
        return hmac.new(self.cfg.secret, text.encode(), hashlib.sha256).hexdigest()

    # -- credentials ----------------------------------------------------------------
    def credentials_ok(self, user: str, password: str) -> bool:
        """The configured user and password, or the token as the password (any user)."""
        ok = False
        if self.cfg.user is not None and self.cfg.password is not None:
            ok = _eq(user, self.cfg.user) & _eq(password, self.cfg.password)
        if self.cfg.token is not None:
            ok |= _eq(password, self.cfg.token)
        return ok

    def header_ok(self, header: str) -> bool:
        """An ``Authorization`` header: Basic user:password, or Bearer token."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.cfg.token is not None:
            return _eq(value.strip(), self.cfg.token)
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return self.credentials_ok(user, password)
        return False

    def new_session(self, user: str) -> str:
        body = f"{user}|{int(time.time()) + SESSION_SECONDS}"
        return f"{body}|{self._sign(body)}"

    def session_ok(self, cookie: str) -> bool:
        body, _, sig = cookie.rpartition("|")
        if not body or not _eq(sig, self._sign(body)):
            return False
        _, _, expiry = body.rpartition("|")
        return expiry.isdigit() and int(expiry) > time.time()

    def allowed(self, authorization: str | None, session: str | None) -> bool:
        if not self.cfg.auth_required:
            return True
        return bool((authorization and self.header_ok(authorization)) or (session and self.session_ok(session)))

    # -- CSRF -------------------------------------------------------------------------
    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(18)

    def csrf_token(self, nonce: str) -> str:
        """The token forms carry for the browser whose CSRF cookie is ``nonce``."""
        return self._sign("csrf|" + nonce)

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        return bool(nonce and token) and _eq(str(token), self.csrf_token(str(nonce)))
