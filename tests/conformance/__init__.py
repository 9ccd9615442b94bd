"""One contract suite, run unchanged on every transport."""
