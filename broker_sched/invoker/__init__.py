"""The invoker side: a machine's capacity, its containers and what runs activations in them.

:mod:`.invoker` turns container requests into container proxies (:mod:`.proxy`), which
pull their action's queue; the ``sharding`` baseline's invoker pushes work to its own
pool instead (:mod:`.push_pool`). :mod:`.pulling` and :mod:`.replies` are what both
share.
"""
