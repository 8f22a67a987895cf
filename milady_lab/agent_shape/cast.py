"""Who speaks and what they ask: the actions, people, rooms and requests of the agent-shaped data.

Action names, descriptions and parameters are elizaOS core's own (``@elizaos/core``
2.0.0-alpha.537, the basic-capabilities and contacts actions), printed the way its
``actions`` provider prints them. Each request kind says which action (or should-respond
decision) it calls for, so the right answer follows from the last message: a small
model fine-tuned on these records can learn it and beat the majority answer.
"""

from __future__ import annotations

from dataclasses import dataclass

#: name → (description, parameters as ``formatActionParameters`` prints them)
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "REPLY": (
        "Send a direct chat reply in the current conversation/thread. Default if the agent "
        "is responding with a message and no other action. Use REPLY at the beginning of a "
        "chain of actions as an acknowledgement, and at the end of a chain of actions as a "
        "final response. This is not an email reply, inbox workflow, or external-channel "
        "send — use the dedicated connector actions for those surfaces.",
        (),
    ),
    "IGNORE": (
        "Call this action if ignoring the user. If the user is aggressive, creepy or is "
        "finished with the conversation, use this action. In group conversations, use IGNORE "
        "when the latest message is addressed to someone else and not to the agent. Or, if "
        "both you and the user have already said goodbye, use this action instead of saying "
        "bye again. Use IGNORE any time the conversation has naturally ended. Do not use "
        "IGNORE if the user has engaged directly, or if something went wrong and you need to "
        "tell them. Only ignore if the user should be ignored.",
        (),
    ),
    "SEND_MESSAGE": (
        "Send a message to a user or room (other than the current one)",
        (
            'targetType:string [values=user|room; examples="user"|"room"] - Whether the '
            "message target is a user or a room.",
            'source?:string [examples="telegram"|"discord"] - The platform/source to send '
            "the message on (e.g. telegram, discord, x).",
            "target:string - The user name or room name to send the message to.",
            "text:string - The message to send.",
        ),
    ),
    "FOLLOW_ROOM": (
        "Start following this channel with great interest, chiming in without needing to be "
        "explicitly mentioned. Only do this if explicitly asked to.",
        (),
    ),
    "UNFOLLOW_ROOM": (
        "Stop following a room and cease receiving updates. Use this when you no longer want "
        "to monitor a room's activity.",
        (),
    ),
    "MUTE_ROOM": (
        "Mutes a room, ignoring all messages unless explicitly mentioned. Only do this if "
        "explicitly asked to, or if you're annoying people.",
        (),
    ),
    "GENERATE_IMAGE": (
        "Generates an image based on a generated prompt reflecting the current conversation. "
        "Use GENERATE_IMAGE when the agent needs to visualize, illustrate, or demonstrate "
        "something visually for the user.",
        ("prompt:string - What the image should show.",),
    ),
    "ADD_CONTACT": (
        "Add a new contact to the relationships with categorization and preferences",
        (
            "contactName:string - The contact's name.",
            "categories?:string - Comma-separated categories (friend, colleague, vip, …).",
        ),
    ),
    "SEARCH_CONTACTS": (
        "Search and list contacts in the relationships by name or query.",
        ("query:string - A name, category or free-text query.",),
    ),
    "SCHEDULE_FOLLOW_UP": (
        "Schedule a follow-up reminder for a contact.",
        (
            "contactName:string - Who to follow up with.",
            "when:string - When to be reminded (natural language).",
        ),
    ),
    "CHOOSE_OPTION": ("Select an option for a pending task that has multiple options.", ()),
}
GROUP_ACTIONS = (
    "REPLY", "IGNORE", "SEND_MESSAGE", "FOLLOW_ROOM", "UNFOLLOW_ROOM", "MUTE_ROOM",
    "GENERATE_IMAGE", "CHOOSE_OPTION",
)  # fmt: skip
DIRECT_ACTIONS = (
    "REPLY", "IGNORE", "SEND_MESSAGE", "GENERATE_IMAGE", "ADD_CONTACT", "SEARCH_CONTACTS",
    "SCHEDULE_FOLLOW_UP", "CHOOSE_OPTION",
)  # fmt: skip
#: Actions a model invents: never offered, sometimes written anyway.
NOT_OFFERED = ("RESPOND", "SEND_EMAIL", "SEARCH_WEB", "POST_TWEET", "CONTINUE")
PROVIDERS = (
    "CHARACTER", "RECENT_MESSAGES", "ACTIONS", "TIME", "ENTITIES", "FACTS", "CONTACTS",
    "KNOWLEDGE", "ATTACHMENTS",
)  # fmt: skip
CONTEXTS = ("general", "social", "contacts", "media", "knowledge", "settings")
USERS = (
    "kai", "remi", "sol", "juno", "mika", "tess", "ozzy", "lena", "bex", "noor", "dan",
    "priya", "tomás", "ade", "wren",
)  # fmt: skip
CHANNELS = ("general", "dev", "random", "art", "announcements", "support")

