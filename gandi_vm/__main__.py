"""Allow `python3 -m gandi_vm`."""

import sys

from gandi_vm.cli import main

sys.exit(main())
