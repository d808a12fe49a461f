"""Caching of GraphQL reads, invalidated by the catalog as it materialises changes.

Two layers (see :mod:`mesh.cache.read_cache` for the guarantee and how it is kept):

* :mod:`mesh.cache.responses`: whole GraphQL responses, in each worker's memory;
* :mod:`mesh.cache.shared`: entity records and relation members fetched from other
  workers, in Redis (``MESH_REDIS_URL``), shared by the fleet, filed under the fleet
  generation (:mod:`mesh.cache.generation`) so that they never outlive Kafka's state.
"""

from mesh.cache.generation import FleetGeneration
from mesh.cache.keys import cache_key, changed_keys
from mesh.cache.read_cache import ReadCache, build_read_cache
from mesh.cache.responses import Recorder, ResponseCache
from mesh.cache.shared import SharedCache

__all__ = [
    "FleetGeneration",
    "ReadCache",
    "Recorder",
    "ResponseCache",
    "SharedCache",
    "build_read_cache",
    "cache_key",
    "changed_keys",
]
