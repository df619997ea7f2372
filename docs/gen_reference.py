"""Writes the reference pages (CLI, configuration, estimator and loss catalogue) from the code when
MkDocs builds the site (the mkdocs-gen-files plugin runs this file): advbench.harness.reference."""

import mkdocs_gen_files

from advbench.harness.reference import PAGES

for path, render in PAGES.items():
    with mkdocs_gen_files.open(path, "w") as page:
        page.write(render())
