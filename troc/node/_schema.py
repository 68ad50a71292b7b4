"""The store's SQLite schema, its statements, and opening a file as a store.

Private to :mod:`troc.node.store`. The layout, and why it is keyed as it is,
is explained there. Format changes bump :data:`SCHEMA_VERSION`; a store
written by a newer troc is refused rather than misread.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from troc.errors import StoreError
from troc.node._store_retip import recompute_final_tips, witnessed_communities
from troc.protocol.entry import Entry

#: The format this code writes. A store with a higher version is refused.
SCHEMA_VERSION = 8
#: ``PRAGMA application_id``: "troc" in ASCII, so other SQLite files are told apart.
APPLICATION_ID = 0x74726F63
_VERSION_KEY = "schema_version"
#: Above any seq or timestamp (both < 2**53): "no upper bound" in range queries.
NO_BOUND = 2**62

_SCHEMA = (
    """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE genesis (
    community BLOB PRIMARY KEY,
    wire BLOB NOT NULL
) WITHOUT ROWID;

-- One row per (community, author) seen, member or payee: its log id (lid)
-- and its head (seq is NULL until the log has an entry). top is the highest
-- seq stored on any branch.
CREATE TABLE logs (
    lid INTEGER PRIMARY KEY,
    community BLOB NOT NULL,
    author BLOB NOT NULL,
    top INTEGER NOT NULL DEFAULT 0,
    seq INTEGER,
    id BLOB,
    balance INTEGER,
    lim INTEGER,
    frozen_at INTEGER,
    cut_balance INTEGER,
    frozen_credit INTEGER,
    final_seq INTEGER,
    final_id BLOB,
    final_balance INTEGER,
    undone INTEGER
);
CREATE UNIQUE INDEX logs_key ON logs (community, author);

-- Every accepted entry with its log's state right after it (Stored), and its
-- reference row inline (target_*, amount: NULL if it has none), since an
-- entry has at most one in practice; others go to more_refs. A rowid table
-- (format 7; WITHOUT ROWID before): its ~330-byte rows are appended in
-- arrival order, a few pages per commit, and only the narrow key index
-- (lid, seq, id) gets a row in each log's place; keyed by the log, each
-- commit split leaves of ~12 big rows in one place per log.
CREATE TABLE entries (
    lid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    kind TEXT NOT NULL,
    ts INTEGER NOT NULL,
    balance INTEGER NOT NULL,
    lim INTEGER NOT NULL,
    target_lid INTEGER,
    target_seq INTEGER,
    target_id BLOB,
    amount INTEGER,
    wire BLOB NOT NULL,
    PRIMARY KEY (lid, seq, id)
);
-- refs_to and refs_by: rows by their target. refs_from walks the key.
CREATE INDEX entries_by_target ON entries (target_lid, target_seq, kind)
    WHERE target_lid IS NOT NULL;

-- Reference rows that do not fit their entry's row (none from today's ledger).
CREATE TABLE more_refs (
    target_lid INTEGER NOT NULL,
    target_seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    lid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    target_id BLOB NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (target_lid, target_seq, kind, lid, seq, id, target_id)
) WITHOUT ROWID;
CREATE INDEX more_refs_from ON more_refs (lid, kind, seq);

CREATE TABLE forks (
    community BLOB NOT NULL,
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    first BLOB NOT NULL,
    second BLOB NOT NULL,
    PRIMARY KEY (community, author, seq)
) WITHOUT ROWID;

