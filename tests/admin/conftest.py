from tests.api.fixtures import connection, fast_password_hashing, synced  # noqa: F401
