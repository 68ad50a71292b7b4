"""Message catalogues (troc/web/locales/*.json) and the choice of language.

Every word the app shows comes from a catalogue. The language is the one
remembered in the ``troc_lang`` cookie, else the best match of the browser's
Accept-Language, else English. A key missing from a catalogue falls back to
English, then to the key itself (the catalogue tests keep both complete).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT", "LANGUAGES", "Translator", "catalogue", "choose_language"]

LOCALES = Path(__file__).parent / "locales"
LANGUAGES = ("en", "fr")
DEFAULT = "en"
COOKIE = "troc_lang"


@cache
def catalogue(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((LOCALES / f"{lang}.json").read_text(encoding="utf-8"))
    return data


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """The cookie's language if it is one we have, else the browser's best, else English."""
    if cookie in LANGUAGES:
        return str(cookie)
    best, best_q = DEFAULT, -1.0
    for position, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        lang = tag.strip().lower().split("-")[0]
        # Earlier tags win ties (the header's order is the browser's preference).
        if lang in LANGUAGES and q > best_q and q > 0:
            best, best_q = lang, q - position * 1e-6
    return best


class Translator:
    """``t("key", name=…)``: the text of ``key`` in ``lang``, formatted."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGUAGES else DEFAULT

    def __call__(self, key: str, **values: Any) -> str:
        text = catalogue(self.lang).get(key) or catalogue(DEFAULT).get(key) or key
        return text.format(**values) if values else text

    def has(self, key: str) -> bool:
        return key in catalogue(self.lang) or key in catalogue(DEFAULT)
