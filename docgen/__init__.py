"""Reference pages generated from the code, so they cannot drift from it.

`python -m docgen` (re)writes them; `python -m docgen --check` exits 1 naming each page that differs
from what would be generated. The pages and the sources they are read from are listed in `docgen.pages`.
"""
