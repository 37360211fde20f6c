"""How a careful solver works reasoning-gym's puzzles, one checked step at a time.

A `Procedure` turns a puzzle (the dataset entry's metadata, so the numbers are the
generator's own) into steps: each `Move` is a calculation and its result, the work left
after it, whether its operands are large (a visible hard step), and, where the step rests on
a premise that is easy to get wrong, the same step on the wrong premise with its arithmetic
right (a silent hard step). reasoning.py plays them.

- `chain_sum`: one term per step, left to right. A minus followed by a plus tempts the
  solver to subtract both ("33 - (30 + 8)").
- `leg_counting`: one kind of animal per step, added to the running total. Some animals'
  legs are often miscounted (MISCOUNTED).
- `base_conversion`: Horner's rule to decimal, a digit per step, then division by the
  target base, one digit per step. A source digit written as a letter is easy to misread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

# Each task's generator settings: puzzles of some 4 to 8 steps.
TASKS: tuple[tuple[str, dict[str, int]], ...] = (
    ("chain_sum", {"min_terms": 4, "max_terms": 7, "min_digits": 1, "max_digits": 3}),
    ("leg_counting", {"min_animals": 3, "max_animals": 6, "max_instances": 15}),
    ("base_conversion", {"min_base": 5, "max_base": 16, "min_value": 50, "max_value": 999}),
)
# The leg counts a weak model takes for the right ones: a silent hard step.
MISCOUNTED = {"spider": 6, "scorpion": 6, "starfish": 4, "crab": 8, "lobster": 8, "woodlouse": 12}
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Move:
    """One step of a procedure: what it computes, and the work left after it."""

    calculation: str
    result: str
    after: Any
    premise: str = ""
    large: bool = False  # (i): large operands, visible in the newest observation
    misread: Move | None = None  # (iii): the step on a wrong premise, its arithmetic right

    @property
    def text(self) -> str:
        sum_ = f"{self.calculation} = {self.result}"
        return f"{self.premise}, so {sum_}" if self.premise else sum_


class Procedure(Protocol):
    """How a careful solver works one kind of puzzle, a checked step at a time."""

    def start(self, meta: Mapping[str, Any]) -> Any: ...

    def view(self, state: Any) -> str:
        """What is left, as the checker shows it."""
        ...

    def move(self, state: Any) -> Move | None:
        """The next step; None when only the final answer is left."""
        ...

    def answer(self, state: Any) -> str: ...


class ChainSum:
    """One term per step, left to right; state (running value, (sign, term)...)."""

    def start(self, meta: Mapping[str, Any]) -> Any:
        tokens = str(meta["expression"]).split()
        return int(tokens[0]), tuple(zip(tokens[1::2], map(int, tokens[2::2]), strict=True))

    def view(self, state: Any) -> str:
        value, terms = state
        rest = " ".join(f"{sign} {term}" for sign, term in terms) or "nothing"
        return f"Running value: {value}. Still to apply: {rest}."

    def move(self, state: Any) -> Move | None:
        value, terms = state
        if not terms:
            return None
        (sign, term), rest = terms[0], terms[1:]
        after = value + term if sign == "+" else value - term
        misread = None
        if sign == "-" and rest and rest[0][0] == "+" and rest[0][1]:  # subtracts both
            grouped = value - term - rest[0][1]
            misread = Move(f"{value} - ({term} + {rest[0][1]})", str(grouped), (grouped, rest[1:]))
        large = carries(value, term if sign == "+" else -term) >= 2
        return Move(f"{value} {sign} {term}", str(after), (after, rest), "", large, misread)

    def answer(self, state: Any) -> str:
        return str(state[0])


def carries(a: int, b: int) -> int:
    """The carries (or borrows) of working out a + b by hand, column by column: the
    magnitudes are added when the signs agree, else the smaller is taken from the larger."""
    x, y = sorted((abs(a), abs(b)), reverse=True)
    subtract, count, carry = (a < 0) != (b < 0), 0, 0
    while y or (carry and x):
        dx, dy = x % 10, y % 10
        carry = int(dx - carry < dy) if subtract else int(dx + dy + carry >= 10)
        count, x, y = count + carry, x // 10, y // 10
    return count


class LegCount:
    """One kind of animal per step, added to the total; state (total, (animal, count)...)."""

    def __init__(self, legs: Mapping[str, int]) -> None:
        self.legs = legs

    def start(self, meta: Mapping[str, Any]) -> Any:
        return 0, tuple((str(animal), int(n)) for animal, n in meta["animals"].items())

    def view(self, state: Any) -> str:
        total, rest = state
        todo = ", ".join(f"{n} {animal}{'s' if n > 1 else ''}" for animal, n in rest)
        return f"Legs so far: {total}. Still to count: {todo or 'nothing'}."

    def move(self, state: Any) -> Move | None:
        total, rest = state
        if not rest:
            return None
        (animal, n), later = rest[0], rest[1:]
        article = "an" if animal[0] in "aeiou" else "a"

        def counted(legs: int) -> Move:
            calculation = f"{total} + {n} × {legs}" if total else f"{n} × {legs}"
            after = total + n * legs
            premise = f"{article} {animal} has {legs} legs"
            return Move(calculation, str(after), (after, later), premise)

        wrong = MISCOUNTED.get(animal)
        misread = counted(wrong) if wrong is not None else None
        return replace(counted(self.legs[animal]), large=n >= 10 and total >= 100, misread=misread)

    def answer(self, state: Any) -> str:
        return str(state[0])


class BaseConversion:
    """Horner's rule to decimal, a digit per step, then division by the target base;
    state (source base, target base, value, digits left, remainders so far)."""

    def start(self, meta: Mapping[str, Any]) -> Any:
        source, target = int(meta["source_base"]), int(meta["target_base"])
        digits = str(meta["source_repr"])
        if source == 10:
            return source, target, int(digits), "", ()
        return source, target, DIGITS.index(digits[0]), digits[1:], ()

    def view(self, state: Any) -> str:
        source, target, value, digits, remainders = state
        if digits:
            return f"Value so far: {value}. Base-{source} digits left: {' '.join(digits)}."
        if target == 10:
            return f"Decimal value: {value}. Nothing left to convert."
        done = ", ".join(DIGITS[r] for r in remainders) or "none"
        if value == 0:
            return f"Base-{target} digits, last first: {done}. Nothing left to divide."
        return f"Left to divide by {target}: {value}. Base-{target} digits, last first: {done}."

    def move(self, state: Any) -> Move | None:
        source, target, value, digits, remainders = state
        if digits:
            head, rest = digits[0], digits[1:]

            def horner(d: int) -> Move:
                after = value * source + d
                premise = f"{head} is {d}" if head.isalpha() else ""
                return Move(
                    f"{value} × {source} + {d}", str(after), (*state[:2], after, rest, ()), premise
                )

            misread = horner(DIGITS.index(head) + 1) if head.isalpha() else None
            right = horner(DIGITS.index(head))
            return replace(right, large=value >= 20 and source > 10, misread=misread)
        if target == 10 or (value == 0 and remainders):
            return None
        q, r = divmod(value, target)
        after = (source, target, q, "", (*remainders, r))
        return Move(
            f"{value} ÷ {target}", f"{q} remainder {r}", after, "", value >= 100 and target > 10
        )

    def answer(self, state: Any) -> str:
        _, target, value, _, remainders = state
        return str(value) if target == 10 else "".join(DIGITS[r] for r in reversed(remainders))