-- Entries parked until a dependency arrives, bounded by the Store's
-- WaitLimits: a pool each for members (member = 1) and strangers, per author,
-- per source peer, and a lifetime from parked_at (node clock, ms). The
-- columns after wire came with format 4 (see _migrate_waiting).
CREATE TABLE waiting (
    wid INTEGER PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    wire BLOB NOT NULL,
    community BLOB NOT NULL DEFAULT x'',
    author BLOB NOT NULL DEFAULT x'',
    member INTEGER NOT NULL DEFAULT 1,
    source TEXT,
    parked_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX waiting_pool ON waiting (member, wid);
CREATE INDEX waiting_author ON waiting (community, author);
CREATE INDEX waiting_source ON waiting (source) WHERE source IS NOT NULL;
-- No index on parked_at: it never decreases along wid (the Store clamps it),
-- so the oldest and newest entries are the ends of the table.
CREATE TABLE waiting_keys (
    community BLOB NOT NULL,
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    wid INTEGER NOT NULL,
    PRIMARY KEY (community, author, seq, id, wid)
) WITHOUT ROWID;
CREATE INDEX waiting_keys_wid ON waiting_keys (wid);

-- Derived: each member's history, newest first: its own entries and the
-- transfers addressed to it, by (timestamp, id); src_* is where the entry is.
CREATE TABLE timeline (
    lid INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    id BLOB NOT NULL,
    src_lid INTEGER NOT NULL,
    src_seq INTEGER NOT NULL,
    PRIMARY KEY (lid, ts, id)
) WITHOUT ROWID;
-- Derived: transfers not settled yet, so it stays small: 'open' until
-- answered; 'declined' until reclaimed. Accepted and reclaimed ones leave.
CREATE TABLE pending (
    payer_lid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    payee_lid INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (payer_lid, seq, id)
) WITHOUT ROWID;
CREATE INDEX pending_in ON pending (payee_lid) WHERE state = 'open';

-- Derived: offers and wants, searchable. The text lives in the entry; the
-- full-text index is contentless and joined on oid.
CREATE TABLE offers (
    oid INTEGER PRIMARY KEY,
    community BLOB NOT NULL,
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    side TEXT NOT NULL,
    ts INTEGER NOT NULL,
    expires_ms INTEGER,
    closed INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX offers_key ON offers (community, author, seq, id);
CREATE INDEX offers_by_time ON offers (community, ts);
CREATE TABLE offer_tags (
    community BLOB NOT NULL,
    tag TEXT NOT NULL,
    oid INTEGER NOT NULL,
    PRIMARY KEY (community, tag, oid)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE offers_fts USING fts5(
    title, description, tags, content='', tokenize='unicode61 remove_diacritics 2'
);
"""
    + """
-- Witnessed communities (docs/witness.md). The first valid certificate held
-- per position (its entry may not have arrived yet).
CREATE TABLE certificates (
    community BLOB NOT NULL,
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (community, author, seq)
) WITHOUT ROWID;
-- Two valid certificates for different ids at one position: proof that more
-- than f witnesses lied.
CREATE TABLE witness_faults (
    community BLOB NOT NULL,
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    first BLOB NOT NULL,
    second BLOB NOT NULL,
    PRIMARY KEY (community, author, seq)
) WITHOUT ROWID;
-- This node's vote log as a witness: per (community, author) one id per
-- seq 1..last, a chain; never rewritten (troc.protocol.witness.VoteLog).
CREATE TABLE votes (
    community BLOB NOT NULL,
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (community, author, seq)
) WITHOUT ROWID;
"""
    + """
-- Each log's final chain (witnessed communities): the entry at each seq
-- from 1 to the final tip on the tip's chain, written as the tip moves, so
-- "is this entry final?" is one lookup, also in a forked log. Keyed to grow
-- at the end of one log.
CREATE TABLE final_chain (
    lid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (lid, seq)
) WITHOUT ROWID;
"""
    + """
-- Derived (format 5, which also added logs.undone): payment requests by
-- the payer they name (payer_lid) and by their author (lid). Whether one
-- is paid or refused is not kept here: it is the payer's transfer or
-- refusal naming it, found through entries_by_target (a transfer may be
-- held before the request it pays).
CREATE TABLE requests (
    payer_lid INTEGER NOT NULL,
    lid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (payer_lid, lid, seq, id)
) WITHOUT ROWID;
CREATE INDEX requests_by ON requests (lid, seq);
"""
    + """
-- This node's void votes as a witness (format 6, docs/witness.md §3.6): an
-- entry it marked void (it lost its accept / take-back race to a certified
-- rival) gets no normal vote from it again. Few per log.
CREATE TABLE void_votes (
    community BLOB NOT NULL,
    author BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (community, author, seq, id)
) WITHOUT ROWID;
"""
)

# Version 1 to 2: final tips in logs, and the witnessed-community tables.
# Version 2 to 3: final_chain, filled from each log's final tip
# (:func:`_fill_final_chains`).
_MIGRATE_1_TO_2 = [
    "ALTER TABLE logs ADD COLUMN final_seq INTEGER",
    "ALTER TABLE logs ADD COLUMN final_id BLOB",
    "ALTER TABLE logs ADD COLUMN final_balance INTEGER",
]

# Version 3 to 4: who each parked entry is from and when it was parked (the
# waiting set's bounds). Filled in for the rows held: author and community
# from the entry, membership from the logs, and the lifetime starts now.
_WAITING_COLUMNS = {
    "community": "BLOB NOT NULL DEFAULT x''",
    "author": "BLOB NOT NULL DEFAULT x''",
    "member": "INTEGER NOT NULL DEFAULT 1",
    "source": "TEXT",
    "parked_at": "INTEGER NOT NULL DEFAULT 0",
}
_WAITING_INDEXES = ("waiting_pool", "waiting_author", "waiting_source")

_HEAD_COLUMNS = (
    "seq, id, balance, lim, frozen_at, cut_balance, frozen_credit,"
    " final_seq, final_id, coalesce(final_balance, 0), coalesce(undone, 0)"
)
_SELECT_LOG = f"SELECT lid, top, {_HEAD_COLUMNS} FROM logs WHERE community = ? AND author = ?"
_UPDATE_LOG = (
    "UPDATE logs SET top = ?, seq = ?, id = ?, balance = ?, lim = ?, frozen_at = ?,"
    " cut_balance = ?, frozen_credit = ?, final_seq = ?, final_id = ?, final_balance = ?,"
    " undone = ? WHERE lid = ?"
)
_INSERT_ENTRY = "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT_ENTRY = "SELECT balance, lim, wire FROM entries WHERE lid = ? AND seq = ? AND id = ?"
_INSERT_MORE_REF = "INSERT OR IGNORE INTO more_refs VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_REQUEST = "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?)"
# Reference rows as RefRow columns, from entries (r) or more_refs (r); the
# caller appends the WHERE clause, on columns named alike in both tables.
_SELECT_REFS = (
    "SELECT r.kind, b.author, r.seq, r.id, t.author, r.target_seq, r.target_id, r.amount"
    " FROM {table} r JOIN logs b ON b.lid = r.lid JOIN logs t ON t.lid = r.target_lid"
)
_CLOSE_OFFER = (
    "UPDATE offers SET closed = 1 WHERE community = ? AND author = ? AND seq = ? AND id = ?"
)


def prepare(
    conn: sqlite3.Connection, path: Path, cache_mib: int, *, read_only: bool = False
) -> None:
    """Check the file is a troc store of a format we read, or make it one
    (``read_only``: only check, and the format must be this code's own)."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a troc store ({exc})") from None
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and objects):
        raise StoreError(f"{path} is not a troc store (it is some other SQLite database)")
    if read_only:
        _check_read_only(conn, path, app_id)
        return
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"{path}: cannot use write-ahead logging (journal mode {mode})")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{int(cache_mib) * 1024}")
    conn.execute("PRAGMA temp_store = MEMORY")
    # A checkpoint every 40,000 pages (a WAL of up to ~160 MB), not 10,000:
    # a log's last leaf is rewritten by many commits in a row, and is copied
    # to the database once per checkpoint, so fewer checkpoints copy fewer
    # pages (1,000 logs written in turn: 12.2 -> 10.2 KB written per entry).
    conn.execute("PRAGMA wal_autocheckpoint = 40000")
    if app_id == 0:
        # A new file: the whole schema in one transaction, so a crash leaves
        # either nothing (and the next open starts again) or all of it.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(_SCHEMA):
                conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES (?, ?)", (_VERSION_KEY, str(SCHEMA_VERSION)))
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_VERSION_KEY,)).fetchone()
    try:
        version = int(row[0]) if row is not None else -1
    except ValueError:
        version = -1
    if version < 1:
        raise StoreError(f"{path} is a damaged troc store (no schema version)")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} is in store format {version}, newer than this troc reads"
            f" ({SCHEMA_VERSION}): upgrade troc"
        )
    if version < SCHEMA_VERSION:
        # A migration may sort or copy a whole table (format 7's rebuild and
        # VACUUM): through temporary files, not memory. In memory, a server's
        # 1,000,000-entry store peaked at ~660 MB of RAM (168 MB at 200,000
        # entries; on disk, 89 MB), more than a small server may have.
        conn.execute("PRAGMA temp_store = FILE")
        _migrate(conn, version, path)
        if version < 7:
            # The old entries table's pages are free now: give them back
            # rather than keep the file at twice its size until reused.
            conn.execute("VACUUM")
        conn.execute("PRAGMA temp_store = MEMORY")


