"""The vendored prompt templates are elizaOS's published ones, byte for byte.

``milady_lab/agent_shape/prompts.py`` carries ``dist/python/prompts.py`` of the npm
package ``@elizaos/prompts`` below its notice; the agent kit installs that package
(``tests/agent_kit/package.json``), so a drifted copy or a version bump on one side only
fails here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import milady_lab.agent_shape.prompts as vendored
from milady_lab.agent_shape import templates

KIT = Path(__file__).resolve().parents[1] / "agent_kit"
MARKER = "# --- @elizaos/prompts@{version} dist/python/prompts.py ---\n"


def test_vendored_templates_equal_the_published_package() -> None:
    subprocess.run(["bash", str(KIT / "setup.sh")], check=True, timeout=900)
    package = KIT / "node_modules" / "@elizaos" / "prompts"
    version = json.loads((package / "package.json").read_text())["version"]
    assert (
        version
        == json.loads((KIT / "package.json").read_text())["dependencies"]["@elizaos/prompts"]
    )
    published = (package / "dist" / "python" / "prompts.py").read_text(encoding="utf-8")
    ours = Path(vendored.__file__).read_text(encoding="utf-8")
    notice, marker, body = ours.partition(MARKER.format(version=version))
    assert marker, f"the vendored copy does not say it is version {version}"
    assert body == published
    assert all(line.startswith("#") for line in notice.splitlines())
    assert "MIT License" in notice
    # The constants the generator fills are the package's own templates, one per .txt file.
    names = [n for n in vendored.__all__ if n.endswith("_TEMPLATE")]
    assert len(names) == len(list((package / "prompts").glob("*.txt"))) == 38
    # What the generator fills is the package's sources (prompts/*.txt, what the runtime
    # sends); the Python module lags them for the message handler (XML, not TOON).
    for name in templates.__all__:
        txt = (package / "prompts" / f"{name[: -len('_TEMPLATE')].lower()}.txt").read_text()
        assert getattr(templates, name) == txt.rstrip("\n"), name
    assert "TOON only" in templates.MESSAGE_HANDLER_TEMPLATE
    assert "XML only" in vendored.MESSAGE_HANDLER_TEMPLATE  # if this fails, drop the override
