"""`python -m lora_trainer ...`: see lora_trainer/cli/."""

from .cli import main

raise SystemExit(main())
