"""Controller side: invoke, throttle, backlog monitor, scaling decision, placement."""
