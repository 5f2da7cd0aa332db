"""The Alembic environment of the relational schema, run by :mod:`..migrate`.

No ``alembic.ini`` is needed: the configuration is built in code. ``env.py`` only runs on a
connection handed to it (``config.attributes["connection"]``).
"""
