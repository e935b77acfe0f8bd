"""Lifecycles written once: for each thing with a status, one table of what can be done to it.

A ``Lifecycle`` maps each action to the statuses it is allowed from, the status it goes to (or
none, when the action leaves the status as it is) and the sentence a person reads when it is
not allowed now. Services check an action against it and views and templates ask which actions
are allowed now; nothing else compares statuses. When two people act on the same thing at
once, the one who loses the race is told what happened (``lost_race``), not that the thing was
never possible.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.errors import DomainError

S = TypeVar("S", bound=enum.StrEnum)
A = TypeVar("A", bound=enum.StrEnum)


@dataclass(frozen=True)
class Move(Generic[S]):
    """What one action does: allowed from these statuses, goes to that one (None: stays).

    ``refusal`` and ``done`` may name ``{subject}`` (e.g. "claim 12") and ``{status}`` (the
    status now, in words). ``done`` says what the action did, for the person who lost a race
    to it: "{subject} was shipped a moment ago by someone else"."""

    allowed_from: frozenset[S]
    goes_to: S | None
    refusal: str
    done: str = ""
    error: type[DomainError] | None = None  # instead of the lifecycle's own


class Lifecycle(Generic[S, A]):
    """The table of one lifecycle, and the error it raises when an action is refused."""

    def __init__(
        self,
        statuses: type[S],
        moves: Mapping[A, Move[S]],
        *,
        refused: type[DomainError],
    ) -> None:
        self.statuses = statuses
        self.moves = dict(moves)
        self.refused = refused

    def allows(self, action: A, status: str) -> bool:
        return self.statuses(status) in self.moves[action].allowed_from

    def actions(self, status: str) -> frozenset[A]:
        """The actions allowed from ``status``: what a page may offer now."""
        current = self.statuses(status)
        return frozenset(a for a, move in self.moves.items() if current in move.allowed_from)

    def statuses_allowing(self, action: A) -> tuple[str, ...]:
        """The statuses ``action`` is allowed from, for a query's ``IN``."""
        return tuple(sorted(s.value for s in self.moves[action].allowed_from))

    def goes_to(self, action: A, status: str, *, subject: str) -> S:
        """The status ``action`` leads to from ``status``; refused with the table's sentence
        when it is not allowed."""
        move = self.moves[action]
        current = self.statuses(status)
        if current not in move.allowed_from:
            raise self._error(move)(self._say(move.refusal, subject, current))
        return current if move.goes_to is None else move.goes_to

    def lost_race(self, action: A, now: str, *, subject: str) -> DomainError:
        """The error for someone whose ``action`` found the status changed by another request
        meanwhile: what that request did (the same action first), else where it stands now."""
        current = self.statuses(now)
        for other in (action, *self.moves):
            move = self.moves[other]
            if move.goes_to == current and move.done:
                said = self._say(move.done, subject, current)
                return self._error(self.moves[action])(said + " Reload the page.")
        said = self._say("{subject} changed a moment ago: it is now {status}.", subject, current)
        return self._error(self.moves[action])(said + " Reload the page.")

    def _error(self, move: Move[S]) -> type[DomainError]:
        return move.error or self.refused

    def transitions(self) -> dict[S, frozenset[S]]:
        """Every status and the statuses an action can take it to (for docs and checks)."""
        moves: dict[S, set[S]] = {s: set() for s in self.statuses}
        for move in self.moves.values():
            if move.goes_to is not None:
                for source in move.allowed_from:
                    if source != move.goes_to:
                        moves[source].add(move.goes_to)
        return {s: frozenset(to) for s, to in moves.items()}

    @staticmethod
    def _say(text: str, subject: str, status: enum.StrEnum) -> str:
        sentence = text.format(subject=subject, status=_words(status))
        return sentence[:1].upper() + sentence[1:]


def _words(status: enum.StrEnum) -> str:
    return status.value.replace("_", " ")
