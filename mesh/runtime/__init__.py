"""The stream runtime seam: the only code that reaches into faust-streaming and aiokafka.

Everything else uses the typed API here: building and running the worker's app, the
catalog's delivery hook, verified changelog end offsets, partition stores, the group's
view of who owns what, web views, services and Kafka clients. Versions are checked at start
(:mod:`mesh.runtime.versions`).
"""
