"""The emulated memory manager; modules mirror linux/mm."""
