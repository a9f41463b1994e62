"""Shared fixtures live in tests/fixtures/, one module per real backend."""
pytest_plugins = ["tests.fixtures.s3", "tests.fixtures.kafka", "tests.fixtures.db",
                  "tests.fixtures.gpg"]
