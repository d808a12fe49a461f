"""DictaMesh's tooling: the local dev stack (``mesh dev``), the dev schema registry
(``mesh registry``) and the benchmarks (``mesh bench``). A distribution of its own
(``dictamesh-tooling``): the product's wheel carries none of it."""
