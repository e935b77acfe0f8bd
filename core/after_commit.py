"""The one after-commit queue: work that must happen only once what a session wrote is committed.

Mail delivery, state-change log lines and the start of label runs are registered here with
``on_commit(session, callback)`` and run, in the order registered, after the session's
outermost transaction commits. A rolled-back transaction drops what was registered in it and
only that: SQLAlchemy announces savepoints (``begin_nested``) with the same ``after_commit``
and ``after_rollback`` events as the real transaction, so a callback is tied to the
transaction it was registered in. A released savepoint hands its callbacks to its parent; a
savepoint rolled back forgets its own (and its children's); the outermost commit runs the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

_QUEUE = "keys_after_commit"
_log = logging.getLogger("keys.after_commit")


@dataclass
class _Entry:
    transaction: SessionTransaction
    callback: Callable[[], None]


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the outermost transaction of ``session`` commits; never if the
    transaction (or the savepoint it was registered in) rolls back."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:  # nothing begun: the next statement begins the transaction
        transaction = session.begin()
    session.info.setdefault(_QUEUE, []).append(_Entry(transaction, callback))


def _queue(session: Session) -> list[_Entry]:
    queue: list[_Entry] = session.info.get(_QUEUE, [])
    return queue


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    nested = session.get_nested_transaction()
    if nested is not None:  # a savepoint released: its work now belongs to the one around it
        for entry in _queue(session):
            if entry.transaction is nested and nested.parent is not None:
                entry.transaction = nested.parent
        return
    entries = session.info.pop(_QUEUE, [])
    for entry in entries:
        try:
            entry.callback()
        except Exception:
            # The transaction is committed: one failed side effect must not hide it or stop
            # the others (mail that fails stays pending for a retry).
            _log.exception("An after-commit callback failed")


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    queue = _queue(session)
    if queue:
        queue[:] = [e for e in queue if not _within(e.transaction, previous_transaction)]


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False
