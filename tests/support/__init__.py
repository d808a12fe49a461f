"""Set-up shared by the test packages: services, ``mesh worker`` processes, fleets, waits.

Test modules import from here (or from ``tests.fixtures``), never from another package's
test modules.
"""
