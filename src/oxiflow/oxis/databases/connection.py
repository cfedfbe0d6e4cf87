"""Database URLs: parse ``postgresql://`` / ``mysql://`` URLs and show them without their password.

A URL is the one way to name a server database (``url: ${PG_URL}``); a separate ``password``
field lets the secret come from its own variable. Every message that names a database uses
:meth:`DbUrl.masked` and every driver error passes through :meth:`DbUrl.scrub`, so a password
never reaches a log, an error or ``ctx.metadata``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from oxiflow.errors import ConfigError

Dialect = Literal["postgres", "mysql"]

_SCHEMES: dict[str, Dialect] = {
    "postgresql": "postgres",
    "postgres": "postgres",
    "mysql": "mysql",
    "mariadb": "mysql",
}
_DEFAULT_PORT: dict[Dialect, int] = {"postgres": 5432, "mysql": 3306}


@dataclass(frozen=True)
class DbUrl:
    dialect: Dialect
    host: str
    port: int
    user: str | None
    password: str | None = field(repr=False)
    database: str | None
    params: dict[str, str] = field(default_factory=dict)

    def masked(self) -> str:
        """The URL for people: the password replaced by ``***``."""
        return self._render(mask=True)

    def full(self) -> str:
        """The URL for the driver (with the password): never log or raise this."""
        return self._render(mask=False)

    def _render(self, *, mask: bool) -> str:
        scheme = "postgresql" if self.dialect == "postgres" else "mysql"
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if self.password:
                auth += ":" + ("***" if mask else quote(self.password, safe=""))
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{scheme}://{auth}{host}:{self.port}/{quote(self.database or '', safe='')}"
        return text + ("?" + urlencode(self.params) if self.params else "")

    def scrub(self, text: str) -> str:
        """``text`` (a driver's error message) with any occurrence of the password masked."""
        if self.password:
            for secret in {self.password, quote(self.password, safe="")}:
                text = text.replace(secret, "***")
        return text


def parse_url(url: str, dialect: Dialect, password: str | None = None) -> DbUrl:
    """Parse a server URL for ``dialect``; ``password`` (when given) overrides the URL's."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a non-numeric port; the message has no secret in it
        raise ConfigError(f"invalid database URL: {exc}") from None
    got = _SCHEMES.get(parts.scheme.lower())
    example = "postgresql://user@host:5432/db" if dialect == "postgres" else "mysql://user@host:3306/db"
    if got != dialect:
        raise ConfigError(f"expected a {dialect} URL like {example}, got scheme {parts.scheme + '://'!r}")
    if not parts.hostname:
        raise ConfigError(f"the database URL has no host (expected {example})")
    return DbUrl(
        dialect=dialect,
        host=parts.hostname,
        port=port or _DEFAULT_PORT[dialect],
        user=unquote(parts.username) if parts.username else None,
        password=password if password is not None else (unquote(parts.password) if parts.password else None),
        database=unquote(parts.path.lstrip("/")) or None,
        params=dict(parse_qsl(parts.query)),
    )
