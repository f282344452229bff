import sys

from iclkit.cli import main

sys.exit(main())
