"""The README's Python examples run (documentation that cannot rot)."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    i = lines.index("```")
    assert lines[i + 1] == "pip install . && pymm stress"
    assert lines[i + 2] == "pip install '.[test]' && python -m pytest -q"
    ci = (README.parent / ".ci" / "run").read_text()
    assert lines[i + 2] in ci          # .ci/run runs the README's test command verbatim
