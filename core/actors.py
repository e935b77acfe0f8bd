"""Who does things: a maintainer, a staff member, the system (CLI, cron, tasks) or nobody known."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ActorKind(enum.StrEnum):
    ANONYMOUS = "anonymous"
    MAINTAINER = "maintainer"
    STAFF = "staff"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    """Who did something: a maintainer, a staff member, the system (CLI, cron) or nobody known."""

    kind: ActorKind
    id: int | None = None
    label: str = ""

    @classmethod
    def system(cls, label: str = "cli") -> Actor:
        return cls(ActorKind.SYSTEM, None, label)

    @classmethod
    def anonymous(cls) -> Actor:
        return cls(ActorKind.ANONYMOUS)