#: topic → (what people ask about it, what the agent answers)
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "planning": (
        (
            "how should i plan my week when everything feels urgent",
            "can you help me figure out what to do first tomorrow",
            "i keep missing deadlines, any idea how to plan better",
        ),
        (
            "pick the one thing that blocks the most other work and do it first. the rest can "
            "wait until it's done.",
            "write the three things that matter this week, then say no to anything that isn't "
            "one of them.",
        ),
    ),
    "code": (
        (
            "my build passes locally but fails on the server, where do i start",
            "why would a test be flaky only in ci",
            "should i rewrite this module or patch it one more time",
        ),
        (
            "start with the difference: versions, env vars, and the order the tests run in. "
            "paste the first error and we'll narrow it down.",
            "patch it if you can name the bug. rewrite only if you can't explain what the "
            "module does anymore.",
        ),
    ),
    "wellbeing": (
        (
            "i'm exhausted and i still have so much to do",
            "i couldn't sleep again last night",
            "how do you deal with a bad day",
        ),
        (
            "that sounds heavy. do the smallest useful thing today and let the rest wait. "
            "sleep counts as work too.",
            "rough nights happen. keep tonight simple: no screens late, same time to bed.",
        ),
    ),
    "music": (
        (
            "what should i listen to while working",
            "recommend me something new to listen to",
            "do you have a favourite album",
        ),
        (
            "something without lyrics helps. try ambient or slow electronic and see if it sticks.",
            "i don't really have ears, but people who like focus music tend to like long "
            "instrumental records.",
        ),
    ),
    "crypto": (
        (
            "should i buy more of this coin before it pumps",
            "is now a good time to get into defi",
            "what do you think of the market right now",
        ),
        (
            "i can't tell you what to buy. size anything you do so you'd be fine losing it.",
            "nobody knows the next move. if you can't explain the risk, it's too big.",
        ),
    ),
    "learning": (
        (
            "what's the best way to learn a new language as an adult",
            "i want to get better at writing, where do i start",
            "how do i stay motivated when learning alone",
        ),
        (
            "a little every day beats a lot once a week. pick a time and keep it boring.",
            "write short things often and reread them the next day. that's most of it.",
        ),
    ),
    "food": (
        (
            "what should i cook tonight, i have rice and eggs",
            "any quick lunch ideas that aren't sandwiches",
            "is coffee after 4pm a bad idea",
        ),
        (
            "fried rice. rice, eggs, whatever vegetables are around, soy sauce. ten minutes.",
            "coffee after 4 is fine if you sleep fine. if you don't, that's your answer.",
        ),
    ),
    "work": (
        (
            "how do i tell my manager the estimate was too optimistic",
            "my team keeps changing the brief, what do i do",
            "how do i say no to a meeting politely",
        ),
        (
            "say it early and bring a new estimate with it. the sooner, the smaller the problem.",
            "ask who decides the brief and get it written down once. then point back to it.",
        ),
    ),
}
TOPIC_NAMES = tuple(TOPICS)

