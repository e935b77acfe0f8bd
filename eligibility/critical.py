"""The critical projects: versioned lists computed from download statistics, and lookups.

Each import reads a whole file first (see ``downloads``), then writes one new list with its
members, its difference from the list before, and the ranks of the projects we know
maintainers of. Importing the same file with the same parameters again changes nothing. With
stickiness on (the default), a project once critical stays on every later list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

import sqlalchemy as sa
from sqlmodel import Session, col, select

from core import tasks
from core.actors import Actor
from core.audit import record_event
from core.db import utcnow
from eligibility.downloads import MAX_RANK, Progress, rank_projects, read_download_file
from eligibility.errors import CriticalListNotFound, ImportRejected, InvalidProjectName
from eligibility.models import CriticalChange, CriticalEntry, CriticalList, Project, ProjectRanking
from eligibility.names import is_valid_project_name, normalize_project_name


@dataclass(frozen=True)
class ImportSummary:
    """What an import did; ``unchanged`` when the same inputs were imported already."""

    critical_list: CriticalList
    unchanged: bool

    def as_dict(self) -> dict[str, object]:
        critical = self.critical_list
        return {
            "list_id": critical.id,
            "total_projects": critical.total_projects,
            "critical_count": critical.critical_count,
            "cutoff_rank": critical.cutoff_rank,
            "cutoff_downloads": critical.cutoff_downloads,
            "added": 0 if self.unchanged else critical.added_count,
            "removed": 0 if self.unchanged else critical.removed_count,
            "unchanged": self.unchanged,
        }


@dataclass(frozen=True)
class ProjectStanding:
    """Where one project stands on the current list, for the public lookup and decisions."""

    name: str
    critical: bool
    rank: int | None
    downloads: int | None
    critical_list: CriticalList

    @property
    def sticky_only(self) -> bool:
        """Critical only because it was critical before."""
        return self.critical and (self.rank is None or self.rank > self.critical_list.cutoff_rank)


NOTICES_TASK = "eligibility.notify"


def import_download_statistics(
    *,
    session: Session,
    actor: Actor,
    stream: IO[bytes],
    source_name: str,
    percent: float,
    sticky: bool,
    total_projects: int | None = None,
    on_progress: Progress | None = None,
) -> ImportSummary:
    """Read a statistics file and record the critical list it gives (or find it recorded)."""
    table = read_download_file(stream, on_progress=on_progress)
    if not table.has_counts and total_projects is None:
        raise ImportRejected(
            "a ranking without download counts needs the total number of projects "
            "(--total-projects N), because the file lists only the top of the ranking"
        )
    total = total_projects if total_projects is not None else len(table.values)
    if total > MAX_RANK:
        raise ImportRejected(f"the total number of projects cannot be more than {MAX_RANK:,}")
    if total < len(table.values):
        raise ImportRejected(
            f"the total number of projects ({total:,}) is smaller than the number of "
            f"projects in the file ({len(table.values):,})"
        )
    fingerprint = hashlib.sha256(
        f"{table.sha256}|{total}|{percent!r}|{sticky}".encode()
    ).hexdigest()

    _lock_lists(session)
    previous = current_list(session=session)
    if previous is not None and previous.fingerprint == fingerprint:
        return ImportSummary(previous, unchanged=True)

    previous_names = _member_names(session, previous)
    known = set(session.exec(select(Project.name)).all())
    ranking = rank_projects(
        table, total_projects=total, percent=percent, wanted=known | previous_names
    )
    ranked_names = {project.name for project in ranking.top}
    kept = (previous_names - ranked_names) if sticky else set()
    members = ranked_names | kept
    added = sorted(members - previous_names) if previous is not None else []
    removed = sorted(previous_names - members)

    critical = CriticalList(
        created_at=utcnow(),
        source_name=source_name[:255],
        source_sha256=table.sha256,
        source_format=table.source_format,
        fingerprint=fingerprint,
        total_projects=total,
        ranked_projects=ranking.ranked_projects,
        percent=percent,
        sticky=sticky,
        cutoff_rank=ranking.cutoff_rank,
        cutoff_downloads=ranking.cutoff_downloads,
        critical_count=len(members),
        added_count=len(added),
        removed_count=len(removed),
    )
    session.add(critical)
    session.flush()
    list_id = critical.id
    entries = [
        {
            "list_id": list_id,
            "project_name": p.name,
            "rank": p.rank,
            "downloads": p.downloads,
            "sticky": False,
        }
        for p in ranking.top
    ]
    for name in sorted(kept):
        standing = ranking.others.get(name)
        entries.append(
            {
                "list_id": list_id,
                "project_name": name,
                "rank": standing.rank if standing else None,
                "downloads": standing.downloads if standing else None,
                "sticky": True,
            }
        )
    _insert(session, CriticalEntry, entries)
    _insert(
        session,
        CriticalChange,
        [{"list_id": list_id, "project_name": n, "change": "added"} for n in added]
        + [{"list_id": list_id, "project_name": n, "change": "removed"} for n in removed],
    )
    rankings = [p for p in ranking.top if p.name in known] + list(ranking.others.values())
    _insert(
        session,
        ProjectRanking,
        [
            {"list_id": list_id, "project_name": p.name, "rank": p.rank, "downloads": p.downloads}
            for p in rankings
        ],
    )
    record_event(
        session=session,
        actor=actor,
        action="critical_list.imported",
        subject_kind="critical_list",
        subject_id=list_id,
        details={
            "source": critical.source_name,
            "sha256": table.sha256,
            "total_projects": total,
            "cutoff_rank": critical.cutoff_rank,
            "critical_count": critical.critical_count,
            "added": added[:100],
            "removed": removed[:100],
            "added_count": len(added),
            "removed_count": len(removed),
        },
    )
    # Whoever the new list made eligible hears so once it is committed (eligibility.notify).
    tasks.enqueue(session=session, name=NOTICES_TASK)
    return ImportSummary(critical, unchanged=False)


def current_list(*, session: Session) -> CriticalList | None:
    return session.exec(select(CriticalList).order_by(col(CriticalList.id).desc()).limit(1)).first()


def get_list(*, session: Session, list_id: int) -> CriticalList:
    critical = session.get(CriticalList, list_id)
    if critical is None:
        raise CriticalListNotFound(f"There is no critical list {list_id}.")
    return critical


def is_first_list(*, session: Session, critical_list: CriticalList) -> bool:
    """Whether no list came before this one (so it has no differences to show)."""
    earlier = select(CriticalList.id).where(col(CriticalList.id) < critical_list.id).limit(1)
    return session.exec(earlier).first() is None


def list_history(*, session: Session, limit: int = 20) -> list[CriticalList]:
    return list(
        session.exec(select(CriticalList).order_by(col(CriticalList.id).desc()).limit(limit)).all()
    )


def list_changes(*, session: Session, critical_list: CriticalList) -> list[CriticalChange]:
    return list(
        session.exec(
            select(CriticalChange)
            .where(CriticalChange.list_id == critical_list.id)
            .order_by(col(CriticalChange.change), col(CriticalChange.project_name))
        ).all()
    )


def standings(*, session: Session, names: list[str]) -> dict[str, ProjectStanding]:
    """Where each of ``names`` (normalised) stands on the current list; empty without one."""
    critical = current_list(session=session)
    if critical is None or not names:
        return {}
    members = {
        entry.project_name: entry
        for entry in session.exec(
            select(CriticalEntry).where(
                CriticalEntry.list_id == critical.id, col(CriticalEntry.project_name).in_(names)
            )
        ).all()
    }
    ranked = {
        row.project_name: row
        for row in session.exec(
            select(ProjectRanking).where(
                ProjectRanking.list_id == critical.id, col(ProjectRanking.project_name).in_(names)
            )
        ).all()
    }
    result = {}
    for name in names:
        entry, rank = members.get(name), ranked.get(name)
        source = entry or rank
        result[name] = ProjectStanding(
            name=name,
            critical=entry is not None,
            rank=source.rank if source else None,
            downloads=source.downloads if source else None,
            critical_list=critical,
        )
    return result


def look_up_project(*, session: Session, name: str) -> ProjectStanding | None:
    """The public answer to "is this project critical?" (None before any list exists)."""
    if not is_valid_project_name(name):
        raise InvalidProjectName(f"{name[:80]!r} is not a valid PyPI project name.")
    normalized = normalize_project_name(name)
    return standings(session=session, names=[normalized]).get(normalized)


def _member_names(session: Session, critical: CriticalList | None) -> set[str]:
    if critical is None:
        return set()
    return set(
        session.exec(
            select(CriticalEntry.project_name).where(CriticalEntry.list_id == critical.id)
        ).all()
    )


def _insert(session: Session, table: type, rows: Sequence[Mapping[str, object]]) -> None:
    if rows:
        session.execute(sa.insert(table), rows)


def _lock_lists(session: Session) -> None:
    """Serialise imports, so two at once cannot both diff against the same previous list.
    (SQLite transactions already take the write lock when they begin.)"""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(7301)"))
