"""Storage ports (typing.Protocol interfaces) and the adapters that implement them.

Driver exceptions never cross a port: each adapter translates them into the families of
:mod:`persistence.errors`.
"""
