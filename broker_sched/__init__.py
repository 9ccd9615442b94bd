"""broker-sched: serverless actions scheduled through a message broker's backlog."""

__version__ = "0.1.0"
