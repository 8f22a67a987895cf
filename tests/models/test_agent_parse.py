"""The ported parsers answer as the agent's own: @elizaos/core 2.0.0-alpha.537's
``parseKeyValueXml``, ``extractPlannerActionNames`` and ``parseActionParams`` run in Node
over the same replies (tests/agent_kit installs the core; ``make test`` installs the kit)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from milady_lab.models.evaluation import agent_parse

KIT = Path(__file__).resolve().parents[1] / "agent_kit"

# Reads replies (a JSON list) on stdin; writes what the core makes of each, one JSON line.
HARNESS = """
import { parseKeyValueXml, extractPlannerActionNames, parseActionParams } from "@elizaos/core";
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map((reply) => {
  const parsed = parseKeyValueXml(reply);
  if (!parsed) return { parsed: null, actions: [], params: {} };
  const working = JSON.parse(JSON.stringify(parsed));
  const actions = extractPlannerActionNames(working);
  const params = Object.fromEntries(parseActionParams(working.params));
  return { parsed: JSON.parse(JSON.stringify(parsed)), actions, params };
});
process.stdout.write("\\n@@" + JSON.stringify(out) + "\\n");
"""

TOON_REPLY = """thought: Reply briefly. No extra providers needed.
actions[1]:
  - name: REPLY
providers:
text: hi there, 3 < 4
simple: true"""

CORPUS = [
    # elizaOS 1.x XML, well-formed and not
    "<response><thought>be kind</thought><actions>REPLY,FOLLOW_ROOM</actions>"
    "<providers></providers><text>hi ana~</text></response>",
    "<response><thought>x</thought><actions>REPLY</actions>"
    "<text>if a < b && c > d</text></response>",
    "<response><text>fish &amp; chips &lt;3 &quot;yum&quot;</text><simple>TRUE</simple></response>",
    "Sure! Here you go:\n<response>\n  <thought>t</thought>\n  <actions>REPLY, </actions>\n"
    "  <text>ok</text>\n</response>\nHope that helps.",
    "```xml\n<response><thought>fenced</thought><actions>IGNORE</actions></response>\n```",
    "<response><thought>never closed</thought><text>oops",
    "<reply><text>other root</text><actions>SEND_MESSAGE</actions></reply>",
    "<response></response>",
    "<response><text>a<br/>b</text><text>second wins</text></response>",
    "<response><thought>nest</thought><text><text>inner</text></text></response>",
    # nested actions with params (2.x XML)
    "<response><thought>t</thought><actions><action><name>SEND_MESSAGE</name><params>"
    "<target>room-1</target><text>hello</text><count>3</count><urgent>true</urgent>"
    "</params></action><action><name>REPLY</name></action></actions>"
    "<params></params><text>done</text></response>",
    "<response><actions>SEND_TOKEN</actions><params><SEND_TOKEN><amount>0.5</amount>"
    "<to>0xabc</to><memo>null</memo></SEND_TOKEN></params></response>",
    "<response><actions><action>REPLY</action><action>  'FOLLOW_ROOM' </action>"
    "</actions></response>",
    '<response><actions>SEARCH</actions><params><SEARCH>{"query": "cats", "limit": 5}</SEARCH>'
    "</params></response>",
    "<response><actions>SEARCH</actions><params></params><SEARCH><query>dogs</query></SEARCH></response>",
    # TOON (2.x templates)
    TOON_REPLY,
    "thought: Reply briefly.\nactions[1]:\n  - name: REPLY\n    params:\n      text: hi\n"
    "providers:\ntext: Your message here\nsimple: true",
    "```toon\nthought: fenced\nactions: REPLY,SEND_MESSAGE\ntext: ok\n```",
    "TOON\nname: Ana\nreasoning: Direct mention.\naction: RESPOND\nprimaryContext: general",
    "Let me think.\n\nthought: prose first\nactions: IGNORE\ntext:",
    "thought: multi\ntext: line one\n  line two\nactions[2]: REPLY,FOLLOW_ROOM",
    'facts[0]{claim,type}: likes tea,preference\nfacts[1]{claim,type}: "lives, in Paris",fact\n'
    "relationships[0]:\n  sourceEntityId: a\n  targetEntityId: b",
    "params:\n  SEND_MESSAGE:\n    target: room-2\n    text: hey\n"
    "actions: SEND_MESSAGE\nthought: t",
    "thought: {not toon}",
    "a:\n  b: 1\n    c: 2\n  d: 3\ne: 4",
    "thought: t\nactions[2]:\n  - name: REPLY\n  - name: SEND_MESSAGE\n    params:\n      to: x\n"
    "text: hi",
    "thought: t\nactions[2]: REPLY\ntext: count says two",
    'thought: "quoted: text"\nactions: "REPLY", IGNORE\ntext: \'single\'',
    "key: value with a: colon\nother: 12\nflag: false",
    "thought: bad indent\n actions: REPLY\n\tweird",
    '<response><actions>SET_TIMER</actions><params><SET_TIMER><param name="minutes">5</param>'
    "<param name='label'>tea</param></SET_TIMER></params></response>",
    "<response>\r\n<thought>crlf</thought>\r\n<actions>REPLY</actions>\r\n</response>",
    "<response><providers><provider>TIME</provider></providers><actions>"
    '<action id="1"><name>REPLY</name><params><text>ünïcødé 日本</text></params></action>'
    "</actions><params></params></response>",
    "<think>hidden</think>\n<response><text>after think</text></response>",
    "thought: ok\r\nactions: REPLY\r\ntext: crlf toon",
    "steps[0]:\n  action: SEARCH\n  why: find it\nsteps[1]:\n  action: REPLY\n  why: answer",
    'thought: t\nactions[1]{name,params}:\n  REPLY,""\ntext: tabular',
    "TOON DOCUMENT:\n\nthought: labelled\nactions: REPLY",
    # not structured at all
    "just chatting, no markup 3 < 4",
    "",
    '{"thought": "json", "actions": ["REPLY"]}',
]


@pytest.fixture(scope="module")
def core_readings() -> list[dict]:
    # Once per machine, as tests/trajectories/agent.py does; seconds with npm's cache.
    subprocess.run(["bash", str(KIT / "setup.sh")], check=True, timeout=900)
    env = {**os.environ, "LOG_LEVEL": "fatal"}
    done = subprocess.run(
        ["node", "--input-type=module", "-e", HARNESS],
        cwd=KIT,
        input=json.dumps(CORPUS),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    return json.loads(done.stdout.rsplit("\n@@", 1)[1])


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_port_reads_each_reply_as_the_core_does(core_readings: list[dict], index: int) -> None:
    reply = CORPUS[index]
    assert agent_parse.agent_reading(reply) == core_readings[index], reply
