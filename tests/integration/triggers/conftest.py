from tests.integration.ingest.conftest import start_collector  # noqa: F401 - the fixture
