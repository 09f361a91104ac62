"""Architecture Lab shared library: settings, Kafka I/O, lake I/O and the data contract."""
