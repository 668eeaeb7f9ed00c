"""What the tests and the benchmarks share: the local stack on its own ports, unique topics per
test derived from the domain registry, Kafka helpers, fakes, and the fixtures themselves."""
