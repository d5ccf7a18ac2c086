"""``python -m llem.spec [reference|matrix|types]``: print a generated reference, matrix or types."""

import sys

from llem.spec import capability_matrix_markdown, reference_markdown
from llem.spec.render import config_types_module

if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "reference"
    makers = {"reference": reference_markdown, "matrix": capability_matrix_markdown,
              "types": config_types_module}
    if what not in makers:
        sys.exit(f"python -m llem.spec: unknown output {what!r}; choose one of {', '.join(makers)}")
    print(makers[what]())
