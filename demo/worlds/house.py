"""The text adventure's levels: a house, a household task, and the plan that solves it.

A level is a route of rooms (start → the room of the object → the room of a device that
cleans, heats or cools it → the room of the receptacle) and the plan of commands that solves
it, some of which meet an obstacle on the way: a locked door ("That is locked.", then the
door is unlocked and the move retried) or a device that is off ("Nothing happens.", then it
is switched on and the use retried). A target object or receptacle may share its room with
a look-alike (the red mug beside the blue one): taking or filling the wrong one is accepted
like the right one, and the task is lost without a word. Rooms, their furniture, the items
lying around (look-alike pairs included) and the player's pockets vary for no reason at all,
so that no surface string tells where the hard steps are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

WET = ("kitchen", "bathroom", "laundry room", "scullery")
DRY = (
    *("hallway", "study", "bedroom", "living room", "attic", "pantry", "library"),
    *("porch", "cellar", "landing", "dining room", "workshop", "nursery", "garage"),
)
FRAGILE = ("mug", "glass", "vase", "plate", "bowl", "teapot", "jar")
STURDY = ("book", "apple", "spoon", "towel", "candle", "pillow", "wrench", "sponge", "hat")
COLOURS = ("blue", "red", "green", "white", "yellow", "black", "striped", "chipped")
RECEPTACLES = ("cabinet", "drawer", "shelf", "chest", "basket", "cupboard")
MATERIALS = ("oak", "pine", "metal", "wicker", "painted", "walnut")
DECOR = (
    "A faded rug covers the floor.",
    "A portrait of a stern lady hangs on the wall.",
    "Dust dances in a beam of light.",
    "It smells faintly of lavender.",
    "A clock ticks somewhere.",
    "The wallpaper is peeling in one corner.",
    "Rain patters against the window.",
    "",
)
NAMES = ("Ada", "Bram", "Cleo", "Dmitri", "Esme", "Farid", "Greta", "Hugo", "Ines", "Joss")
HOUSES = ("Larkspur Cottage", "the old manor", "Number 9, Quay Street", "the vicarage")
# task -> (adjective in the goal, device, rooms the device may stand in, verb)
TASKS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "clean": ("clean", "sink", WET, "clean"),
    "heat": ("hot", "microwave", ("kitchen", "workshop", "pantry"), "heat"),
    "cool": ("cold", "fridge", ("kitchen", "pantry", "cellar"), "cool"),
    "put": ("", "", (), ""),
}
SWITCH = {"sink": "turn on tap", "microwave": "plug in microwave", "fridge": "switch on fridge"}
DIRECTIONS = ("north", "south", "east", "west")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
LOCKED = "That is locked."
NOTHING = "Nothing happens."
NO_WAY = "You can't go that way."


@dataclass
class Room:
    name: str
    decor: str
    items: list[str]  # "blue mug", ... without articles
    exits: list[str]

    @property
    def wet(self) -> bool:
        return self.name in WET


@dataclass(frozen=True)
class Step:
    """One command of the plan. Texts may hold {obj} (the object carried for the task) and
    {rec} (the receptacle). `blocked`: the right command meets the obstacle (its event is
    the failure) and the plan's next steps deal with it. `decoy`: the look-alike a wrong
    answer takes or fills instead, silently."""

    kind: str  # go | take | treat | switch | unlock | open | put
    action: str
    event: str
    wrong_action: str
    wrong_event: str
    to_room: int | None = None
    reward: float = 0.0
    blocked: bool = False
    decoy: str | None = None


@dataclass
class Level:
    goal: str
    rooms: list[Room]
    plan: list[Step]
    target: str
    receptacle: str
    inventory: list[str] = field(default_factory=list)
    player: str = ""
    house: str = ""


def fragile(item: str) -> bool:
    return item.split()[-1] in FRAGILE


def make_level(rng: random.Random, p_lookalike: float, p_locked: float, p_off: float) -> Level:
    task = rng.choices(sorted(TASKS), weights=[3 if t != "put" else 1 for t in sorted(TASKS)])[0]
    adjective, device, device_rooms, verb = TASKS[task]
    colour, decoy_colour = rng.sample(COLOURS, 2)
    target = f"{colour} {rng.choice(FRAGILE + STURDY)}"
    material, decoy_material = rng.sample(MATERIALS, 2)
    receptacle = f"{material} {rng.choice(RECEPTACLES)}"
    legs = [rng.randint(1, 3), rng.randint(1, 4) if device else 0, rng.randint(2, 4)]
    n_rooms = 1 + sum(legs)
    at_object, at_device, at_receptacle = legs[0], legs[0] + legs[1], n_rooms - 1
    names = _room_names(rng, n_rooms, at_device if device else None, device_rooms)
    rooms = [Room(name, rng.choice(DECOR), _clutter(rng), []) for name in names]
    back: str | None = None
    directions: list[str] = []
    for i, room in enumerate(rooms):
        forward = rng.choice([d for d in DIRECTIONS if d != back])
        room.exits = sorted({d for d in (back, forward if i < n_rooms - 1 else None) if d})
        room.exits = sorted({*room.exits, *rng.sample(DIRECTIONS, rng.randint(0, 1))})
        directions.append(forward)
        back = OPPOSITE[forward]
    noun = target.split()[-1]
    here = rooms[at_object].items
    here[:] = [item for item in here if item.split()[-1] != noun]  # no unplanned look-alike
    here.append(target)
    target_decoy = None
    if rng.random() < p_lookalike:
        target_decoy = f"{decoy_colour} {noun}"
        here.append(target_decoy)
    rooms[at_receptacle].items.append(receptacle)
    receptacle_decoy = None
    if rng.random() < p_lookalike:
        receptacle_decoy = f"{decoy_material} {receptacle.split()[-1]}"
        rooms[at_receptacle].items.append(receptacle_decoy)
    if device:
        rooms[at_device].items.append(device)
    for room in rooms:
        rng.shuffle(room.items)
    subgoals = 3 if device else 2
    plan: list[Step] = []

    def walk(start: int, end: int) -> None:
        for i in range(start, end):
            d = directions[i]
            wrong = rng.choice([x for x in DIRECTIONS if x not in rooms[i].exits] or ["up"])
            go = Step("go", f"go {d}", "", f"go {wrong}", NO_WAY, to_room=i + 1)
            if rng.random() < p_locked:
                plan.append(Step("go", f"go {d}", LOCKED, f"go {wrong}", NO_WAY, blocked=True))
                plan.append(
                    Step(
                        "unlock",
                        f"unlock {d} door with key ring",
                        f"You unlock the door to the {d} with the key ring.",
                        f"open {d} door",
                        LOCKED,
                    )
                )
            plan.append(go)

    walk(0, at_object)
    absent = rng.choice([n for n in STURDY + FRAGILE if n not in " ".join(here)])
    plan.append(
        Step(
            "take",
            "take {obj}",
            "You take the {obj}.",
            f"take {absent}",
            NOTHING,
            reward=1 / subgoals,
            decoy=target_decoy,
        )
    )
    if device:
        walk(at_object, at_device)
        use = f"{verb} {{obj}} with {device}"
        done = f"You {verb} the {{obj}} with the {device}."
        other = rng.choice([d for d in SWITCH if d != device])
        wrong = (f"{verb} {{obj}} with {other}", NOTHING)
        if rng.random() < p_off:
            plan.append(Step("treat", use, NOTHING, *wrong, blocked=True))
            switch = SWITCH[device]
            plan.append(Step("switch", switch, f"You {switch}.", use, NOTHING))
        plan.append(Step("treat", use, done, *wrong, reward=1 / subgoals))
    walk(at_device if device else at_object, at_receptacle)
    if rng.random() < 0.5:
        plan.append(Step("open", "open {rec}", "You open the {rec}.", "open {obj}", NOTHING))
    plan.append(
        Step(
            "put",
            "put {obj} in {rec}",
            "You put the {obj} in the {rec}.",
            "put {obj} on floor",
            NOTHING,
            reward=1 / subgoals,
            decoy=receptacle_decoy,
        )
    )
    inventory = ["key ring"]
    if rng.random() < 0.2:  # something from elsewhere, never like the task's object
        pocket = rng.choice([n for n in FRAGILE + STURDY if n != noun])
        inventory.append(f"{rng.choice(COLOURS)} {pocket}")
    prefix = f"{adjective} " if adjective else ""
    return Level(
        goal=f"put a {prefix}{target} in the {receptacle}",
        rooms=rooms,
        plan=plan,
        target=target,
        receptacle=receptacle,
        inventory=inventory,
        player=rng.choice(NAMES),
        house=rng.choice(HOUSES),
    )


def _room_names(
    rng: random.Random, n: int, device_at: int | None, device_rooms: tuple[str, ...]
) -> list[str]:
    pool = list(WET + DRY)
    rng.shuffle(pool)
    names = pool[:n]
    if device_at is not None and names[device_at] not in device_rooms:
        choice = rng.choice(device_rooms)
        if choice in names:
            names[names.index(choice)] = names[device_at]
        names[device_at] = choice
    return names


def _clutter(rng: random.Random) -> list[str]:
    nouns = FRAGILE + STURDY
    items = [f"{rng.choice(COLOURS)} {rng.choice(nouns)}" for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.25:  # look-alike pairs lie around where nothing depends on them
        noun = items[0].split()[-1]
        items.append(f"{rng.choice([c for c in COLOURS if c not in items[0]])} {noun}")
    return items
