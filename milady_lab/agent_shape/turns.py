"""One turn of an elizaOS 2.x agent: which model calls it makes, with which prompts, and
what the right reply to each is.

A turn is what one trajectory records. In a group room (discord, telegram) the agent
first asks should_respond; when it engages, the message handler picks actions and
text; a REPLY that is not ``simple`` goes through the reply template; after answering,
the reflection evaluator sometimes runs. A direct chat skips should_respond, and a
contacts task may run as multi-step decisions. Autonomy turns write a post. An image
attachment is described first. Every right answer follows from the last message (who
it addresses, what it asks), so it can be learned.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..demo_rows import uuid_from
from . import compose, templates
from .cast import (
    ACTIONS,
    CATEGORIES,
    CHANNELS,
    CHATTER,
    CONTEXTS,
    DIRECT_ACTIONS,
    DIRECT_REQUESTS,
    GROUP_ACTIONS,
    GROUP_REQUESTS,
    IMAGES,
    LONG,
    NEWS,
    PROVIDERS,
    TOPIC_NAMES,
    TOPICS,
    USERS,
    WHEN,
    Request,
)
from .characters import CHARACTERS
from .replies import Action, Fields

SOURCES = ("discord", "telegram", "chat", "api", "autonomy", "runtime")
SOURCE_WEIGHTS = (24, 16, 30, 8, 12, 10)
GROUP_SOURCES = ("discord", "telegram")


@dataclass
class Call:
    """One model call of a turn: its prompt and the right reply."""

    purpose: str
    step_type: str  # the runtime's pipeline stage (what a real agent records as purpose)
    prompt: str
    fields: Fields
    step: int
    offered: tuple[str, ...] = ()
    wrong: Fields | None = None  # a well-formed wrong answer, for worse rollouts
    main: bool = False  # the call whose quality decides a rollout's reward
    slot: str = "TEXT_LARGE"
    temperature: float = 0.7


@dataclass
class Turn:
    """What one trajectory records: the room, who spoke, the calls."""

    char: dict[str, Any]
    source: str
    room_id: str
    entity_id: str
    sender: str
    calls: list[Call] = field(default_factory=list)


@dataclass
class _Room:
    """A conversation as the providers see it."""

    char: dict[str, Any]
    people: list[str]
    entities: dict[str, str]
    lines: list[str]
    now: int
    topic: str


def _history(
    rng: random.Random, char: dict[str, Any], people: list[str], now: int, group: bool
) -> tuple[list[str], dict[str, str]]:
    """Earlier messages, oldest first, as RECENT_MESSAGES prints them; a long tail of
    lengths (a few lines to the runtime's 32)."""
    entities = {p: uuid_from(rng) for p in [*people, char["name"]]}
    n = rng.choices((rng.randint(2, 6), rng.randint(7, 16), rng.randint(17, 32)), (40, 35, 25))[0]
    at = now - rng.randint(n, 4 * n) * 60_000
    lines = []
    for _ in range(n):
        at += rng.randint(20_000, 240_000)
        who = rng.choice(people)
        if rng.random() < 0.06:  # a pasted log, a long story: the prompts' long tail
            text = rng.choice(LONG)
        elif group and rng.random() < 0.45:
            text = rng.choice(CHATTER)
        else:
            asks, answers = TOPICS[rng.choice(TOPIC_NAMES)]
            text = rng.choice(asks)
            lines.append(compose.message_line(now, min(at, now), entities[who], who, text))
            who, text = char["name"], rng.choice(answers)
            at += rng.randint(5_000, 30_000)
        lines.append(compose.message_line(now, min(at, now), entities[who], who, text))
    return lines[-32:], entities


def _room(rng: random.Random, char: dict[str, Any], now: int, group: bool) -> _Room:
    people = rng.sample(USERS, rng.randint(3, 6) if group else 1)
    lines, entities = _history(rng, char, people, now, group)
    return _Room(char, people, entities, lines, now, rng.choice(TOPIC_NAMES))


def _say(rng: random.Random, req: Request, room: _Room, sender: str) -> tuple[str, dict[str, str]]:
    """The last message for ``req``, and the slots it was filled with."""
    others = [p for p in room.people if p != sender] or [rng.choice(USERS)]
    slots = {
        "agent": room.char["name"],
        "other": rng.choice(others),
        "question": rng.choice(TOPICS[room.topic][0]),
        "chatter": rng.choice(CHATTER),
        "channel": rng.choice(CHANNELS),
        "news": rng.choice(NEWS),
        "image": rng.choice(IMAGES),
        "category": rng.choice(CATEGORIES),
        "when": rng.choice(WHEN),
    }
    return rng.choice(req.phrasings).format(**slots), slots


def _handler_reply(
    rng: random.Random, req: Request, room: _Room, sender: str, slots: dict[str, str]
) -> tuple[Fields, bool]:
    """message_handler's right answer for ``req``, and whether it is ``simple``."""
    name = req.actions[0]
    other = slots["other"]
    params: tuple[tuple[str, str], ...] = ()
    text, thought = "", f"{sender} asked me to {name.lower().replace('_', ' ')}."
    if name == "REPLY":
        text = rng.choice(TOPICS[room.topic][1])
        thought = f"{sender} asks about {room.topic}. Reply briefly. No extra providers needed."
    elif name == "IGNORE":
        thought = f"{sender} said goodbye and I already did. Nothing to add."
    elif name == "SEND_MESSAGE":
        params = (("targetType", "user"), ("target", other), ("text", slots["news"]))
        text = f"sent to {other}."
    elif name == "GENERATE_IMAGE":
        params = (("prompt", slots["image"]),)
    elif name == "ADD_CONTACT":
        params = (("contactName", other), ("categories", slots["category"]))
    elif name == "SEARCH_CONTACTS":
        params = (("query", slots["category"]),)
    elif name == "SCHEDULE_FOLLOW_UP":
        params = (("contactName", other), ("when", slots["when"]))
    else:
        text = {
            "FOLLOW_ROOM": "sure, i'll follow along here.",
            "UNFOLLOW_ROOM": "ok, i'll stop following this channel.",
            "MUTE_ROOM": "got it, muting this room.",
        }.get(name, "")
    providers = "CONTACTS" if "CONTACT" in name or name == "SCHEDULE_FOLLOW_UP" else ""
    simple = name == "REPLY" and rng.random() < 0.7
    actions: tuple[Action, ...] = ((name, params),)
    fields: Fields = (
        ("thought", thought),
        ("actions", actions),
        ("providers", providers),
        ("text", text),
        ("simple", "true" if simple or name != "REPLY" else "false"),
    )
    return fields, simple or name != "REPLY"


def _wrong_handler(rng: random.Random, fields: Fields, offered: tuple[str, ...]) -> Fields:
    """A well-formed answer naming another offered action."""
    right = fields[1][1]
    assert isinstance(right, tuple)
    choices = [a for a in offered if a != right[0][0]]
    name = "REPLY" if "REPLY" in choices and rng.random() < 0.3 else rng.choice(choices)
    return tuple((k, ((name, ()),) if k == "actions" else v) for k, v in fields)


def _should_respond(room: _Room, req: Request, sender: str, msg_id: str, providers: str) -> Call:
    agent = room.char["name"]
    reasons = {
        "RESPOND": f"{sender} addressed {agent} directly.",
        "IGNORE": f"The latest message is not addressed to {agent}.",
        "STOP": f"{sender} asked {agent} to stop.",
    }
    context = {"image": "media", "send": "social"}.get(req.kind, "general")
    fields: Fields = (
        ("name", agent),
        ("reasoning", reasons[req.decision]),
        ("action", req.decision),
        ("primaryContext", context),
        ("secondaryContexts", ""),
        ("evidenceTurnIds", msg_id if req.decision != "IGNORE" else ""),
    )
    values = {"agentName": agent, "providers": providers, "availableContexts": ", ".join(CONTEXTS)}
    wrong_decision = {"RESPOND": "IGNORE", "IGNORE": "RESPOND", "STOP": "IGNORE"}[req.decision]
    wrong = tuple((k, wrong_decision if k == "action" else v) for k, v in fields)
    return Call(
        "should_respond",
        "should_respond",
        compose.fill(templates.SHOULD_RESPOND_TEMPLATE, values),
        fields,
        0,
        ("RESPOND", "IGNORE", "STOP"),
        wrong,
        slot="TEXT_SMALL",
        temperature=0.0,
    )


class Deck:
    """Draws in the weights' proportions without the drift of independent draws: each
    item ``weight`` times per shuffled deck, dealt in order, reshuffled when empty (so the
    majority answer of a few hundred turns stays where the weights put it)."""

    def __init__(self, items: tuple[Any, ...], weights: tuple[int, ...]) -> None:
        self.cards = [item for item, w in zip(items, weights, strict=True) for _ in range(w)]
        self.left: list[Any] = []

    def deal(self, rng: random.Random) -> Any:
        if not self.left:
            self.left = rng.sample(self.cards, len(self.cards))
        return self.left.pop()


@dataclass
class Decks:
    """One writer's decks: sources, and the requests of group and direct rooms."""

    sources: Deck = field(default_factory=lambda: Deck(SOURCES, SOURCE_WEIGHTS))
    group: Deck = field(
        default_factory=lambda: Deck(GROUP_REQUESTS, tuple(r.weight for r in GROUP_REQUESTS))
    )
    direct: Deck = field(
        default_factory=lambda: Deck(DIRECT_REQUESTS, tuple(r.weight for r in DIRECT_REQUESTS))
    )


def chat_turn(rng: random.Random, source: str, now: int, req: Request) -> Turn:
    """A message in a group room or a direct chat, and what the agent does with it."""
    group = source in GROUP_SOURCES
    char = rng.choice(CHARACTERS)
    room = _room(rng, char, now, group)
    sender = rng.choice(room.people)
    text, slots = _say(rng, req, room, sender)
    if req.kind == "bye":
        room.lines.append(
            compose.message_line(
                now,
                now - 40_000,
                room.entities[char["name"]],
                char["name"],
                f"bye {sender}, take care.",
            )
        )
    msg_id = uuid_from(rng)
    turn = Turn(char, source, uuid_from(rng), room.entities[sender], sender)
    recent = compose.recent_messages_text(room.lines, sender, text)
    character = compose.character_text(rng, char, room.people)
    time = compose.time_text(now)
    if rng.random() < 0.05:
        turn.calls.append(_image_description(rng))
    if group:
        turn.calls.append(
            _should_respond(room, req, sender, msg_id, compose.providers(character, recent, time))
        )
        if req.decision != "RESPOND":
            turn.calls[-1].main = True
            return turn
    offered = list(GROUP_ACTIONS if group else DIRECT_ACTIONS)
    rng.shuffle(offered)
    if (
        not group
        and req.kind in ("add_contact", "search_contacts", "follow_up")
        and (rng.random() < 0.4)
    ):
        turn.calls.extend(_multi_step(rng, req, room, recent, tuple(offered)))
        return turn
    _respond(rng, turn, room, req, slots, (character, recent, time), tuple(offered))
    return turn


def _respond(
    rng: random.Random,
    turn: Turn,
    room: _Room,
    req: Request,
    slots: dict[str, str],
    texts: tuple[str, str, str],
    offered: tuple[str, ...],
) -> None:
    """The message handler, the reply template for a long REPLY, then maybe reflection."""
    character, recent, time = texts
    agent = room.char["name"]
    fields, simple = _handler_reply(rng, req, room, turn.sender, slots)
    values = {
        "agentName": agent,
        "providers": compose.providers(character, recent, compose.actions_text(offered), time),
    }
    turn.calls.append(
        Call(
            "response",
            "response",
            compose.fill(templates.MESSAGE_HANDLER_TEMPLATE, values),
            fields,
            0,
            offered,
            _wrong_handler(rng, fields, offered),
            main=True,
        )
    )
    said = str(fields[3][1])
    if not simple:
        said = rng.choice(TOPICS[room.topic][1]) + " " + rng.choice(TOPICS[room.topic][1])
        thought = f"{turn.sender} wants more than a one-liner about {room.topic}."
        turn.calls.append(
            Call(
                "reply",
                "action",
                compose.fill(
                    templates.REPLY_TEMPLATE,
                    {"agentName": agent, "providers": compose.providers(character, recent)},
                ),
                (("thought", thought), ("text", said)),
                1,
            )
        )
    if req.actions == ("IGNORE",) or rng.random() >= 0.35:
        return
    turn.calls.append(_reflection(rng, room, character, said))


def _reflection(rng: random.Random, room: _Room, character: str, said: str) -> Call:
    agent = room.char["name"]
    own = compose.message_line(room.now, room.now, room.entities[agent], agent, said or "(actions)")
    last = [*room.lines[-6:], own]
    score = rng.randint(70, 95)
    fields: Fields = (
        ("thought", f"The exchange stayed on {room.topic}; {agent} answered what was asked."),
        ("quality_score", str(score)),
        ("strengths", "Direct, on topic, in character."),
        (
            "improvements",
            "Could confirm the user's goal before answering."
            if score < 85
            else "Nothing significant.",
        ),
        ("learnings", f"People in this room ask {agent} about {room.topic}."),
    )
    values = {"providers": character.split("\n\n")[0], "recentInteractions": "\n".join(last)}
    return Call(
        "reflection",
        "evaluation",
        compose.fill(templates.REFLECTION_TEMPLATE, values),
        fields,
        2,
        temperature=0.2,
    )


def _multi_step(
    rng: random.Random, req: Request, room: _Room, recent: str, offered: tuple[str, ...]
) -> list[Call]:
    """A contacts task as multi-step decisions: the action with CONTACTS, then finish."""
    name = req.actions[0]
    described = "\n".join(
        f"- {p}: provides {p.lower().replace('_', ' ')} context" for p in PROVIDERS
    )
    values = {
        "recentMessages": recent,
        "actionsWithDescriptions": compose.actions_block(offered),
        "providersWithDescriptions": compose.header("# Available Providers", described),
    }
    first: Fields = (
        (
            "thought",
            f"The user wants {ACTIONS[name][0].split('.')[0].lower()}; "
            "CONTACTS gives the relationships first.",
        ),
        ("action", name),
        ("providers", "CONTACTS"),
        ("isFinish", "false"),
    )
    done = compose.header("# Action Results", f"1. {name} - success")
    last: Fields = (
        ("thought", f"{name} completed; nothing else is needed."),
        ("action", ""),
        ("providers", ""),
        ("isFinish", "true"),
    )
    wrong = tuple(
        (k, rng.choice([a for a in offered if a != name]) if k == "action" else v) for k, v in first
    )
    template = templates.MULTI_STEP_DECISION_TEMPLATE
    return [
        Call(
            "multi_step_decision",
            "action",
            compose.fill(template, values),
            first,
            0,
            offered,
            wrong,
            main=True,
        ),
        Call(
            "multi_step_decision",
            "action",
            compose.fill(template, {**values, "actionResults": done}),
            last,
            1,
            offered,
        ),
    ]


def _image_description(rng: random.Random) -> Call:
    image = rng.choice(IMAGES)
    fields: Fields = (
        ("title", image.capitalize()),
        ("description", f"A photo of {image}."),
        (
            "text",
            f"The image shows {image}, softly lit, with the subject in the centre of "
            "the frame and a plain background.",
        ),
    )
    return Call(
        "image_description",
        "action",
        templates.IMAGE_DESCRIPTION_TEMPLATE,
        fields,
        0,
        slot="IMAGE_DESCRIPTION",
        temperature=0.0,
    )


def post_turn(rng: random.Random, now: int) -> Turn:
    """An autonomy step: a post in the character's voice on one of its topics."""
    char = rng.choice(CHARACTERS)
    agent = char["name"]
    topic, adjective = rng.choice(char["topics"]), rng.choice(char["adjectives"])
    style = "\n".join((*char["style"]["all"], *char["style"]["post"]))
    providers = compose.providers(
        compose.header(
            f"# About {agent}", " ".join(b.replace("{{name}}", agent) for b in char["bio"])
        ),
        compose.header(f"# Post Directions for {agent}", style.replace("{{name}}", agent)),
        compose.time_text(now),
    )
    values = {
        "agentName": agent,
        "xUserName": agent.lower(),
        "providers": providers,
        "topic": topic,
        "adjective": adjective,
    }
    answer = rng.choice(TOPICS[rng.choice(TOPIC_NAMES)][1]).split(". ")[0]
    fields: Fields = (
        ("thought", f"A {adjective} post that circles {topic} without naming it."),
        ("post", f"{answer[0].upper()}{answer[1:]}."),
        ("imagePrompt", rng.choice(IMAGES) if rng.random() < 0.4 else ""),
    )
    turn = Turn(char, "autonomy", uuid_from(rng), uuid_from(rng), agent)
    turn.calls.append(
        Call(
            "post_creation",
            "action",
            compose.fill(templates.POST_CREATION_TEMPLATE, values),
            fields,
            0,
            main=True,
        )
    )
    return turn


def turn(rng: random.Random, now: int, decks: Decks) -> Turn:
    """One turn from a source dealt in realistic proportions."""
    source = decks.sources.deal(rng)
    if source == "autonomy":
        return post_turn(rng, now)
    req = (decks.group if source in GROUP_SOURCES else decks.direct).deal(rng)
    return chat_turn(rng, source, now, req)
