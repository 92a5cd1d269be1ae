"""The manual's Python example (docs/testing.md) is the file python/examples/test_example.py,
byte for byte (so the example that CI runs is the one users read)."""

import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_the_readme_shows_the_example_file():
    with open(os.path.join(ROOT, "docs", "testing.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(os.path.join(ROOT, "python", "examples", "test_example.py"), encoding="utf-8") as f:
        example = f.read()
    marker = "```python\n"
    start = readme.index(marker, readme.index("python/examples/test_example.py")) + len(marker)
    end = readme.index("```", start)
    assert readme[start:end] == example