def _check_read_only(conn: sqlite3.Connection, path: Path, app_id: int) -> None:
    conn.execute(f"PRAGMA cache_size = -{8 * 1024}")
    row = None
    if app_id == APPLICATION_ID:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (_VERSION_KEY,)).fetchone()
    if row is None or row[0] != str(SCHEMA_VERSION):
        raise StoreError(
            f"{path} cannot be read where it cannot be written: it is new, or in another"
            f" store format than this troc's ({SCHEMA_VERSION}); open it once from a writable home"
        )


def _migrate(conn: sqlite3.Connection, version: int, path: Path) -> None:
    """Bring an older store up to SCHEMA_VERSION, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if version < 2:
            for statement in _MIGRATE_1_TO_2:
                conn.execute(statement)
            for name in ("certificates", "witness_faults", "votes"):
                _create(conn, name)
            # Logs of witnessed communities start with no final entry.
            for community in witnessed_communities(conn):
                conn.execute(
                    "UPDATE logs SET final_seq = 0, final_balance = 0 WHERE community = ?",
                    (community,),
                )
        if version < 3:
            _create(conn, "final_chain")
            _fill_final_chains(conn)
        if version < 4:
            _migrate_waiting(conn)
        if version < 5:
            if "undone" not in {row[1] for row in conn.execute("PRAGMA table_info(logs)")}:
                conn.execute("ALTER TABLE logs ADD COLUMN undone INTEGER")
            # IF NOT EXISTS: a hand-made older file (the tests') may have them.
            for statement in _statements(_SCHEMA):
                if (
                    "CREATE TABLE requests " in statement
                    or "CREATE INDEX requests_by " in statement
                ):
                    conn.execute(statement.replace(" requests", " IF NOT EXISTS requests", 1))
            # No store of an older format holds a request (older code refuses
            # the kind), so there is nothing to fill in.
        if version < 6:
            # No older store holds a void vote: older code signs none. IF NOT
            # EXISTS: a hand-made older file (the tests') may have the table.
            (statement,) = [s for s in _statements(_SCHEMA) if "CREATE TABLE void_votes " in s]
            conn.execute(statement.replace(" void_votes", " IF NOT EXISTS void_votes", 1))
        if version < 7:
            _rebuild_entries(conn)
        if version < 8:
            # Final tips stored under the rule before format 6, which let a
            # tip pass a raceable entry (a take-back, an accept of a transfer
            # that expires, a lapse, a successful close) on a later entry's
            # certificate alone: cut back to where today's ledger puts them
            # (docs/witness.md §8, "Old final tips"). Format 6 and 7 stores
            # may hold such tips too (they kept an older store's), so every
            # store below 8 is checked; only witnessed communities' logs.
            recompute_final_tips(conn, path)
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(SCHEMA_VERSION), _VERSION_KEY))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _create(conn: sqlite3.Connection, table: str) -> None:
    """Create one table of the current schema."""
    (statement,) = [s for s in _statements(_SCHEMA) if f"CREATE TABLE {table} " in s]
    conn.execute(statement)


def _rebuild_entries(conn: sqlite3.Connection) -> None:
    """Format 6 to 7: the entries table as a rowid table (the same columns,
    key and index), its rows copied in key order."""
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'entries'").fetchone()
    if "WITHOUT ROWID" not in sql.upper():
        return  # a hand-made older file (the tests') may have it already
    statements = _statements(_SCHEMA)
    (table,) = [s for s in statements if "CREATE TABLE entries " in s]
    (index,) = [s for s in statements if "CREATE INDEX entries_by_target " in s]
    columns = ", ".join(row[1] for row in conn.execute("PRAGMA table_info(entries)"))
    conn.execute(table.replace("CREATE TABLE entries ", "CREATE TABLE entries_7 ", 1))
    conn.execute(
        f"INSERT INTO entries_7 ({columns}) SELECT {columns} FROM entries ORDER BY lid, seq, id"
    )
    conn.execute("DROP TABLE entries")  # and its index
    conn.execute("ALTER TABLE entries_7 RENAME TO entries")
    conn.execute(index)


def _fill_final_chains(conn: sqlite3.Connection) -> None:
    """Record every log's final chain: from its final tip down the prev links."""
    logs = conn.execute(
        "SELECT lid, final_seq, final_id FROM logs WHERE final_seq > 0 AND final_id IS NOT NULL"
    ).fetchall()
    for lid, seq, eid in logs:
        rows = []
        while seq >= 1:
            rows.append((lid, seq, eid))
            if seq == 1:
                break
            row = conn.execute(
                "SELECT wire FROM entries WHERE lid = ? AND seq = ? AND id = ?", (lid, seq, eid)
            ).fetchone()
            if row is None:  # a final tip's chain is held, unless the file was altered
                raise StoreError(f"log {lid}: its final chain lacks seq {seq}: store damaged")
            eid = Entry.decode(row[0], check_signature=False).prev
            seq -= 1
        conn.executemany("INSERT INTO final_chain VALUES (?, ?, ?)", rows)


def _migrate_waiting(conn: sqlite3.Connection) -> None:
    """Format 3 to 4: the waiting set's new columns, filled in, and indexes."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(waiting)")}
    for column, decl in _WAITING_COLUMNS.items():
        if column not in have:
            conn.execute(f"ALTER TABLE waiting ADD COLUMN {column} {decl}")
    for statement in _statements(_SCHEMA):
        if any(f"CREATE INDEX {name} " in statement for name in _WAITING_INDEXES):
            conn.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
    now = int(time.time() * 1000)
    for wid, wire in conn.execute("SELECT wid, wire FROM waiting").fetchall():
        entry = Entry.decode(wire, check_signature=False)
        member = conn.execute(
            "SELECT 1 FROM logs WHERE community = ? AND author = ? AND seq IS NOT NULL",
            (entry.community, entry.author),
        ).fetchone()
        conn.execute(
            "UPDATE waiting SET community = ?, author = ?, member = ?, parked_at = ? WHERE wid = ?",
            (entry.community, entry.author, member is not None, now, wid),
        )


def _statements(script: str) -> list[str]:
    """Split the schema into statements (executescript would COMMIT on its own)."""
    out: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(current))
            current = []
    return out
