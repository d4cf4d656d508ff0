"""`make run`: the whole bundle once, through its real commands (export, local server, client)."""
