"""The mark beside the store: what the member's key signed, per community.

The store alone cannot tell that it lost entries (emptied, deleted, restored
from an old backup), and signing from such a store forks the member's log
for good. So the home keeps ``signed.json`` (:mod:`troc.node.homefiles`):
per community, the last own entry signed and the community's genesis,
written after each own entry is durable and before it leaves the node.
:class:`SignedMarks` reads and writes it and says when the store is behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from troc.crypto.ids import encode_id
from troc.crypto.sign import MemberId
from troc.errors import StoreError
from troc.node import homefiles
from troc.node.store import Store
from troc.protocol.entry import CommunityId, Entry

__all__ = ["SignedMarks", "StagedMarks"]

logger = logging.getLogger(__name__)


class SignedMarks:
    """The marks of one member's home, over its store."""

    def __init__(self, home: Path, store: Store, member: MemberId) -> None:
        self.home = home
        self.store = store
        self.member = member
        self._signed: dict[bytes, homefiles.SignedMark] | None = None  # read when first needed

    def _marks(self) -> dict[bytes, homefiles.SignedMark]:
        """The home's marks, read once. A home from before the marks gets
        them from its store (the best it can know)."""
        if self._signed is None:
            marks = homefiles.signed_marks(self.home)
            if marks is None:
                marks = {}
                for g in self.store.communities():
                    head = self.store.head(CommunityId(g.id), self.member)
                    if head is not None:
                        marks[g.id] = homefiles.SignedMark(head.seq, head.id, g.wire)
                self._write(marks)
            self._signed = marks
        return self._signed

    def _write(self, marks: dict[bytes, homefiles.SignedMark]) -> None:
        try:
            homefiles.write_signed_marks(self.home, marks)
        except OSError as exc:  # the entry is durable in the store: go on, loudly
            logger.warning("cannot record what was signed in %s: %s", self.home, exc)

    def behind(self) -> list[tuple[CommunityId, int, int | None]]:
        """Communities where the store holds less of the member's own log than
        the mark: ``(community, last seq signed, stored head seq or None)``.

        Raises LocalProtocolError if the home's ``signed.json`` is damaged.
        """
        out = []
        for c, mark in sorted(self._marks().items()):
            head = self.store.head(CommunityId(c), self.member)
            if head is None or head.seq < mark.seq:
                out.append((CommunityId(c), mark.seq, None if head is None else head.seq))
        return out

    def lost(self) -> list[tuple[bytes, bytes]]:
        """(community id, genesis wire) of each marked community the store
        does not follow any more."""
        return [
            (c, mark.genesis)
            for c, mark in self._marks().items()
            if self.store.genesis(CommunityId(c)) is None
        ]

    def check(self) -> None:
        """Raise StoreError (one line: what happened, what to do) while the
        store is behind the mark: signing would fork the log."""
        behind = self.behind()
        if not behind:
            return
        community, seq, have = behind[0]
        held = "none of it" if have is None else f"it only up to seq {have}"
        raise StoreError(
            f"this key signed up to seq {seq} of its log in community"
            f" {encode_id('c', community)[:14]}… but the store holds {held}"
            " (emptied, deleted or restored from an old backup): nothing is signed"
            " until the log is back. Run the node with a peer that has your log"
            " (troc run --bootstrap ADDR) until it has synced, or restore store.sqlite"
            " from a backup"
        )

    def stage(self, entries: list[Entry]) -> StagedMarks | None:
        """The marks of the member's own entries among ``entries``, written
        beside the file and fsynced on a worker thread, while the store
        commits them (call it in the transaction that stores them: the store
        is read); None if they mark nothing new. The caller passes them to
        :meth:`settle` once the commit is durable, or abandons them
        (``StagedMarks.write.abandon``) if it failed: a mark ahead of the
        store would block signing for good."""
        marks = self._marks()
        new: dict[bytes, homefiles.SignedMark] | None = None
        for e in entries:
            if e.author == self.member and e.community is not None:
                old = (marks if new is None else new).get(e.community)
                if old is None or e.seq > old.seq:
                    genesis = self.store.genesis(e.community)
                    assert genesis is not None  # the entry was just accepted
                    new = dict(marks) if new is None else new
                    new[e.community] = homefiles.SignedMark(e.seq, e.id, genesis.wire)
        if new is None:
            return None
        try:
            write = homefiles.stage_signed_marks(self.home, new)
        except OSError as exc:
            logger.warning("cannot record what was signed in %s: %s", self.home, exc)
            write = None
        return StagedMarks(new, write)

    def settle(self, staged: StagedMarks | None) -> None:
        """Put staged marks in place (their entries are durable now)."""
        if staged is None:
            return
        self._signed = staged.marks
        if staged.write is not None:
            try:
                staged.write.commit()
            except OSError as exc:  # the entry is durable in the store: go on, loudly
                logger.warning("cannot record what was signed in %s: %s", self.home, exc)


@dataclass(slots=True)
class StagedMarks:
    """Marks of entries being committed (:meth:`SignedMarks.stage`)."""

    marks: dict[bytes, homefiles.SignedMark]
    write: homefiles.StagedJson | None
