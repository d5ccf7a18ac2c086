"""``python -m llem.spec [reference|matrix]``: print the generated reference or matrix."""

import sys

from llem.spec import capability_matrix_markdown, reference_markdown

if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "reference"
    print(capability_matrix_markdown() if what == "matrix" else reference_markdown())
