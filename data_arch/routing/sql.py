"""Every SQL statement the router sends, in one place.

Positions are read as text (``pg_lsn::text``) and compared as integers (:mod:`.lsn`).
"""

from __future__ import annotations

#: The primary's current WAL insert position: what a replica must replay to show a write.
WAL_INSERT_LSN = "SELECT pg_current_wal_insert_lsn()::text"

#: The primary's flushed WAL position (what replicas can have received), for lag in bytes.
PRIMARY_WAL_LSN = "SELECT pg_current_wal_lsn()::text, now()"

#: A standby's replayed position: a write at X is visible there once this is >= X.
REPLAY_LSN = "SELECT pg_last_wal_replay_lsn()::text"

#: One round trip of a health probe on a replica: whether it is a standby, what it replayed,
#: whether its WAL receiver is streaming and when it last heard from the primary, and how long
#: ago it replayed its last transaction (time lag only counts when it has WAL left to replay:
#: an idle primary sends no commits, so "time since last replay" alone overstates lag).
PROBE_REPLICA = """
SELECT pg_is_in_recovery(),
       pg_last_wal_replay_lsn()::text,
       pg_last_wal_receive_lsn()::text,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
       (SELECT EXTRACT(EPOCH FROM now() - last_msg_receipt_time)::float8
          FROM pg_stat_wal_receiver LIMIT 1),
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END
"""
