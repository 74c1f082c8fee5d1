"""The one definition of a verdict on a claim and of its status (issue 18).

Every experiment (``simulate.experiments``), every report suite (``reports``) and the report's
table use :class:`Verdict` ``(status, key_number, evidence)``. Its status is a :class:`Status`:
one :class:`StatusKind` and an optional detail, written as the text the results files have always
held:

============================  ===============================================================
kind                          text
============================  ===============================================================
``VERIFIED``                  ``verified``, ``verified (bound-level, default parameters)``
``HOLDS_IN_REGIME``           ``holds in regime: sigma <= 0.1 ...``, ``holds in regime n <= 8 ...``
``REFUTED``                   ``refuted``
``INCONCLUSIVE``              ``inconclusive: the interval contains 0``
``NOT_RUN``                   ``not run: <why>``
``SUPPLEMENT``                ``supplement`` (not a verdict: a report row that adds evidence to a
                              claim another suite decides)
============================  ===============================================================

A :class:`Status` *is* that text (a ``str`` subclass): it compares, formats and serialises to JSON
exactly as the plain string did, so ``result.json`` and ``results.json`` are unchanged; what it
adds is that the text is parsed once, on construction (an unknown status is a ``ValueError``), and
that code asks ``status.kind is StatusKind.VERIFIED`` instead of testing prefixes.

No torch, no numpy: this is the bottom of ``simulate`` and may be imported from anywhere above it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = ["StatusKind", "Status", "Verdict"]

#: the separators written between a kind's word and its detail ("holds in regime: x", "verified (x)")
_SEPARATORS = (": ", " ")


class StatusKind(enum.Enum):
    """What a verdict says about its claim; the value is the word that starts the status text."""

    VERIFIED = "verified"
    HOLDS_IN_REGIME = "holds in regime"
    REFUTED = "refuted"
    INCONCLUSIVE = "inconclusive"
    NOT_RUN = "not run"
    SUPPLEMENT = "supplement"

    @property
    def measured(self) -> bool:
        """A measurement decided the claim (verified, holds in regime, refuted or inconclusive)."""
        return self not in (StatusKind.NOT_RUN, StatusKind.SUPPLEMENT)


#: longest word first, so that no kind's word is taken for a prefix of another's
_BY_WORD = sorted(StatusKind, key=lambda k: -len(k.value))


def _split(text: str) -> tuple[StatusKind, str, str]:
    """``(kind, separator, detail)`` of a status text; ``ValueError`` for any other text."""
    if not isinstance(text, str):
        raise ValueError(f"status must be a string, got {type(text).__name__}")
    for kind in _BY_WORD:
        if not text.startswith(kind.value):
            continue
        rest = text[len(kind.value):]
        if not rest:
            return kind, "", ""
        for sep in _SEPARATORS:
            if rest.startswith(sep) and len(rest) > len(sep):
                return kind, sep, rest[len(sep):]
    words = " / ".join(k.value for k in StatusKind)
    raise ValueError(f"status must be {words}, optionally followed by ': <detail>' or ' <detail>'; got {text!r}")


class Status(str):
    """A verdict's status: a :class:`StatusKind` and an optional detail, as one text.

    ``Status("holds in regime: sigma <= 0.1")`` parses the text (``ValueError`` if it starts with
    no kind's word); ``Status.of(StatusKind.HOLDS_IN_REGIME, "sigma <= 0.1")`` builds the same one.
    ``str(Status.parse(s)) == s`` for every valid ``s``, so a status round-trips through JSON.
    """

    __slots__ = ()

    def __new__(cls, text: str) -> Status:
        if type(text) is cls:
            return text  # type: ignore[return-value]
        _split(text)
        return super().__new__(cls, text)

    @classmethod
    def parse(cls, text: str) -> Status:
        """The status written as ``text`` (``ValueError`` naming the valid kinds otherwise)."""
        return cls(text)

    @classmethod
    def of(cls, kind: StatusKind, detail: str = "", sep: str = ": ") -> Status:
        """``kind``'s word, then ``sep`` and ``detail`` when ``detail`` is given."""
        if sep not in _SEPARATORS:
            raise ValueError(f"sep must be one of {_SEPARATORS}, got {sep!r}")
        return cls(kind.value + (sep + detail if detail else ""))

    @property
    def kind(self) -> StatusKind:
        return _split(self)[0]

    @property
    def detail(self) -> str:
        """The text after the kind's word and its separator ("" when there is none)."""
        return _split(self)[2]

    def __repr__(self) -> str:
        return f"Status({str.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Status, (str(self),))

    def __copy__(self) -> Status:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Status:
        return self


@dataclass
class Verdict:
    """The measured verdict on one claim: its status, the key number (a short text) and the
    evidence (sentences naming what was measured). The status may be given as text; it is parsed
    into a :class:`Status` (``ValueError`` for an unknown one)."""

    status: Status
    key_number: str
    evidence: str

    def __post_init__(self) -> None:
        self.status = Status(self.status)

    @property
    def kind(self) -> StatusKind:
        return self.status.kind