#: Ordinary chat between people in a room (no one addresses the agent).
CHATTER = (
    "lol the cat knocked my coffee over the keyboard again this morning",
    "anyone else's train packed today? stood the whole way home",
    "just finished the book from last week, the ending was so much better than expected",
    "the new update moved every button in the app, i hate it",
    "we walked along the river until the sun went down, city lights came on, perfect",
    "the meeting ran long again so i skipped lunch and now i'm starving",
    "i saw a fox in the park, it just sat there and looked at me",
    "they moved the deadline again so we get one more week",
    "my brother keeps asking me to explain crypto and i keep saying no",
    "does anyone know if the museum is free on the first sunday",
    "ok so the build passes on my laptop but fails on the server, classic",
    "good morning everyone, did the storm keep you up too",
)
#: Long messages people paste or write now and then (the long tail of prompt lengths).
LONG = (
    "ok here's the full error from the server, sorry it's long:\n"
    + "\n".join(
        f"  at Module._compile (node:internal/modules/cjs/loader:{1200 + i}:14) "
        f"[worker {i % 4}] retrying connection to db-{i % 3}.internal:5432 (attempt {i})"
        for i in range(40)
    ),
    "long story, but bear with me. "
    + " ".join(
        "we moved the whole team to the new office last month and nothing has worked since: "
        "the wifi drops every afternoon, the printer only prints half pages, and the "
        "meeting rooms are booked by people who never show up."
        for _ in range(12)
    ),
    "here are my notes from the planning session, can you keep them in mind:\n"
    + "\n".join(
        f"- item {i}: decide who owns the rollout, the docs and the support rota for week {i}"
        for i in range(1, 36)
    ),
)
IMAGES = (
    "a fox sitting in a park at dusk", "a tiny robot watering plants on a balcony",
    "a rainy city street at night with neon signs", "a cozy desk with a lamp and a sleeping cat",
    "a mountain lake at sunrise", "a lighthouse in a storm",
)  # fmt: skip
NEWS = (
    "the deploy is done", "the meeting moved to 3pm", "i'll be late today",
    "the docs are updated", "lunch is on me friday",
)  # fmt: skip
WHEN = ("next monday", "in two weeks", "tomorrow morning", "friday afternoon", "next month")
CATEGORIES = ("friend", "colleague", "vip", "family", "investor")


@dataclass(frozen=True)
class Request:
    """One kind of last message: how people phrase it and what the agent should do.

    ``decision`` is should_respond's answer in a group room; ``actions`` the message
    handler's (empty when no handler runs); ``weight`` its share among the room's turns.
    """

    kind: str
    phrasings: tuple[str, ...]
    decision: str
    actions: tuple[str, ...]
    weight: int


GROUP_REQUESTS = (
    Request("ask", ("{agent}, {question}", "@{agent} {question}", "hey {agent} {question}"),
            "RESPOND", ("REPLY",), 26),
    Request("other", ("@{other} {chatter}", "{other}, {question}", "{other} did you see this? "
            "{chatter}"), "IGNORE", (), 24),
    Request("chatter", ("{chatter}",), "IGNORE", (), 12),
    Request("stop", ("{agent} please stop replying in here", "@{agent} be quiet for a while",
            "{agent}, stop. we don't need you right now"), "STOP", (), 12),
    Request("follow", ("{agent}, follow this channel and chime in when you have something",
            "@{agent} please follow this room"), "RESPOND", ("FOLLOW_ROOM",), 5),
    Request("unfollow", ("{agent} you can unfollow this channel now",
            "@{agent} stop following this room please"), "RESPOND", ("UNFOLLOW_ROOM",), 3),
    Request("mute", ("{agent}, mute this room, it's getting noisy",
            "@{agent} please mute this channel"), "RESPOND", ("MUTE_ROOM",), 4),
    Request("send", ("{agent}, tell {other} in #{channel} that {news}",
            "@{agent} can you message {other} that {news}"), "RESPOND", ("SEND_MESSAGE",), 4),
    Request("image", ("{agent}, draw {image}", "@{agent} can you make an image of {image}"),
            "RESPOND", ("GENERATE_IMAGE",), 4),
)  # fmt: skip
DIRECT_REQUESTS = (
    Request("ask", ("{question}", "hey, {question}", "quick one: {question}"),
            "RESPOND", ("REPLY",), 32),
    Request("bye", ("ok bye!", "thanks, bye", "night!"), "RESPOND", ("IGNORE",), 9),
    Request("send", ("tell {other} that {news}", "can you message {other}: {news}"),
            "RESPOND", ("SEND_MESSAGE",), 8),
    Request("image", ("draw {image}", "make me an image of {image}"),
            "RESPOND", ("GENERATE_IMAGE",), 8),
    Request("add_contact", ("add {other} to my contacts as a {category}",
            "save {other} as a contact, they're a {category}"), "RESPOND", ("ADD_CONTACT",), 8),
    Request("search_contacts", ("who do i know that's a {category}?",
            "find my contacts tagged {category}"), "RESPOND", ("SEARCH_CONTACTS",), 8),
    Request("follow_up", ("remind me to follow up with {other} {when}",
            "schedule a follow-up with {other} {when}"), "RESPOND", ("SCHEDULE_FOLLOW_UP",), 9),
)  # fmt: skip
