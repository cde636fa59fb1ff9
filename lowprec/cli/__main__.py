import sys

from lowprec.cli import main

sys.exit(main())
