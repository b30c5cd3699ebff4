"""`python -m assay.pipelines.cli` is the `assay` command."""

import sys

from assay.pipelines.cli import main

sys.exit(main())
