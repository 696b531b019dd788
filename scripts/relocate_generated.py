"""Makes the generated modules importable as ``clients._gen.analytics.v1``.

protoc writes absolute imports named after the proto package (``analytics.v1``);
this rewrites those import lines (only import lines: the serialized descriptors
keep the proto names) and adds the package ``__init__.py`` files.
"""

import pathlib
import re
import sys

PREFIX = "clients._gen."
IMPORT = re.compile(r"^(\s*)(from|import) analytics\.", re.MULTILINE)


def main(out: str) -> None:
    root = pathlib.Path(out)
    for path in sorted(root.rglob("*.py*")):
        text = path.read_text()
        text = IMPORT.sub(rf"\1\2 {PREFIX}analytics.", text)
        if path.suffix == ".pyi":
            text = re.sub(r"(?<![\w.])analytics\.v1\.", f"{PREFIX}analytics.v1.", text)
        path.write_text(text)
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


if __name__ == "__main__":
    main(sys.argv[1])
