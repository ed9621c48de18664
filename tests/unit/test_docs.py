"""The docs say what the code does: docs/spec.md's spec block is the schema's own output, the
README stays short, and every page it links to exists and is linked.

Run: pytest tests/unit/test_docs.py
"""

from __future__ import annotations

import re

from swap.spec import parse_spec
from swap.spec.defaults import commented_defaults

from ..helpers import REPO

README = (REPO / "README.md").read_text()
SPEC_DOC = (REPO / "docs" / "spec.md").read_text()


def test_the_spec_block_of_the_docs_is_what_swap_validate_defaults_prints():
    block = re.search(r"<!-- swap validate --defaults -->\n```yaml\n(.*?)```\n<!-- end -->",
                      SPEC_DOC, re.S)  # fmt: skip
    assert block, "docs/spec.md has no generated spec block"
    assert block.group(1) == commented_defaults()  # regenerate: swap validate --defaults


def test_the_commented_defaults_are_a_valid_spec_of_the_defaults():
    spec = parse_spec(commented_defaults(), "defaults")
    assert spec.name == "my-run" and spec.to_dict() == parse_spec("name: my-run\n", "x").to_dict()
    for line in commented_defaults().splitlines()[1:]:
        assert "#" in line, f"a field without its description: {line!r}"


def test_the_readme_is_short_and_links_every_doc():
    assert len(README.encode()) < 12 * 1024
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", README))
    assert linked == {f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")}
    for page in linked:
        text = (REPO / page).read_text()
        for target in re.findall(r"\]\(([\w./-]+\.md)\)", text):
            assert (REPO / page).parent.joinpath(target).exists(), (page, target)
