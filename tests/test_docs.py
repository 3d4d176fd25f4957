"""The documentation: every Python block runs verbatim, and the site builds strictly.

Every fenced ```python block in README.md and docs/**/*.md is executed as written, in a
fresh namespace, one test per block. A block meant as a fragment (it needs names from
around it) is excluded only when the line before its fence is exactly
``<!-- fragment -->``; such blocks are counted and listed by
``test_fragments_are_few_and_marked``. The blocks run with JAX's key-reuse checker in
its default state (off), as a user runs them; the rest of the suite turns it on.
"""

import contextlib
import io
import linecache
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FRAGMENT = "<!-- fragment -->"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
PYTHON = {"python", "py", "python3"}


def markdown_files() -> list[pathlib.Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def code_blocks(path: pathlib.Path) -> list[tuple[int, str, str, bool]]:
    """``(line, language, source, is_fragment)`` for each fenced block of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        previous = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        body, j = [], i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(fence) and set(lines[j].strip()) == {fence[0]}
        ):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path}:{i + 1}: code fence never closed")
        blocks.append((i + 1, language, "\n".join(body) + "\n", previous == FRAGMENT))
        i = j + 1
    return blocks


def python_blocks() -> list:
    params = []
    for path in markdown_files():
        for line, language, source, fragment in code_blocks(path):
            if language in PYTHON and not fragment:
                name = f"{path.relative_to(ROOT)}:{line}"
                params.append(pytest.param(name, source, id=name))
    return params


BLOCKS = python_blocks()


@pytest.mark.parametrize(("name", "source"), BLOCKS)
def test_python_block_runs_verbatim(name, source):
    code = compile(source, name, "exec")
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)  # tracebacks
    namespace = {"__name__": "__docs__"}
    with jax.debug_key_reuse(False), contextlib.redirect_stdout(io.StringIO()):
        exec(code, namespace)


def test_blocks_are_found():
    # Guards the parser: the guides hold dozens of blocks, the README at least one.
    assert len(BLOCKS) >= 20, len(BLOCKS)
    assert any(p.values[0].startswith("README.md:") for p in BLOCKS)


def test_fragments_are_few_and_marked():
    fragments = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in markdown_files()
        for line, language, _, fragment in code_blocks(path)
        if fragment
    ]
    # A marker must sit on a Python block; a handful of fragments at most.
    for path in markdown_files():
        for line, language, _, fragment in code_blocks(path):
            assert not fragment or language in PYTHON, f"{path}:{line} marks a {language} block"
    assert len(fragments) <= 5, fragments


def test_parser_reads_fences_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n<!-- fragment -->\n```python\ny = x\n```\n\n"
        "- item\n\n    ```python\n    z = 2\n    ```\n\n````markdown\n```python\n```\n````\n"
        "```bash\nls\n```\n",
        encoding="utf-8",
    )
    found = [(lang, src, frag) for _, lang, src, frag in code_blocks(page)]
    assert found == [
        ("python", "x = 1\n", False),
        ("python", "y = x\n", True),
        ("python", "z = 2\n", False),
        ("markdown", "```python\n```\n", False),
        ("bash", "ls\n", False),
    ]


# What an offline site must not load: fonts, scripts or styles from elsewhere.
EXTERNAL_ASSET = re.compile(
    r"""(?:src|href)=["']?(?:https?:)?//[^"' >]*"""
    r"""|fonts\.googleapis|fonts\.gstatic|cdn\.jsdelivr|unpkg\.com|cdnjs|googletagmanager"""
)


def test_site_builds_strictly_and_offline(tmp_path):
    # Not skipped when mkdocs is missing: the `test` extra installs the `docs` extra.
    assert shutil.which("mkdocs") or _has_mkdocs(), "mkdocs missing: pip install -e '.[docs]'"
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 20, len(pages)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for match in EXTERNAL_ASSET.finditer(text):
            link = match.group(0)
            assert "href=" in link and _is_plain_link(text, match.start()), (
                f"{page.relative_to(site)} loads an external asset: {link}"
            )
    # The API reference is generated from the docstrings, not left empty.
    api = (site / "api" / "jaxreg" / "index.html").read_text(encoding="utf-8")
    assert "drop_connect_dense" in api and "References" in api


def _has_mkdocs() -> bool:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        return False
    return True


def _is_plain_link(text: str, start: int) -> bool:
    """Whether the attribute at ``start`` belongs to an ``<a>`` element (a link, not a load)."""
    tag = text.rfind("<", 0, start)
    return text[tag : tag + 3] == "<a "


def test_api_reference_lists_every_public_name():
    # docs/api/jaxreg.md groups the core by topic, so a new public name must be added.
    import jaxreg

    page = (ROOT / "docs" / "api" / "jaxreg.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^::: jaxreg\.(\w+)\s*$", page, flags=re.MULTILINE))
    assert listed == set(jaxreg.__all__), (
        f"add to docs/api/jaxreg.md: {sorted(set(jaxreg.__all__) - listed)}; "
        f"remove: {sorted(listed - set(jaxreg.__all__))}"
    )
    for module in ("optax", "linen", "nnx"):
        page = (ROOT / "docs" / "api" / f"{module}.md").read_text(encoding="utf-8")
        assert f"::: jaxreg.{module}" in page, module
