"""A stream entry as text: the one shape the operator's side (the CLI and
the dashboard) reads dead letters, history records and queue entries into.

Invalid UTF-8 is replaced (U+FFFD): that only matters for display; anything
that moves an entry (requeue.lua) copies the raw bytes in Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Type, TypeVar

__all__ = ["TextEntry"]

_E = TypeVar("_E", bound="TextEntry")


@dataclass(frozen=True, eq=False)
class TextEntry:
    """One stream entry: its id and every field, decoded as text, in the stream's order."""

    id: str
    fields: Mapping[str, str]

    @classmethod
    def from_redis(cls: Type[_E], entry_id: bytes, raw: Mapping[bytes, bytes]) -> _E:
        """Build from an ``XRANGE``/``XREVRANGE`` item (bytes id, bytes field map)."""
        return cls(entry_id.decode(), {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                                       for k, v in raw.items()})

    @property
    def ms(self) -> int:
        """The epoch milliseconds of the entry's id (when Redis added it)."""
        return int(self.id.split("-", 1)[0])
