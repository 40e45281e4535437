"""Redaction: remove secret values (raw, base64, URL-encoded, JSON-escaped) from anything stored.

Pure, apart from `ActiveSecrets`, the in-memory set of values fetched recently, which a logging
filter uses so that a log line never shows a secret (e.g. an exception a step's code logged itself).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

MIN_SECRET_LENGTH = 4
"""Values shorter than this are not redacted: they cannot be told apart from ordinary text."""
_MIN_B64_CORE = 8


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _b64_cores(raw: bytes) -> Iterator[str]:
    """base64 text that appears whenever `raw` is encoded inside a longer byte string.

    Base64 works on 3-byte groups, so a value embedded at byte offset k (mod 3) encodes differently
    for each k; the middle of each encoding does not depend on the surrounding bytes.
    """
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        yield whole
        yield whole.rstrip("=")
        for k in range(3):
            data = b"\x00" * k + raw
            enc = encode(data).decode()
            start = 4 if k else 0
            stop = (len(data) // 3) * 4
            core = enc[start:stop]
            if len(core) >= _MIN_B64_CORE:
                yield core


def variants(secret: str) -> set[str]:
    """Every form of `secret` that redaction looks for."""
    if len(secret) < MIN_SECRET_LENGTH:
        return set()
    raw = secret.encode("utf-8")
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret),
             urllib.parse.quote_plus(secret), json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    forms.update(_b64_cores(raw))
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH}


class Redactor:
    """Replaces every variant of a set of secret values; build one per step attempt."""

    def __init__(self, secrets: Mapping[str, Mapping[str, Any]]) -> None:
        labels: dict[str, str] = {}
        for name, values in secrets.items():
            if not isinstance(values, Mapping):
                continue
            for key, value in values.items():
                for text in _strings(value):
                    for form in variants(text):
                        labels.setdefault(form, f"{name}.{key}")
        self._labels = labels
        forms = sorted(labels, key=len, reverse=True)  # longest first: a variant may contain another
        self._pattern = re.compile("|".join(re.escape(f) for f in forms)) if forms else None

    def text(self, value: str) -> str:
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda m: f"[redacted:{self._labels[m.group(0)]}]", value)

    def __call__(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(k) if isinstance(k, str) else k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


def redact(value: Any, secrets: Mapping[str, Mapping[str, Any]]) -> Any:
    """`value` (JSON-like) with every secret value of `secrets` replaced by `[redacted:<name>.<key>]`."""
    return Redactor(secrets)(value)


class ActiveSecrets:
    """Secret values fetched in the last `keep` seconds (process memory only), for the log filter."""

    def __init__(self, keep: float = 900.0) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], tuple[float, Mapping[str, Any]]] = {}
        self._redactor: Redactor | None = None

    def add(self, scope: str, name: str, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._values[(scope, name)] = (time.monotonic() + self.keep, values)
            self._redactor = None

    def redactor(self) -> Redactor | None:
        with self._lock:
            now = time.monotonic()
            expired = [k for k, (until, _) in self._values.items() if until < now]
            for k in expired:
                del self._values[k]
            if not self._values:
                return None
            if self._redactor is None or expired:
                self._redactor = Redactor({f"{scope}:{name}": v for (scope, name), (_, v) in self._values.items()})
            return self._redactor


class RedactingFilter(logging.Filter):
    """A handler filter that redacts recently fetched secret values from every log record."""

    def __init__(self, active: ActiveSecrets) -> None:
        super().__init__()
        self.active = active

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self.active.redactor()
        if redactor is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = redactor.text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = redactor.text(record.exc_text)
            record.exc_info = None
        return True


def install_log_filter(active: ActiveSecrets, handlers: Iterable[logging.Handler] | None = None) -> RedactingFilter:
    """Attach a RedactingFilter to the root logger's handlers (or `handlers`)."""
    flt = RedactingFilter(active)
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        handler.addFilter(flt)
    return flt


def remove_log_filter(flt: RedactingFilter) -> None:
    for handler in logging.getLogger().handlers:
        handler.removeFilter(flt)
