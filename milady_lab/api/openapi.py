"""``openapi.json``, generated from the route table and the structs.

``python -m milady_lab.api.openapi PATH`` (``make openapi``) writes the document the
server ships (``jupyter_server_ext/openapi.json``); ``tests/api/test_openapi.py`` fails
when the committed file differs from what this generates, so the served document
cannot drift from the code that decodes bodies and encodes answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec

from .routes import FORBIDDEN, OPERATIONS, Operation
from .schema import Error, JsonObject

TITLE = "milady-lab training API"
VERSION = "1.0.0"
DESCRIPTION = (
    "The training routes of a Milady agent, served by milady-lab's Jupyter server "
    "extension. Records use camelCase keys; timestamps are integers in ms since epoch; "
    "optional fields that have no value are left out. Errors are JSON objects with a "
    "`message` and the same text as `error` (the key the Milady agent's own routes and its "
    "app client use); any other path under /api/training answers a JSON 404. The agent's "
    "extra routes (`auto/config`, `auto/status`, `auto/runs`, `auto/trigger`, `backends`, "
    "`trajectories/export`) answer in the agent's body shapes; their run times are ISO "
    "8601 strings, as the agent writes them."
)
TAGS = (
    {"name": "status"},
    {"name": "trajectories"},
    {"name": "datasets"},
    {"name": "jobs"},
    {"name": "models"},
    {"name": "events"},
    {
        "name": "agent",
        "description": (
            "Routes the Milady agent serves besides the documented 13, in the agent's shapes "
            "(milady-ai/milady, elizaOS/eliza plugins/app-training)"
        ),
    },
)
BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "Authorization: Bearer <token>. Jupyter also accepts `Authorization: token <token>` "
        "and `?token=<token>`; a browser session uses its login cookie plus the XSRF token on "
        "POST."
    ),
}
_REF = "#/components/schemas/{name}"


def _ref(struct: type) -> JsonObject:
    return {"$ref": _REF.format(name=struct.__name__)}


def _json(schema: JsonObject) -> JsonObject:
    return {"application/json": {"schema": schema}}


def _success(op: Operation) -> JsonObject:
    if op.media == "text/event-stream":
        assert op.answer is not None
        envelope = {
            "type": "object",
            "required": ["data", "event"],
            "properties": {
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": _ref(op.answer),
                },
                "event": {"type": "string"},
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "retry": {"type": "integer"},
            },
        }
        return {op.media: {"schema": envelope}}
    return _json(_ref(op.answer) if op.answer is not None else {"type": "object"})


def _operation(op: Operation) -> JsonObject:
    out: JsonObject = {"operationId": op.id, "tags": [op.tag], "summary": op.summary}
    if op.description:
        out["description"] = op.description
    if op.params:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path",
                **({"description": p.description} if p.description else {}),
                "schema": dict(p.schema),
            }
            for p in op.params
        ]
    if op.body is not None:
        out["requestBody"] = {"required": False, "content": _json(_ref(op.body))}
    errors = {403: FORBIDDEN, **op.errors}
    out["responses"] = {
        str(op.status): {"description": op.answered, "content": _success(op)},
        **{
            str(code): {"description": text, "content": _json(_ref(kind))}
            for code, (text, kind) in sorted(op.also.items())
        },
        **{
            str(code): {"description": text, "content": _json(_ref(Error))}
            for code, text in sorted(errors.items())
        },
    }
    return out


def document() -> JsonObject:
    """The OpenAPI 3.1 document of every route in ``routes.OPERATIONS``."""
    structs = [Error]
    for op in OPERATIONS:
        structs += [t for t in (op.body, op.answer) if t is not None]
        structs += [kind for _, kind in op.also.values()]
    _, components = msgspec.json.schema_components(structs, ref_template=_REF)
    paths: dict[str, JsonObject] = {}
    for op in OPERATIONS:
        paths.setdefault(f"/api/training/{op.path}", {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": list(TAGS),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.items())),
            "securitySchemes": {"bearer": BEARER},
        },
    }


def render() -> str:
    """The document as the committed file holds it."""
    return json.dumps(document(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if not args:
        sys.stdout.write(text)
    else:
        Path(args[0]).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
