"""``--broker``: the watcher's side, the broker and its messages, and the classify workers."""
