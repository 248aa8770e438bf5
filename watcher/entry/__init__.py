"""Entry points: `python -m watcher` (cli, commands), the `watch` loop, the webhook receiver, the loop's
metrics and health. The top layer: may import every other watcher layer; nothing imports it."""
