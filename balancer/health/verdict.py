"""Whether a real server is up: HAProxy's rise/fall counter as one pure transition.

HAProxy keeps a single ``health`` counter per server in ``0 .. rise+fall-1``: values below
``rise`` mean down, the rest mean up. A pass counts up and a fail counts down, but crossing into
the other half snaps the counter to its far end. So a fully up server needs ``fall`` failures in
a row to go down, and a single pass in between restores it; a down server needs ``rise`` passes
in a row to come up, and a single failure in between sends it back to zero.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    up: bool
    health: int
    rise: int
    fall: int

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"rise and fall must be at least 1, not {self.rise}/{self.fall}")
        if not 0 <= self.health <= self.rise + self.fall - 1:
            raise ValueError(f"health {self.health} is outside 0..{self.rise + self.fall - 1}")
        if self.up != (self.health >= self.rise):
            raise ValueError(f"health {self.health} contradicts up={self.up} with rise {self.rise}")


def initial(rise: int, fall: int) -> Verdict:
    """Up, but on the edge: a server that is dead at start goes down on its first failed check."""
    return Verdict(up=True, health=rise, rise=rise, fall=fall)


def apply(verdict: Verdict, passed: bool) -> tuple[Verdict, bool]:
    """The verdict after one check, and whether ``up`` changed."""
    top = verdict.rise + verdict.fall - 1
    if passed:
        health = min(verdict.health + 1, top)
        if health >= verdict.rise:
            health = top
    else:
        health = max(verdict.health - 1, 0)
        if health < verdict.rise:
            health = 0
    if health == verdict.health:
        return verdict, False  # a steady server's every check: nothing new to allocate
    up = health >= verdict.rise
    return Verdict(up, health, verdict.rise, verdict.fall), up != verdict.up
