import sys

from gptoss.cli.main import main

if __name__ == "__main__":  # not when a spawned child (the serve engine process) imports this module
    sys.exit(main())
