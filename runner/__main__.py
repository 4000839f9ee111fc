"""``python -m runner`` does what ``i2v-runner`` does."""

from runner.cli import main

main()
