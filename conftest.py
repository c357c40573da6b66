# Top-level conftest: the pytester fixture drives the plugin through pytest itself.
pytest_plugins = ["pytester"]
