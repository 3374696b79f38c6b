import sys

from bench.gen.cli import main

sys.exit(main())
