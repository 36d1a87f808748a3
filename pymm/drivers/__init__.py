"""Device drivers, as far as their locks reach into mm."""
