import sys

from gptoss.cli.main import main

sys.exit(main())
