"""Leases between workers: what lets a worker keep responses that read other workers' keys
without Redis, and serve them with no call at all.

A worker caching a response that read keys of an owner must hear of every later change
of those keys. The owner tells it, before writing a change, by pushing the changed keys
(:mod:`mesh.cache.peers`) — but only to the workers it knows to be listening. A lease is
that knowledge, shared by both sides:

* the reader asks each owner for a lease (``asked_at`` on its own clock), and holds it
  until ``asked_at + lease_s`` (:class:`HeldLeases`);
* the owner records the grant until ``received + lease_s`` on its clock
  (:class:`GrantedLeases`); a request is received after it is sent, so the owner's grant
  ends no sooner than the reader's lease. While a grant runs, the owner pushes every
  change to that reader before writing it; when a push fails it revokes the grant,
  refuses renewals until the grant has ended, and waits for that end before writing.

So whenever a reader holds a lease, the owner is pushing to it or waiting it out. A lease
that lapsed may have missed a change: taking one again starts a new *epoch*, and a
response recorded under an older epoch is never served (see :class:`HeldLeases.epoch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

_MARGIN = 0.9
"""The share of ``lease_s`` a reader counts on: clocks of two machines run at slightly
different rates, and the reader must stop first."""


class HeldLeases:
    """The leases this worker holds from its peers, as the reader."""

    def __init__(self, lease_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_s = lease_s
        self.clock = clock
        self.epoch = 0
        """Bumped whenever a lease is taken that was not held without a break until then
        (a new peer, or one whose lease lapsed and so may have written unannounced)."""
        self._until: dict[str, float] = {}

    def granted(self, owner: str, asked_at: float) -> None:
        """``owner`` granted the lease asked for at ``asked_at`` (this worker's clock)."""
        if self.clock() >= self._until.get(owner, float("-inf")):
            self.epoch += 1
        self._until[owner] = max(self._until.get(owner, 0.0), asked_at + self.lease_s * _MARGIN)

    def refused(self, owner: str) -> None:
        """``owner`` refused a renewal: it revoked the lease, which ends now."""
        if owner in self._until:
            self._until[owner] = float("-inf")
            self.epoch += 1

    def valid(self, owners: Iterable[str], epoch: int) -> bool:
        """Whether a response recorded under ``epoch`` that read keys of ``owners`` is
        still covered: same epoch, and a lease of each owner running now."""
        if epoch != self.epoch:
            return False
        now = self.clock()
        return all(self._until.get(owner, float("-inf")) > now for owner in owners)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the leases of peers no longer in the fleet (all but ``keep``)."""
        kept = set(keep)
        for owner in [o for o in self._until if o not in kept]:
            del self._until[owner]


class GrantedLeases:
    """The leases this worker granted to its peers, as the owner of keys."""

    def __init__(self, lease_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_s = lease_s
        self.clock = clock
        self._until: dict[str, float] = {}
        self._revoked: dict[str, float] = {}

    def grant(self, reader: str) -> bool:
        """Grant (or renew) ``reader``'s lease; ``False`` while it is revoked."""
        now = self.clock()
        if self._revoked.get(reader, float("-inf")) > now:
            return False
        self._revoked.pop(reader, None)
        self._until[reader] = now + self.lease_s
        return True

    def holders(self) -> list[str]:
        """The readers whose grant runs now: every change must reach them first."""
        now = self.clock()
        return [reader for reader, until in self._until.items() if until > now]

    def ended(self, reader: str) -> bool:
        """Whether ``reader``'s last grant (revoked or not) has ended: only then may a
        change be written without reaching it."""
        now = self.clock()
        last = max(self._until.get(reader, float("-inf")), self._revoked.get(reader, float("-inf")))
        return last <= now

    def revoke(self, reader: str) -> float:
        """Stop granting to ``reader`` (a push to it failed) until its grant has ended;
        returns the seconds until then, which the caller must wait before writing."""
        until = self._until.pop(reader, float("-inf"))
        remaining = until - self.clock()
        if remaining <= 0:
            return 0.0
        self._revoked[reader] = until
        return remaining
