"""Secrets never printed: one way to redact a URL, used for every output that shows one.

Storage URLs and tracking URIs may carry a password in the user-info part
(`postgresql://bob:secret@host/db`, `http://user:secret@host/`) or in the query
(`postgresql://host/db?password=secret`). Summaries, error lines, logs, MLflow params, tags
and artifacts, and the servers' banners all pass through `redact` (or `redact_text` for free
text that may embed URLs, such as a driver's error message), so no caller forgets a shape.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode

MASK = "***"
# Query keys that libpq, SQLAlchemy dialects and HTTP clients take a secret from.
_SECRET_KEYS = frozenset({"password", "passwd", "pwd", "pass", "secret", "token",
                          "access_token", "api_key", "apikey", "sslpassword"})
# scheme://rest-of-URL up to whitespace or a quote: what a message may embed.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact(url: str) -> str:
    """URL with its password (user-info or query) replaced by ***; other parts untouched."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url  # journal:path, a bare path: nothing to hide
    # A password may hold '@' or '/' unencoded: the user-info is everything before the LAST
    # '@' ahead of the query, provided it has the user:password colon.
    query_at = next((i for i, ch in enumerate(rest) if ch in "?#"), len(rest))
    at = rest.rfind("@", 0, query_at)
    userinfo = rest[:at] if at >= 0 else ""
    if ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:{MASK}{rest[at:]}"
    return f"{scheme}://{_redact_query(rest)}"


def ambiguous_password(url: str) -> bool:
    """True when URL's user-info holds an unencoded '@' or '/' that a driver would split at.

    Drivers parse such a URL differently from `redact` (at the first '@'), and then echo a
    piece of the password back as a "host name" in their errors; refuse it before they see it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.startswith("sqlite"):
        return False  # a file path may hold '@' legitimately
    before_query = re.split(r"[?#]", rest, maxsplit=1)[0]
    at = before_query.rfind("@")
    return at >= 0 and ("@" in before_query[:at] or "/" in before_query[:at])


def redact_text(text: str) -> str:
    """TEXT with every URL in it redacted (for error messages from drivers and servers)."""
    def one(match: re.Match[str]) -> str:
        # "failed to reach URL: reason": trailing punctuation belongs to the sentence.
        url = match.group(0).rstrip(":,.;)]")
        return redact(url) + match.group(0)[len(url):]

    return _URL_IN_TEXT.sub(one, text)


def _redact_query(tail: str) -> str:
    path, q, rest = tail.partition("?")
    if not q:
        return tail
    query, hash_, fragment = rest.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(key.lower() in _SECRET_KEYS for key, _ in pairs):
        return tail
    cleaned = [(key, MASK if key.lower() in _SECRET_KEYS else value) for key, value in pairs]
    return f"{path}?{urlencode(cleaned, safe='*/:')}{hash_}{fragment}"


class RedactingFilter(logging.Filter):
    """Redacts URLs in every record a handler emits, whichever library logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
