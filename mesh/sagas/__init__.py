"""Sagas: the mesh's write path, orchestrated, compensated and crash-proof.

A saga (:mod:`mesh.sagas.definition`) is an ordered list of steps, each an action and its
compensation; its state (:mod:`mesh.sagas.state`) lives in a changelogged table keyed by
saga id (:mod:`mesh.sagas.store`), driven by the worker that owns the id's partition
(:mod:`mesh.sagas.supervisor`, :mod:`mesh.sagas.engine`). Every transition is in the
changelog before its effect goes on, and published on ``sagas.dictamesh.saga_changed``
(:mod:`mesh.sagas.events`). The sagas themselves are modules registered in
:mod:`mesh.sagas.registry` (``place_order``).
"""
