"""data_arch's models (each lives with its capability; Django finds them here)."""

from data_arch.backfills.models import BackfillCursor

__all__ = ["BackfillCursor"]
