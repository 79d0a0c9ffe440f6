"""Open objects across all streams: which user owns each object id, and expiry of idle ones."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass(eq=False)
class Claim:
    """One user's hold on one object id; detach(reason) takes the object away from its stream."""

    object_id: str
    user: str
    detach: Callable[[str], None]
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0  # requests of this object in progress; a busy object never expires


class ObjectOwnership:
    """Object ids are the users' own: each user has their own namespace of ids, so one user can neither
    open nor drive another user's object, nor learn whether an id is in use by someone else.

    The same user opening an object again (a reconnect) takes it over from the older stream.
    Objects idle for longer than idle_seconds are detached, which frees their memory.
    Used from the server's event loop only.
    """

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._claims: dict[tuple[str, str], Claim] = {}  # (user, object id)

    def __len__(self) -> int:
        return len(self._claims)

    def claim(self, object_id: str, user: str, detach: Callable[[str], None]) -> Claim:
        """Takes the user's object_id, detaching it from the user's older stream if one holds it."""
        held = self._claims.get((user, object_id))
        if held is not None:
            held.detach(f"object {object_id} was opened again on another stream")
        claim = Claim(object_id, user, detach, self._clock())
        self._claims[user, object_id] = claim
        return claim

    @contextmanager
    def using(self, claim: Claim) -> Iterator[None]:
        """Marks the object busy for the block (it cannot expire meanwhile) and used at its end."""
        claim.busy += 1
        try:
            yield
        finally:
            claim.busy -= 1
            claim.last_used = self._clock()

    def release(self, claim: Claim) -> None:
        """Forgets the claim (finish, stream closed); a newer claim of the same id is left alone."""
        if self._claims.get((claim.user, claim.object_id)) is claim:
            del self._claims[claim.user, claim.object_id]

    def expire_idle(self) -> list[str]:
        """Detaches and forgets every object idle for longer than idle_seconds; returns their ids."""
        cutoff = self._clock() - self.idle_seconds
        expired = [claim for claim in self._claims.values() if not claim.busy and claim.last_used < cutoff]
        for claim in expired:
            del self._claims[claim.user, claim.object_id]
            claim.detach(
                f"object {claim.object_id} expired after {self.idle_seconds:.0f} s without a request; open it again"
            )
        return [claim.object_id for claim in expired]
