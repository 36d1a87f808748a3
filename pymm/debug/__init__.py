"""Detectors: KASAN-style poisoning, the free-time and teardown checks, and the
finding sink they all report into."""
